"""Distiller: the teacher stays frozen, the student learns, per-term metrics, Keras plumbing."""

import os
import subprocess
import sys
import textwrap

from absl.testing import absltest
import numpy as np

import kslim
from kslim._keras import keras
from kslim import distill
from tests.kslim.distill import tiny_nets


def _compiled(student, teacher, losses, **kwargs):
  distiller = distill.Distiller(student, teacher, losses, **kwargs)
  distiller.compile(keras.optimizers.Adam(1e-2), metrics=["accuracy"])
  return distiller


class DistillerTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.x, self.y = tiny_nets.data()
    self.teacher = tiny_nets.tiny_net(6, "teacher", seed=1)
    self.student = tiny_nets.tiny_net(2, "student", seed=2)

  def test_teacher_weights_and_batch_norm_statistics_never_change(self):
    before = [w.numpy().copy() for w in self.teacher.weights]
    student_before = [w.numpy().copy() for w in self.student.weights]
    distiller = _compiled(self.student, self.teacher,
                          [distill.SoftLabel(2.0), distill.FitNet("feat2")])
    distiller.fit(self.x, self.y, batch_size=16, epochs=2, verbose=0)
    for name, old, new in zip([w.name for w in self.teacher.weights], before,
                              self.teacher.weights):
      np.testing.assert_array_equal(old, new.numpy(), err_msg=name)  # incl. moving mean/var
    changed = [not np.array_equal(a, b.numpy()) for a, b in zip(student_before,
                                                                 self.student.weights)]
    self.assertTrue(all(changed), "every student weight, BN statistics included, trains")

  def test_total_loss_is_the_weighted_sum_and_each_part_is_reported(self):
    losses = [distill.SoftLabel(3.0, weight=0.5), distill.FitNet("feat1", weight=2.0),
              distill.FSP([("feat1", "feat2")], weight=0.1), distill.L2(weight=0.3)]
    distiller = _compiled(self.student, self.teacher, losses, hard_label_weight=0.25)
    history = distiller.fit(self.x, self.y, batch_size=32, epochs=1, verbose=0)
    self.assertEqual(set(history.history),
                     {"loss", "hard_label_loss", "soft_label_loss", "fitnet_loss", "fsp_loss",
                      "logits_l2_loss", "accuracy"})
    got = distiller.evaluate(self.x, self.y, batch_size=64, verbose=0, return_dict=True)
    want = 0.25 * got["hard_label_loss"] + sum(
        t.weight * got[f"{t.name}_loss"] for t in losses)
    self.assertAlmostEqual(got["loss"], want, places=4)
    # The soft-label and logits-L2 parts against numpy on the same batch.
    t_logits, s_logits = self.teacher.predict(self.x, verbose=0), self.student.predict(
        self.x, verbose=0)
    self.assertAlmostEqual(got["soft_label_loss"], tiny_nets.soft_kl(t_logits, s_logits, 3.0),
                           places=4)
    self.assertAlmostEqual(got["logits_l2_loss"], np.mean((t_logits - s_logits) ** 2), places=4)
    hard = keras.losses.sparse_categorical_crossentropy(self.y, s_logits, from_logits=True)
    self.assertAlmostEqual(got["hard_label_loss"], float(np.mean(hard)), places=4)

  def test_a_copy_of_the_teacher_has_nothing_to_learn(self):
    copy = keras.models.clone_model(self.teacher)
    copy.set_weights(self.teacher.get_weights())
    distiller = _compiled(copy, self.teacher,
                          [distill.SoftLabel(), distill.FitNet("feat3"), distill.L2(),
                           distill.FSP([("feat1", "feat2")])], hard_label_weight=0.0)
    got = distiller.evaluate(self.x, self.y, verbose=0, return_dict=True)
    for name in ("loss", "soft_label_loss", "fitnet_loss", "logits_l2_loss", "fsp_loss"):
      self.assertAlmostEqual(got[name], 0.0, places=6, msg=name)

  def test_adapters_train_but_never_enter_the_student(self):
    fitnet = distill.FitNet("feat2")
    distiller = _compiled(self.student, self.teacher, [fitnet])
    params = self.student.count_params()
    kernel = fitnet.adapter.kernel.numpy().copy()
    self.assertEqual(kernel.shape, (2, 6))
    distiller.fit(self.x, self.y, batch_size=16, epochs=1, verbose=0)
    self.assertFalse(np.array_equal(kernel, fitnet.adapter.kernel.numpy()))
    self.assertEqual(self.student.count_params(), params)
    self.assertNotIn("fitnet_adapter", [layer.name for layer in self.student.layers])

  def test_student_saves_and_loads_as_a_plain_keras_model(self):
    distiller = _compiled(self.student, self.teacher, [distill.SoftLabel()])
    distiller.fit(self.x, self.y, batch_size=16, epochs=1, verbose=0)
    path = os.path.join(self.create_tempdir().full_path, "student.keras")
    distiller.student.save(path)
    # A fresh interpreter that never imports kslim loads it.
    code = ("import sys, numpy as np, tf_keras as keras; m = keras.models.load_model(sys.argv[1]); "
            "print(sorted({type(l).__module__.split('.')[0] for l in m.layers}))")
    proc = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True,
                          env={**os.environ, "TF_USE_LEGACY_KERAS": "1"}, check=False)
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    self.assertEqual(proc.stdout.strip().splitlines()[-1], "['tf_keras']")
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(self.x, verbose=0),
                               self.student.predict(self.x, verbose=0), atol=1e-6)

  def test_student_is_ready_for_pruning_and_quantization(self):
    distiller = _compiled(self.student, self.teacher, [distill.FitNet("feat2")])
    distiller.fit(self.x, self.y, batch_size=16, epochs=1, verbose=0)
    pruned = kslim.prune(distiller.student, 0.5)
    self.assertEqual(pruned.get_layer("feat2").filters, 1)
    quantized = kslim.quantize(distiller.student)
    self.assertEqual(quantized.predict(self.x, verbose=0).shape, (len(self.x), 3))

  def test_checkpoint_restores_student_and_adapter(self):
    fitnet = distill.FitNet("feat2")
    distiller = _compiled(self.student, self.teacher, [distill.SoftLabel(), fitnet])
    path = os.path.join(self.create_tempdir().full_path, "ckpt")
    distiller.fit(self.x, self.y, batch_size=16, epochs=1, verbose=0, callbacks=[
        keras.callbacks.ModelCheckpoint(path, save_weights_only=True)])
    fresh_fitnet = distill.FitNet("feat2")
    fresh = _compiled(tiny_nets.tiny_net(2, "student", seed=9), self.teacher,
                      [distill.SoftLabel(), fresh_fitnet])
    fresh.load_weights(path)
    for a, b in zip(self.student.weights, fresh.student.weights):
      np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(fitnet.adapter.kernel.numpy(),
                                  fresh_fitnet.adapter.kernel.numpy())

  def test_interrupted_fit_resumes_from_the_backup(self):
    distiller = _compiled(self.student, self.teacher, [distill.SoftLabel()])
    backup = self.create_tempdir().full_path

    class Interrupt(keras.callbacks.Callback):

      def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
          raise KeyboardInterrupt

    with self.assertRaises(KeyboardInterrupt):
      distiller.fit(self.x, self.y, batch_size=16, epochs=4, verbose=0,
                    callbacks=[keras.callbacks.BackupAndRestore(backup), Interrupt()])
    at_interrupt = self.student.get_weights()
    self.student.set_weights([np.zeros_like(w) for w in at_interrupt])  # lost in the crash
    restored = []

    class Watch(keras.callbacks.Callback):

      def on_train_begin(self, logs=None):
        restored.extend(w.numpy().copy() for w in self.model.student.weights)

    history = distiller.fit(self.x, self.y, batch_size=16, epochs=4, verbose=0,
                            callbacks=[keras.callbacks.BackupAndRestore(backup), Watch()])
    self.assertLen(history.history["loss"], 2)  # epochs 3-4: two were backed up
    for want, got in zip(at_interrupt, restored):
      np.testing.assert_array_equal(want, got)

  def test_config_round_trip(self):
    distiller = distill.Distiller(self.student, self.teacher,
                                  [distill.SoftLabel(2.0), distill.FitNet("feat1")],
                                  hard_label_weight=0.5)
    again = distill.Distiller.from_config(distiller.get_config())
    self.assertEqual([t.get_config() for t in again.distillation_losses],
                     [t.get_config() for t in distiller.distillation_losses])
    self.assertEqual(again.hard_label_weight, 0.5)
    self.assertEqual(again.student.get_config(), self.student.get_config())

  def test_sample_weights_weight_the_hard_label_loss(self):
    distiller = _compiled(self.student, self.teacher, [distill.SoftLabel()])
    weights = np.zeros(len(self.x), np.float32)
    weights[:8] = 2.0
    got = distiller.evaluate(self.x, self.y, sample_weight=weights, batch_size=64, verbose=0,
                             return_dict=True)
    hard = keras.losses.sparse_categorical_crossentropy(
        self.y, self.student.predict(self.x, verbose=0), from_logits=True).numpy()
    self.assertAlmostEqual(got["hard_label_loss"], np.mean(hard * weights), places=4)

  def test_clear_errors(self):
    with self.assertRaisesRegex(ValueError, r"the teacher 'teacher' has no layer named "
                                r"'nope'; its layers are \['image', 'conv1'"):
      distill.Distiller(self.student, self.teacher, [distill.FitNet("nope", "feat1")])
    with self.assertRaisesRegex(ValueError, r"student 'student' has no layer named 'gone'"):
      distill.Distiller(self.student, self.teacher, [distill.FitNet("feat1", "gone")])
    with self.assertRaisesRegex(ValueError, r"teacher layer 'feat3'.*student layer 'feat1'"):
      distill.Distiller(self.student, self.teacher, [distill.FitNet("feat3", "feat1")])
    with self.assertRaisesRegex(ValueError, "at least one distillation loss"):
      distill.Distiller(self.student, self.teacher, [])
    with self.assertRaisesRegex(ValueError, "loss names .* repeat"):
      distill.Distiller(self.student, self.teacher, [distill.FitNet("feat1"),
                                                     distill.FitNet("feat2")])
    with self.assertRaisesRegex(ValueError, "student takes .* but the teacher"):
      other = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.Flatten(),
                                keras.layers.Dense(3)])
      distill.Distiller(other, self.teacher, [distill.SoftLabel()])
    four_classes = tiny_nets.tiny_net(2, "four", classes=4)
    with self.assertRaisesRegex(ValueError, "teacher has 3 logits but the student 4"):
      distill.Distiller(four_classes, self.teacher, [distill.SoftLabel()])
    with self.assertRaisesRegex(ValueError, r"teacher logits \(None, 3\) and student logits "
                                r"\(None, 4\) differ"):
      distill.Distiller(four_classes, self.teacher, [distill.L2()])
    with self.assertRaisesRegex(TypeError, "not a kslim.distill loss"):
      distill.Distiller(self.student, self.teacher, [keras.losses.KLDivergence()])


class DistributionTest(absltest.TestCase):

  def test_two_replica_mirrored_step_equals_single_device_step(self):
    # Needs two logical CPUs, which must be configured before TensorFlow starts: a subprocess.
    code = textwrap.dedent("""
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from kslim._keras import keras
        from kslim import distill
        from tests.kslim.distill import tiny_nets
        x, y = tiny_nets.data(32)

        def step(strategy):
          with strategy.scope():
            teacher = tiny_nets.tiny_net(6, "teacher", seed=1)
            # No BN in the student: BN's batch statistics are per replica, not per global batch.
            student = tiny_nets.tiny_net(2, "student", seed=2, batch_norm=False)
            d = distill.Distiller(student, teacher, [distill.SoftLabel(2.0),
                                                     distill.FitNet("feat2", weight=0.5)])
            d.compile(keras.optimizers.SGD(0.5))
          h = d.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
          return student.get_weights(), h.history["loss"][0]

        one, loss_one = step(tf.distribute.get_strategy())
        mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        assert mirrored.num_replicas_in_sync == 2
        two, loss_two = step(mirrored)
        print("max diff", max(float(np.max(np.abs(a - b))) for a, b in zip(one, two)))
        print("loss", loss_one, loss_two)
        """)
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          check=False)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines()
                 if line.startswith(("max", "loss")))
    self.assertLess(float(lines["max"].split()[-1]), 1e-5)
    loss_one, loss_two = map(float, lines["loss"].split())
    self.assertAlmostEqual(loss_one, loss_two, places=5)


if __name__ == "__main__":
  absltest.main()
