"""kslim.prune: exactness on dead channels through every supported pattern, and the API."""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

import kslim
from kslim._keras import keras
from kslim.pruning import DependencyGraph

L = keras.layers


def _sequential():
  model = keras.Sequential([
      keras.Input((8, 8, 3)), L.Conv2D(6, 3, name="c1"), L.BatchNormalization(), L.ReLU(),
      L.Conv2D(8, 3, padding="same", name="c2"), L.ReLU(), L.Flatten(),
      L.Dense(12, activation="relu", name="fc1"), L.Dense(5, name="out")])
  return model, ["c1", "c2", "fc1"]


def _residual():
  inputs = keras.Input((8, 8, 3))
  x = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3, padding="same", name="stem")(inputs)))
  for i in range(2):
    y = L.ReLU()(L.BatchNormalization()(L.Conv2D(5, 3, padding="same", name=f"a{i}")(x)))
    y = L.BatchNormalization()(L.Conv2D(8, 3, padding="same", name=f"b{i}")(y))
    x = L.ReLU()(L.Add()([x, y]))
  outputs = L.Dense(4, name="out")(L.GlobalAveragePooling2D()(x))
  return keras.Model(inputs, outputs), ["stem", "a0", "a1"]


def _depthwise():
  inputs = keras.Input((9, 9, 2))
  x = L.ReLU()(L.BatchNormalization()(L.Conv2D(4, 3, name="c1")(inputs)))
  x = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(x)
  x = L.ReLU(6.0)(L.BatchNormalization()(x))
  x = L.Conv2D(6, 1, activation="relu", name="pw")(x)
  x = L.SeparableConv2D(5, 3, depth_multiplier=2, activation="relu", name="sep")(x)
  outputs = L.Dense(3, name="out")(L.GlobalMaxPooling2D()(x))
  return keras.Model(inputs, outputs), ["c1", "pw", "sep"]


def _concat():
  inputs = keras.Input((8, 8, 3))
  a = L.Conv2D(4, 3, padding="same", activation="relu", name="a")(inputs)
  b = L.Conv2D(6, 1, activation="relu", name="b")(inputs)
  c = L.BatchNormalization()(L.Concatenate()([a, b]))
  d = L.Conv2D(10, 3, padding="same", name="d")(inputs)
  x = L.Add()([c, d])
  e = L.Conv2D(3, 1, activation="relu", name="e")(inputs)
  x = L.Concatenate()([L.MaxPooling2D()(x), L.AveragePooling2D()(e)])
  x = L.Conv2D(5, 3, activation="relu", name="f")(x)
  outputs = L.Dense(3, name="out")(L.Flatten()(x))
  return keras.Model(inputs, outputs), ["a", "e", "f"]


def _squeeze_excite():
  inputs = keras.Input((6, 6, 3))
  x = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3, padding="same", name="conv")(inputs)))
  s = L.Reshape((1, 1, 8))(L.GlobalAveragePooling2D()(x))
  s = L.Dense(4, activation="relu", name="se_reduce")(s)
  s = L.Dense(8, activation="sigmoid", name="se_expand")(s)
  x = L.Multiply()([x, s])
  x = L.Conv2D(4, 3, activation="relu", name="head")(x)
  outputs = L.Dense(3, name="out")(L.GlobalAveragePooling2D()(x))
  return keras.Model(inputs, outputs), ["conv", "se_reduce", "head"]


def _merges():
  inputs = keras.Input((6, 6, 2))
  a = L.Conv2D(6, 3, padding="same", name="a")(inputs)
  b = L.Conv2D(6, 3, padding="same", name="b")(inputs)
  c = L.Conv2D(6, 1, name="c")(inputs)
  x = L.Subtract()([a, b])
  x = L.Maximum()([x, c])
  x = L.Average()([x, a])
  x = L.Multiply()([x, L.Activation("sigmoid")(c)])
  x = L.Minimum()([x, b])
  outputs = L.Dense(2, name="out")(L.Flatten()(L.Conv2D(3, 3, name="head")(x)))
  return keras.Model(inputs, outputs), ["a", "head"]


def _nested():
  inner_in = keras.Input((8, 8, 3))
  y = L.ReLU()(L.BatchNormalization()(L.Conv2D(6, 3, name="inner_conv")(inner_in)))
  inner = keras.Model(inner_in, y, name="inner")
  block = keras.Sequential([keras.Input((6, 6, 6)), L.Conv2D(5, 3, name="seq_conv"), L.ReLU()],
                           name="block")
  inputs = keras.Input((8, 8, 3))
  x = block(inner(inputs))
  outputs = L.Dense(3, name="out")(L.GlobalAveragePooling2D()(x))
  return keras.Model(inputs, outputs), ["inner_conv", "seq_conv"]


def _shared():
  inputs = keras.Input((8, 8, 3))
  x = L.Conv2D(6, 3, padding="same", activation="relu", name="c1")(inputs)
  shared = L.Conv2D(6, 3, padding="same", name="shared")
  x = shared(L.ReLU()(shared(x)))
  outputs = L.Dense(3, name="out")(L.GlobalAveragePooling2D()(x))
  return keras.Model(inputs, outputs), ["c1"]


def _hard_swish():
  inputs = keras.Input((6, 6, 3))
  x = L.BatchNormalization()(L.Conv2D(6, 3, name="conv")(inputs))
  x = x * (L.ReLU(6.0)(x + 3.0) * (1.0 / 6.0))
  x = L.Conv2D(4, 3, activation="relu", name="head")(x)
  outputs = L.Dense(3, name="out")(L.GlobalAveragePooling2D()(x))
  return keras.Model(inputs, outputs), ["conv", "head"]


def _sequence():
  inputs = keras.Input((10, 4))
  x = L.Conv1D(8, 3, activation="relu", name="c1")(inputs)
  x = L.Dense(6, activation="relu", name="per_step")(x)
  x = L.Conv1D(5, 1, name="c2")(L.PReLU(shared_axes=[1])(x))
  outputs = L.Dense(3, name="out")(L.GlobalAveragePooling1D()(x))
  return keras.Model(inputs, outputs), ["c1", "per_step", "c2"]


def _transpose():
  inputs = keras.Input((8, 8, 2))
  x = L.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="down")(inputs)
  x = L.Conv2DTranspose(5, 3, strides=2, padding="same", name="up")(x)
  x = L.Conv2D(3, 3, activation="relu", name="head")(L.ReLU()(x))
  outputs = L.Dense(2, name="out")(L.GlobalAveragePooling2D()(x))
  return keras.Model(inputs, outputs), ["down", "up"]


PATTERNS = dict(sequential=_sequential, residual=_residual, depthwise=_depthwise, concat=_concat,
                squeeze_excite=_squeeze_excite, merges=_merges, nested=_nested, shared=_shared,
                hard_swish=_hard_swish, sequence=_sequence, transpose=_transpose)


def _randomize(model, seed=0):
  """Gives every weight (and batch-norm statistic) a non-trivial value."""
  rng = np.random.default_rng(seed)
  for layer in model.submodules:
    if isinstance(layer, keras.layers.Layer) and layer.weights:
      layer.set_weights([rng.uniform(0.5, 1.5, w.shape) if "variance" in v.name
                         else rng.normal(0, 0.5, w.shape)
                         for v, w in zip(layer.weights, layer.get_weights())])


class ExactnessTest(parameterized.TestCase):

  @parameterized.named_parameters(*PATTERNS.items())
  def test_pruning_dead_channels_leaves_outputs_unchanged(self, build):
    model, names = build()
    _randomize(model)
    graph = DependencyGraph(model)
    rng = np.random.default_rng(1)
    ratios, dead = {}, []
    for name in names:
      group = graph.group(name)
      self.assertEqual(group.prunable, group.size, name)
      k = group.size // 2
      dead.extend(rng.choice(group.classes, k, replace=False))
      ratios[name] = k / group.size
    graph.zero_channels(dead)  # the makers of the dead channels: filters, biases, BN gamma/beta
    x = rng.normal(size=(3,) + tuple(model.input_shape[1:])).astype(np.float32)
    expected = model(x).numpy()
    chosen = kslim.pruning.plan(graph, ratios, "l1")
    self.assertCountEqual(chosen.roots(), dead)
    pruned = kslim.prune(model, ratios, criterion="l1")
    np.testing.assert_allclose(pruned(x).numpy(), expected, atol=1e-5)
    self.assertLess(pruned.count_params(), model.count_params())
    self.assertLess(kslim.profile(pruned).total_macs, kslim.profile(model).total_macs)
    self.assertEqual(graph.macs(dead), kslim.profile(pruned).total_macs)
    self.assertEqual(graph.macs(), kslim.profile(model).total_macs)
    np.testing.assert_array_equal(model(x).numpy(), expected)  # the original is untouched


class GraphTest(absltest.TestCase):

  def test_groups_of_the_patterns(self):
    graph = DependencyGraph(_residual()[0])
    self.assertEqual(graph.group("stem").layers, ("stem", "b0", "b1"))
    self.assertEqual(graph.group("b1").size, 8)
    graph = DependencyGraph(_concat()[0])
    # Add(Concatenate([a, b]), d) couples a's channels with d's first 4 and b's with the rest.
    self.assertEqual(graph.group("a").layers, ("a", "b", "d"))
    self.assertEqual(graph.group("d").size, 10)
    graph = DependencyGraph(_squeeze_excite()[0])
    self.assertEqual(graph.group("conv").layers, ("conv", "se_expand"))
    self.assertEqual(graph.group("se_reduce").layers, ("se_reduce",))

  def test_output_channels_are_pinned(self):
    model = _sequential()[0]
    graph = DependencyGraph(model)
    self.assertEqual(graph.group("out").prunable, 0)
    pruned = kslim.prune(model, 0.5)
    self.assertEqual(pruned.output_shape, (None, 5))
    self.assertEqual(pruned.get_layer("c1").filters, 3)
    self.assertEqual(pruned.get_layer("fc1").units, 6)

  def test_unknown_layers_are_barriers_with_a_reason(self):
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(6, 3, name="c1")(inputs)
    x = L.LayerNormalization(name="ln")(x)
    x = L.Conv2D(4, 3, activation="relu", name="c2")(x)
    model = keras.Model(inputs, L.Dense(2, name="out")(L.GlobalAveragePooling2D()(x)))
    graph = DependencyGraph(model)
    self.assertEqual(graph.group("c1").prunable, 0)
    self.assertEqual(graph.group("c2").prunable, 4)
    self.assertTrue(any("ln (LayerNormalization)" in b for b in graph.barriers), graph.barriers)
    self.assertIn("ln", str(graph))
    pruned = kslim.prune(model, 0.5)
    self.assertEqual(pruned.get_layer("c1").filters, 6)
    self.assertEqual(pruned.get_layer("c2").filters, 2)

  def test_softmax_over_channels_is_a_barrier(self):
    inputs = keras.Input((6,))
    x = L.Dense(8, activation="relu", name="h")(inputs)
    x = L.Softmax()(L.Dense(4, name="pre")(x))
    model = keras.Model(inputs, L.Dense(2, name="out")(x))
    graph = DependencyGraph(model)
    self.assertEqual(graph.group("pre").prunable, 0)
    self.assertEqual(graph.group("h").prunable, 8)


class ApiTest(absltest.TestCase):

  def test_align_keeps_multiples(self):
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(32, 3, activation="relu", name="c1")(inputs)
    x = L.Conv2D(20, 3, activation="relu", name="c2")(x)
    x = L.Conv2D(6, 3, activation="relu", name="c3")(x)
    model = keras.Model(inputs, L.Dense(2)(L.Flatten()(x)))
    pruned = kslim.prune(model, 0.3, align=8)
    # 32 -> keep 22 -> 24; 20 -> keep 14 -> 16; 6 < 8 channels: keep 4 as is.
    self.assertEqual([pruned.get_layer(n).filters for n in ("c1", "c2", "c3")], [24, 16, 4])

  def test_per_layer_ratios_and_skip(self):
    model = _residual()[0]
    pruned = kslim.prune(model, {"a0": 0.4, "stem": 0.5})
    self.assertEqual([pruned.get_layer(n).filters for n in ("stem", "a0", "a1", "b0")],
                     [4, 3, 5, 4])
    pruned = kslim.prune(model, 0.4, skip=["b0"])
    self.assertEqual([pruned.get_layer(n).filters for n in ("stem", "a0", "b1")], [8, 3, 8])

  def test_bad_input_names_the_culprit(self):
    model = _residual()[0]
    with self.assertRaisesRegex(ValueError, "'nope'.*groups are"):
      kslim.prune(model, {"nope": 0.3})
    with self.assertRaisesRegex(ValueError, "'stem' and 'b0' are coupled"):
      kslim.prune(model, {"stem": 0.3, "b0": 0.5})
    with self.assertRaisesRegex(ValueError, r"ratio for 'a0' must be a number in \[0, 1\)"):
      kslim.prune(model, {"a0": 1.0})
    with self.assertRaisesRegex(ValueError, "unknown pruning criterion 'l3'"):
      kslim.prune(model, 0.3, criterion="l3")
    with self.assertRaisesRegex(ValueError, "align must be a positive integer"):
      kslim.prune(model, 0.3, align=0)
    with self.assertRaisesRegex(TypeError, "kslim.prune"):
      kslim.prune("model.keras", 0.3)

  def test_pruned_model_saves_and_trains(self):
    model = kslim.models.reference_cnn(width=0.5)
    pruned = kslim.prune(model, 0.5, criterion="fpgm")
    path = self.create_tempdir().full_path + "/pruned.keras"
    pruned.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(0).normal(size=(4, 28, 28, 1)).astype(np.float32)
    np.testing.assert_allclose(loaded(x).numpy(), pruned(x).numpy(), atol=1e-6)
    loaded.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = loaded.fit(x, np.arange(4), epochs=2, verbose=0)
    self.assertLen(history.history["loss"], 2)


if __name__ == "__main__":
  absltest.main()
