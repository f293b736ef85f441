"""DARTS / PC-DARTS: gradients reach the architecture, genotypes decode, channels are sampled."""

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from kslim import nas
from kslim._keras import keras
from kslim.nas import darts


def _data(n=8, seed=0):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(n, 8, 8, 1)).astype(np.float32), rng.integers(0, 3, n)


class _Seeded(absltest.TestCase):

  def setUp(self):
    super().setUp()
    keras.utils.set_random_seed(0)


class SupernetTest(_Seeded):

  def test_architecture_weights_receive_gradients(self):
    x, y = _data()
    for net in (nas.Supernet(3, channels=4, layers=3, steps=1),
                nas.Supernet(3, channels=4, layers=3, steps=1, partial=2,
                             edge_normalization=True)):
      with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
            y, net(x, training=True), from_logits=True))
      grads = tape.gradient(loss, net.arch_weights)
      self.assertLen(grads, 4 if net.edge_normalization else 2)
      for weight, grad in zip(net.arch_weights, grads):
        self.assertIsNotNone(grad, weight.name)
        self.assertGreater(float(tf.reduce_max(tf.abs(grad))), 0.0, weight.name)
      self.assertNotIn(id(net.alpha_normal), {id(w) for w in net.network_weights})

  def test_genotype_keeps_two_strongest_edges_and_their_best_real_op(self):
    net = nas.Supernet(3, channels=4, layers=3, steps=2)
    net(_data(1)[0])
    index = {name: i for i, name in enumerate(darts.PRIMITIVES)}
    alpha = np.zeros((darts.edge_count(2), len(darts.PRIMITIVES)), np.float32)
    # Node 0 (edges 0, 1): both kept. Edge 0's largest weight is 'none', so its op is the
    # best other one, sep_conv_3x3.
    alpha[0, index["none"]], alpha[0, index["sep_conv_3x3"]] = 9.0, 2.0
    alpha[1, index["max_pool_3x3"]] = 3.0
    # Node 1 (edges 2, 3, 4 from inputs 0, 1 and node 0): the two strongest are inputs 0 and 2.
    alpha[2, index["dil_conv_5x5"]] = 4.0
    alpha[3, index["skip_connect"]] = 0.5
    alpha[4, index["sep_conv_5x5"]] = 5.0
    net.alpha_normal.assign(alpha)
    net.alpha_reduce.assign(alpha[:, ::-1])
    genotype = net.genotype()
    self.assertEqual(genotype.normal, [[("sep_conv_3x3", 0), ("max_pool_3x3", 1)],
                                       [("dil_conv_5x5", 0), ("sep_conv_5x5", 2)]])
    self.assertLen(genotype.reduce, 2)

  def test_edge_normalization_sums_to_one_per_node(self):
    net = nas.Supernet(3, channels=4, layers=3, steps=3, edge_normalization=True)
    weights = net.edge_weights(tf.constant(np.arange(9, dtype=np.float32))).numpy()
    np.testing.assert_allclose([weights[0:2].sum(), weights[2:5].sum(), weights[5:9].sum()],
                               1.0, rtol=1e-6)


class PartialChannelsTest(_Seeded):

  def test_only_one_kth_of_the_channels_goes_through_the_ops(self):
    op = darts.MixedOp(8, 1, partial=4)
    x = tf.constant(np.random.default_rng(1).normal(size=(2, 5, 5, 8)), tf.float32)
    weights = tf.one_hot(darts.PRIMITIVES.index("none"), len(darts.PRIMITIVES))
    out = op(x, weights).numpy()
    # Ops (here 'none': zeros) see channels 0-1; channels 2-7 bypass. After the shuffle of 4
    # groups of 2, old channel g * 2 + c lands at c * 4 + g.
    for old in range(8):
      new = (old % 2) * 4 + old // 2
      want = np.zeros((2, 5, 5)) if old < 2 else x.numpy()[..., old]
      np.testing.assert_allclose(out[..., new], want, err_msg=f"channel {old}")
    reduced = darts.MixedOp(8, 2, partial=4)(x, weights)
    self.assertEqual(reduced.shape, (2, 3, 3, 8))
    with self.assertRaisesRegex(ValueError, "6 channels do not split into 4"):
      darts.MixedOp(6, 1, partial=4)


class SearchAndBuildTest(_Seeded):

  def test_search_moves_the_architecture_and_builds_a_plain_model(self):
    # PC-DARTS runs DARTS' search loop and adds the betas: one trace covers both (tracing
    # the supernet's alternating steps dominates this test's time).
    x, y = _data(16)
    for cls, kwargs in ((nas.PCDARTS, {"partial": 2}),):
      search = cls(num_classes=3, channels=4, layers=3, steps=1, arch_learning_rate=1e-2,
                   **kwargs)
      search.supernet(x[:1])
      before = [w.numpy().copy() for w in search.supernet.arch_weights]
      genotype = search.search(x[:8], y[:8], x[8:], y[8:], epochs=1, batch_size=8,
                               progress=False)
      for old, new in zip(before, search.supernet.arch_weights):
        self.assertFalse(np.allclose(old, new.numpy()), cls.__name__)
      self.assertEqual(genotype, search.supernet.genotype())
      model = nas.build_network(genotype, (8, 8, 1), 3, channels=4, layers=3)
      self.assertEqual(model.predict(x, verbose=0).shape, (16, 3))

  def test_interrupted_search_resumes_from_its_last_epoch(self):
    x, y = _data(16)

    def run(epochs, checkpoint_dir=None, init_seed=0):
      keras.utils.set_random_seed(init_seed)
      search = nas.DARTS(num_classes=3, channels=4, layers=1, steps=1, arch_learning_rate=1e-2)
      search.search(x[:8], y[:8], x[8:], y[8:], epochs=epochs, batch_size=4, progress=False,
                    checkpoint_dir=checkpoint_dir)
      return search.supernet

    whole = run(2)
    directory = self.create_tempdir().full_path
    run(1, directory)  # killed after its first epoch
    resumed = run(2, directory, init_seed=1)  # other initial weights: the checkpoint replaces them
    for a, b in zip(whole.weights, resumed.weights):
      np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6, err_msg=a.name)

  def test_build_network_uses_the_chosen_ops(self):
    genotype = nas.Genotype(normal=[[("sep_conv_5x5", 0), ("skip_connect", 1)],
                                    [("dil_conv_3x3", 0), ("avg_pool_3x3", 2)]],
                            reduce=[[("max_pool_3x3", 0), ("dil_conv_3x3", 1)]])
    model = nas.build_network(genotype, (8, 8, 1), 3, channels=4, layers=3)
    kinds = {type(l).__name__ for l in model.layers}
    self.assertContainsSubset({"Sequential", "MaxPooling2D", "AveragePooling2D", "Add",
                               "Concatenate"}, kinds)
    kernels = {layer.kernel_size for seq in model.layers if hasattr(seq, "layers")
               for layer in seq.layers if type(layer).__name__ == "DepthwiseConv2D"}
    self.assertEqual(kernels, {(5, 5), (3, 3)})
    self.assertEqual(model.get_layer("cell3").output_shape, (None, 2, 2, 16))
    path = f"{self.create_tempdir().full_path}/darts.keras"
    model.save(path)  # a plain model: no Lambda, loads without kslim
    loaded = keras.models.load_model(path)
    x = _data(4)[0]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)


if __name__ == "__main__":
  absltest.main()
