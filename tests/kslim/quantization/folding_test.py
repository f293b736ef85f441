"""kslim.quantization.folding: rewrites keep the float function unchanged."""

import numpy as np
from absl.testing import absltest

from kslim import _graph
from kslim._keras import keras
from kslim.quantization import folding
from kslim.quantization.folded_batch_norm import FoldedBatchNorm


def _model():
  inputs = keras.Input((12, 12, 3))
  x = keras.layers.Conv2D(6, 3, use_bias=False, name="conv")(inputs)
  x = keras.layers.BatchNormalization(name="bn")(x)
  x = keras.layers.ReLU()(x)
  x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(x)
  x = keras.layers.BatchNormalization(name="dw_bn")(x)
  x = keras.layers.SeparableConv2D(5, 3, activation="swish", name="sep")(x)
  x = keras.layers.GlobalAveragePooling2D()(x)
  x = keras.layers.Dense(4, name="fc")(x)
  outputs = keras.layers.BatchNormalization(name="fc_bn")(x)
  model = keras.Model(inputs, outputs)
  rng = np.random.default_rng(0)
  for layer in model.layers:  # non-trivial batch-norm statistics
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.set_weights([rng.uniform(0.5, 2.0, w.shape) if i != 1 else rng.normal(size=w.shape)
                         for i, w in enumerate(layer.get_weights())])
  return model


class FoldingTest(absltest.TestCase):

  def test_fold_weights_formula(self):
    kernel = np.ones((1, 1, 1, 2), np.float32)
    folded, bias = folding.fold_batch_norm_weights(
        kernel, np.array([1.0, 2.0]), gamma=np.array([2.0, 3.0]), beta=np.array([0.5, 0.0]),
        mean=np.array([1.0, 0.0]), variance=np.array([3.0, 3.0]), epsilon=1.0)
    # s = gamma / sqrt(var + eps) = [1, 1.5]; bias = (b - mean) * s + beta = [0.5, 3].
    np.testing.assert_allclose(folded.ravel(), [1.0, 1.5])
    np.testing.assert_allclose(bias, [0.5, 3.0])

  def test_canonicalized_graph_computes_the_same_function(self):
    model = _model()
    graph = _graph.Graph.from_model(model)
    graph.clone_layers()
    folding.canonicalize(graph)
    rebuilt = graph.build()
    names = [layer.name for layer in rebuilt.layers]
    for gone in ("bn", "dw_bn", "fc_bn", "sep"):
      self.assertNotIn(gone, names)
    for added in ("sep_depthwise", "sep_pointwise", "sep_pointwise_swish"):
      self.assertIn(added, names)
    x = np.random.default_rng(1).normal(size=(4, 12, 12, 3)).astype(np.float32)
    np.testing.assert_allclose(rebuilt(x).numpy(), model(x).numpy(), rtol=1e-4, atol=1e-4)
    self.assertLen(model.layers, 10)  # the original is untouched

  def test_dense_on_sequences_and_maps_becomes_a_pointwise_conv(self):
    inputs = keras.Input((5, 6, 3))
    x = keras.layers.Dense(4, activation="relu", name="per_pixel")(inputs)
    x = keras.layers.Reshape((30, 4))(x)
    x = keras.layers.Dense(2, name="per_step")(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(x))
    graph = _graph.Graph.from_model(model)
    graph.clone_layers()
    folding.dense_to_pointwise_conv(graph)
    rebuilt = graph.build()
    self.assertIsInstance(rebuilt.get_layer("per_pixel"), keras.layers.Conv2D)
    self.assertIsInstance(rebuilt.get_layer("per_step"), keras.layers.Conv1D)
    self.assertIsInstance(rebuilt.get_layer("head"), keras.layers.Dense)  # a 2-D input stays
    x = np.random.default_rng(2).normal(size=(3, 5, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(rebuilt(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)

  def test_kept_training_batch_norms_compute_the_same_function_in_both_modes(self):
    model = _model()
    graph = _graph.Graph.from_model(model)
    graph.clone_layers()
    folding.canonicalize(graph, keep_training=lambda layer: layer.name != "fc")
    rebuilt = graph.build()
    kinds = {layer.name: type(layer) for layer in rebuilt.layers}
    self.assertIs(kinds["conv"], FoldedBatchNorm)
    self.assertIs(kinds["dw"], FoldedBatchNorm)  # its own bias went into the moving mean
    self.assertIs(kinds["fc"], keras.layers.Dense)  # folded once, statically
    x = np.random.default_rng(1).normal(size=(4, 12, 12, 3)).astype(np.float32)
    np.testing.assert_allclose(rebuilt(x).numpy(), model(x).numpy(), rtol=1e-4, atol=1e-4)
    # In training, conv and dw normalize with batch statistics as the BN layers do; fc's batch
    # norm is folded, so compare up to it.
    probe = lambda m: keras.Model(m.input, m.get_layer("sep_pointwise_swish" if m is rebuilt
                                                       else "sep").output)
    np.testing.assert_allclose(probe(rebuilt)(x, training=True).numpy(),
                               probe(model)(x, training=True).numpy(), rtol=1e-3, atol=1e-4)


if __name__ == "__main__":
  absltest.main()
