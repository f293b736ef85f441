"""Least-squares reconstruction after pruning: exact where the removed channels are redundant."""

from absl.testing import absltest
import numpy as np

import kslim
from kslim._keras import keras
from kslim.pruning import DependencyGraph
from kslim.pruning import surgery

L = keras.layers


def _model():
  """c1's filter 3 is 0.01 x filter 0 and c2's filter 4 is 0.01 x filter 1, so the channels
  L1 pruning removes are exact multiples of kept ones."""
  keras.utils.set_random_seed(0)
  inputs = keras.Input((8, 8, 3))
  x = L.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inputs)
  x = L.Conv2D(5, 3, strides=2, padding="same", name="c2")(x)
  outputs = L.Dense(3, name="out")(L.Flatten()(x))
  model = keras.Model(inputs, outputs)
  for name, copy, source in (("c1", 3, 0), ("c2", 4, 1)):
    kernel, bias = model.get_layer(name).get_weights()
    bias += 0.1
    kernel[..., copy], bias[copy] = 0.01 * kernel[..., source], 0.01 * bias[source]
    model.get_layer(name).set_weights([kernel, bias])
  return model


class ReconstructTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.model = _model()
    self.x = np.random.default_rng(0).normal(size=(160, 8, 8, 3)).astype(np.float32)
    self.graph = DependencyGraph(self.model)
    self.plan = kslim.pruning.plan(self.graph, {"c1": 0.25, "c2": 0.2}, "l1")

  def test_redundant_channels_are_folded_into_the_kept_ones_exactly(self):
    self.assertEqual(self.plan.removed, {"c1": [3], "c2": [4]})
    pruned = surgery.rebuild(self.graph, self.plan.roots())
    reference = self.model(self.x).numpy()
    plain_error = np.max(np.abs(pruned(self.x).numpy() - reference))
    # More images than the Dense's 80 inputs, so the fit is determined.
    refitted = kslim.pruning.reconstruct(self.graph, self.plan.roots(), pruned, self.x[:96],
                                         batch_size=32, ridge=1e-10)
    self.assertEqual(refitted, ["c2", "out"])
    # Through the 3x3 stride-2 patches of c2 and the Flatten -> Dense rows of out, on images
    # the fit never saw.
    np.testing.assert_allclose(pruned(self.x[96:]).numpy(), reference[96:], atol=1e-4)
    self.assertGreater(plain_error, 1e-2)

  def test_prune_refits_and_lowers_the_error_on_unseen_images(self):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 3))
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same", name="a")(inputs)))
    x = L.Conv2D(12, 1, activation="relu", name="b")(x)
    outputs = L.Dense(4, name="out")(L.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    plain = kslim.prune(model, 0.5)
    refitted = kslim.prune(model, 0.5, reconstruction_images=self.x[:96])
    self.assertEqual(kslim.profile(refitted).total_macs, kslim.profile(plain).total_macs)

    def error(small):
      return float(np.mean((small(self.x[96:]).numpy() - model(self.x[96:]).numpy()) ** 2))

    self.assertLess(error(refitted), 0.5 * error(plain))
    np.testing.assert_array_equal(refitted.get_layer("a").kernel.numpy(),
                                  plain.get_layer("a").kernel.numpy())  # only consumers move
    pixels = np.clip(self.x[:96] * 40 + 128, 0, 255).astype(np.uint8)
    from_uint8 = kslim.prune(model, 0.5, reconstruction_images=pixels)  # cast like a call
    from_float = kslim.prune(model, 0.5, reconstruction_images=pixels.astype(np.float32))
    np.testing.assert_allclose(from_uint8.get_layer("b").kernel.numpy(),
                               from_float.get_layer("b").kernel.numpy(), rtol=1e-6)

  def test_conv1d_patches_are_exact_and_a_causal_kernel_is_left_as_pruned(self):
    keras.utils.set_random_seed(2)
    inputs = keras.Input((12, 3))
    x = L.Conv1D(4, 3, padding="same", activation="relu", name="c1")(inputs)
    x = L.Conv1D(5, 3, strides=2, dilation_rate=1, name="c2")(x)
    causal = L.Conv1D(4, 2, padding="causal", name="causal")(x)
    model = keras.Model(inputs, L.Dense(2, name="out")(L.Flatten()(causal)))
    kernel, bias = model.get_layer("c1").get_weights()
    kernel[..., 3], bias[3] = 0.01 * kernel[..., 0], 0.01 * bias[0]
    model.get_layer("c1").set_weights([kernel, bias])
    x = np.random.default_rng(1).normal(size=(96, 12, 3)).astype(np.float32)
    graph = DependencyGraph(model)
    chosen = kslim.pruning.plan(graph, {"c1": 0.25, "c2": 0.2}, "l1")
    pruned = surgery.rebuild(graph, chosen.roots())
    refitted = kslim.pruning.reconstruct(graph, chosen.roots(), pruned, x, ridge=1e-10)
    self.assertEqual(refitted, ["c2"])  # the causal Conv1D, which lost c2's channel, is not
    c2 = keras.Model(model.inputs, model.get_layer("c2").output)
    small_c2 = keras.Model(pruned.inputs, pruned.get_layer("c2").output)
    c2_op = next(op for op in graph.graph.ops if op.layer.name == "c2")
    kept = graph.kept_positions(c2_op.output_refs[0], chosen.roots())
    np.testing.assert_allclose(small_c2(x).numpy(), c2(x).numpy()[..., kept], atol=1e-4)

  def test_images_that_do_not_fit_the_model_are_refused_by_name(self):
    for bad in (self.x[:0], self.x[:4, :6], self.x[:4, ..., 0]):
      with self.assertRaisesRegex(ValueError, r"reconstruction images of shape .* do not fit "
                                  r"model 'model.*', whose input is \(None, 8, 8, 3\)"):
        kslim.prune(self.model, 0.3, reconstruction_images=bad)

  def test_a_model_with_two_inputs_is_refused(self):
    a, b = keras.Input((4,)), keras.Input((4,))
    model = keras.Model([a, b], L.Dense(2, name="out")(L.Add()([L.Dense(4, name="h")(a), b])))
    graph = DependencyGraph(model)
    with self.assertRaisesRegex(ValueError, "single-input model"):
      kslim.pruning.reconstruct(graph, [], model, self.x)


if __name__ == "__main__":
  absltest.main()
