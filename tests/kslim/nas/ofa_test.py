"""Once-for-All: extracted subnets equal the supernet in that configuration; training, picking."""

from unittest import mock

from absl.testing import absltest
import numpy as np

from kslim import nas
from kslim._keras import keras
from kslim.conversion import convert
from kslim.nas import batch_norm
from kslim.nas import ofa as ofa_lib
from tflite_tools.runner import TFLiteRunner


def _supernet():
  keras.utils.set_random_seed(0)
  return ofa_lib.OFASupernet((12, 12, 1), 3, stages=((8, 1), (16, 2)), head_channels=16)


def _data(n=48, seed=0):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(n, 12, 12, 1)).astype(np.float32), rng.integers(0, 3, n)


class SupernetTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.net = _supernet()
    rng = np.random.default_rng(1)
    for w in self.net.weights:  # non-trivial batch-norm statistics that keep ReLUs alive
      if "moving_mean" in w.name:
        w.assign(rng.uniform(-0.1, 0.1, w.shape).astype(np.float32))
      elif "moving_variance" in w.name:
        w.assign(rng.uniform(0.5, 1.5, w.shape).astype(np.float32))
    self.x, _ = _data(6)

  def test_extracted_subnet_equals_the_supernet_in_that_configuration(self):
    rng = np.random.default_rng(0)
    outputs = []
    for phase in ofa_lib.PHASES:
      config = self.net.random_config(rng, phase)
      self.net.set_config(config)
      want = self.net(self.x, training=False).numpy()
      subnet = self.net.extract(config)
      np.testing.assert_allclose(subnet(self.x, training=False).numpy(), want, atol=1e-5,
                                 err_msg=str(config))
      outputs.append(want)
      # The subnet really is smaller: its blocks, kernels and widths are the config's.
      depth = config["depth"]
      blocks = [l.name for l in subnet.layers if l.name.endswith("_project")]
      self.assertLen(blocks, sum(depth))
      first = subnet.get_layer("s1b1_dw")
      self.assertEqual(first.kernel_size, (config["kernel"][0],) * 2)
      self.assertEqual(subnet.get_layer("s1b1_expand").filters, 16 * config["expand"][0])  # stem 16
    self.assertFalse(np.allclose(outputs[0], outputs[-1]), "configurations change the output")

  def test_subnet_converts_to_tflite_with_the_same_outputs(self):
    config = {"kernel": [3, 5, 3, 5, 3, 5], "expand": [3, 4, 6, 3, 4, 6], "depth": [2, 1]}
    subnet = self.net.extract(config)
    runner = TFLiteRunner(convert(subnet, "float32"))
    np.testing.assert_allclose(runner.predict(self.x), subnet.predict(self.x, verbose=0),
                               atol=1e-4)

  def test_bad_configs_name_the_entry(self):
    with self.assertRaisesRegex(ValueError, r"'kernel' must be 6 values of \(3, 5\)"):
      self.net.set_config({"kernel": [7] * 6, "expand": [3] * 6, "depth": [1, 1]})
    with self.assertRaisesRegex(ValueError, "'depth' must be 2 values"):
      self.net.extract({"kernel": [3] * 6, "expand": [3] * 6, "depth": [1]})

  def test_channel_sorting_keeps_the_full_network_and_puts_important_channels_first(self):
    rng = np.random.default_rng(2)
    for w in self.net.trainable_weights:  # unsorted importance
      w.assign(w * rng.uniform(0.2, 2.0, w.shape).astype(np.float32))
    narrow = {"kernel": [5] * 6, "expand": [3] * 6, "depth": [3, 3]}
    self.net.set_config(narrow)
    narrow_before = self.net(self.x, training=False).numpy()
    self.net.set_config(self.net.largest())
    full_before = self.net(self.x, training=False).numpy()
    optimizer = keras.optimizers.Adam()
    optimizer.build(self.net.trainable_weights)
    project = self.net.blocks[0][-1]["project"].kernel
    moment = ofa_lib._adam_moments(optimizer, project)[0]
    moment.assign(rng.normal(size=project.shape).astype(np.float32))
    project_before, moment_before = project.numpy(), moment.numpy()
    orders = self.net.sort_channels(optimizer)
    np.testing.assert_allclose(self.net(self.x, training=False).numpy(), full_before,
                               rtol=1e-5, atol=1e-5)
    for order, (*_, layers) in zip(orders, self.net.blocks):
      importance = np.abs(layers["project"].kernel.numpy()).sum(axis=(0, 1, 3))
      self.assertTrue(np.all(np.diff(importance) <= 0), "most important first")
      self.assertFalse(np.array_equal(order, np.arange(len(order))))
    np.testing.assert_array_equal(project.numpy(), project_before[:, :, orders[0]])
    np.testing.assert_array_equal(moment.numpy(), moment_before[:, :, orders[0]])
    self.net.set_config(narrow)  # the narrow subnet now runs other (the best) channels
    self.assertFalse(np.allclose(self.net(self.x, training=False).numpy(), narrow_before,
                                 atol=1e-3))

  def test_random_configs_follow_the_phase(self):
    rng = np.random.default_rng(0)
    largest = self.net.largest()
    kernel = self.net.random_config(rng, "kernel")
    self.assertEqual((kernel["expand"], kernel["depth"]), (largest["expand"], largest["depth"]))
    depth = [self.net.random_config(rng, "depth") for _ in range(10)]
    self.assertTrue(all(c["expand"] == largest["expand"] for c in depth))
    self.assertGreater(len({tuple(c["depth"]) for c in depth}), 1)


class TrainAndPickTest(absltest.TestCase):

  def test_progressive_shrinking_then_pick_within_budget(self):
    x, y = _data(48)
    ofa = ofa_lib.OFA(_supernet(), learning_rate=1e-2)
    before = [w.numpy().copy() for w in ofa.supernet.trainable_weights]
    ofa.train(x, y, {"full": 1, "kernel": 1, "width": 1}, batch_size=16, progress=False)
    self.assertIsNotNone(ofa.teacher)  # the frozen full network after the first phase
    self.assertTrue(any(not np.allclose(a, b.numpy()) for a, b in
                        zip(before, ofa.supernet.trainable_weights)))
    budget = ofa.supernet.extract(ofa.supernet.largest()).count_params() * 0.6
    config, model, score = ofa.pick(nas.Constraint("params", budget), x[:24], y[:24], x[24:],
                                    samples=4)
    self.assertLessEqual(model.count_params(), budget)
    self.assertEqual(model.count_params(), ofa.supernet.extract(config).count_params())
    self.assertBetween(score, 0.0, 1.0)
    with self.assertRaisesRegex(ValueError, "no subnet within"):
      ofa.pick(nas.Constraint("params", 10), x[:24], y[:24], x[24:], samples=2)
    with self.assertRaisesRegex(ValueError, "unknown phases"):
      ofa.train(x, y, {"shrink": 1})

  def test_every_shrinking_step_trains_the_phase_smallest_and_random_subnets(self):
    x, y = _data(32)
    ofa = ofa_lib.OFA(_supernet(), learning_rate=1e-2, subnets_per_step=3)
    configs = []
    set_config = ofa.supernet.set_config
    with mock.patch.object(ofa.supernet, "set_config",
                           side_effect=lambda c: (configs.append(c), set_config(c))):
      ofa.train(x, y, {"full": 1, "depth": 1, "width": 1}, batch_size=16, progress=False)
    net = ofa.supernet
    training = configs[:-1]  # the last one restores the largest after training
    self.assertEqual(training[:2], [net.largest()] * 2)  # "full": 2 steps, one net each
    # Then one set_config freezes the teacher; 2 steps x 3 subnets per shrinking phase.
    self.assertLen(training, 2 + 1 + 6 + 6)
    depth, width = training[3:9], training[9:15]
    self.assertEqual(depth[0::3], [net.smallest("depth")] * 2)
    self.assertEqual(width[0::3], [net.smallest("width")] * 2)
    self.assertEqual(net.smallest("width")["expand"], [min(net.expands)] * len(net.blocks))
    self.assertEqual(net.smallest("depth")["expand"], net.largest()["expand"])
    self.assertTrue(all(c["expand"] == net.largest()["expand"] for c in depth))
    self.assertGreater(len({str(c) for c in width}), 2)  # random ones besides the smallest
    with mock.patch.object(net, "sort_channels") as sort:  # once, before the width phase
      ofa.train(x, y, {"full": 1, "width": 2}, batch_size=16, progress=False)
    sort.assert_called_once_with(ofa.optimizer)
    with self.assertRaisesRegex(ValueError, "subnets_per_step must be >= 1"):
      ofa_lib.OFA(net, subnets_per_step=0)

  def test_epochs_parse_from_the_command_line_form(self):
    self.assertEqual(ofa_lib.parse_epochs("full=5,kernel=1,width=2"),
                     {"full": 5, "kernel": 1, "width": 2})
    for bad in ("full=5,shrink=1", "full5", "depth=one"):
      with self.assertRaisesRegex(ValueError, "is not phase=epochs with a phase of"):
        ofa_lib.parse_epochs(bad)

  def test_the_frozen_teacher_has_recalibrated_batch_norm_statistics(self):
    # The supernet's running statistics are unsettled after a short full phase; the
    # teacher normalizes with the exact statistics of the calibration images instead.
    x, y = _data(32)
    ofa = ofa_lib.OFA(_supernet(), learning_rate=1e-2)
    ofa.train(x, y, {"full": 1, "kernel": 1}, batch_size=16, progress=False,
              calibration_images=20)
    features = ofa.teacher.get_layer("stem_conv")(x[:20]).numpy()
    stem_bn = ofa.teacher.get_layer("stem_bn")
    np.testing.assert_allclose(stem_bn.moving_mean.numpy(), features.mean(axis=(0, 1, 2)),
                               atol=1e-5)
    np.testing.assert_allclose(stem_bn.moving_variance.numpy(), features.var(axis=(0, 1, 2)),
                               rtol=1e-4, atol=1e-6)
    self.assertFalse(np.allclose(ofa.supernet.stem[1].moving_mean.numpy(),
                                 stem_bn.moving_mean.numpy(), atol=1e-3))

  def test_interrupted_training_resumes_with_the_same_teacher_and_weights(self):
    x, y = _data(32)
    schedule = {"full": 1, "kernel": 1, "depth": 1}

    def run(epochs, checkpoint_dir=None, perturb=False):
      ofa = ofa_lib.OFA(_supernet(), learning_rate=1e-2)
      ofa.supernet(x[:1])
      if perturb:  # other initial weights: only the checkpoint brings back the trained ones
        for w in ofa.supernet.trainable_weights:
          w.assign(w * 1.5 + 0.01)
      ofa.train(x, y, epochs, batch_size=16, progress=False, checkpoint_dir=checkpoint_dir)
      return ofa

    whole = run(schedule)
    directory = self.create_tempdir().full_path
    run({"full": 1, "kernel": 1}, directory)  # killed after the kernel phase
    resumed = run(schedule, directory, perturb=True)
    for a, b in zip(whole.supernet.weights + whole.teacher.weights,
                    resumed.supernet.weights + resumed.teacher.weights):
      np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6, err_msg=a.name)

  def test_recalibration_sets_exact_statistics(self):
    net = _supernet()
    subnet = net.extract(net.largest())
    x, _ = _data(40)
    batch_norm.recalibrate_batch_norm(subnet, x)
    stem_bn = subnet.get_layer("stem_bn")
    features = subnet.get_layer("stem_conv")(x).numpy()
    np.testing.assert_allclose(stem_bn.moving_mean.numpy(), features.mean(axis=(0, 1, 2)),
                               atol=1e-5)
    np.testing.assert_allclose(stem_bn.moving_variance.numpy(), features.var(axis=(0, 1, 2)),
                               rtol=1e-4, atol=1e-6)
    # The last one sees the inputs produced with every earlier layer already recalibrated.
    head = keras.Model(subnet.inputs, subnet.get_layer("head_conv").output)(x).numpy()
    head_bn = subnet.get_layer("head_bn")
    np.testing.assert_allclose(head_bn.moving_mean.numpy(), head.mean(axis=(0, 1, 2)),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(head_bn.moving_variance.numpy(), head.var(axis=(0, 1, 2)),
                               rtol=1e-3, atol=1e-5)

  def test_recalibration_reaches_nested_models(self):
    keras.utils.set_random_seed(0)
    inner = keras.Sequential([keras.layers.Conv2D(4, 3, padding="same"),
                              keras.layers.BatchNormalization()], name="inner")
    inputs = keras.Input((6, 6, 1))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inner(inputs)))
    x, _ = _data(10)
    x = x[:, :6, :6, :]
    batch_norm.recalibrate_batch_norm(model, x)
    features = inner.layers[0](x).numpy()
    np.testing.assert_allclose(inner.layers[1].moving_mean.numpy(),
                               features.mean(axis=(0, 1, 2)), atol=1e-5)
    np.testing.assert_allclose(inner.layers[1].moving_variance.numpy(),
                               features.var(axis=(0, 1, 2)), rtol=1e-3, atol=1e-6)


if __name__ == "__main__":
  absltest.main()
