"""Pruning criteria: scores against numpy, and which channels each one removes."""

from absl.testing import absltest
import numpy as np

import kslim
from kslim._keras import keras
from kslim.pruning import criteria
from kslim.pruning import DependencyGraph

L = keras.layers


def _model(kernel, gamma, residual=False):
  """Conv (given kernel, no bias) -> BN (given gamma) [-> Add with a second conv] -> head."""
  inputs = keras.Input((5, 5, kernel.shape[2]))
  x = L.Conv2D(kernel.shape[-1], kernel.shape[0], padding="same", use_bias=False, name="conv")(
      inputs)
  x = L.BatchNormalization(name="bn")(x)
  if residual:
    x = L.Add()([x, L.Conv2D(kernel.shape[-1], 1, use_bias=False, name="other")(inputs)])
  outputs = L.Dense(2, name="out")(L.GlobalAveragePooling2D()(L.ReLU()(x)))
  model = keras.Model(inputs, outputs)
  model.get_layer("conv").set_weights([kernel])
  bn = model.get_layer("bn")
  bn.set_weights([gamma] + bn.get_weights()[1:])
  return model


def _scores(model, criterion, layer="conv"):
  graph = DependencyGraph(model)
  return criteria.scores(criterion, graph, graph.group(layer))


class ScoresTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.kernel = np.random.default_rng(0).normal(size=(3, 3, 2, 6)).astype(np.float32)
    self.gamma = np.array([0.5, -2.0, 0.1, 1.0, -0.05, 3.0], np.float32)
    self.model = _model(self.kernel, self.gamma)

  def test_norms_match_numpy(self):
    filters = self.kernel.reshape(-1, 6).T
    l1 = np.abs(filters).sum(1)
    l2 = np.sqrt((filters ** 2).sum(1))
    # Each layer's scores are divided by their mean, so groups of layers compare fairly.
    np.testing.assert_allclose(_scores(self.model, "l1"), l1 / l1.mean(), rtol=1e-6)
    np.testing.assert_allclose(_scores(self.model, "l2"), l2 / l2.mean(), rtol=1e-6)

  def test_fpgm_is_the_sum_of_distances_and_drops_the_median_filter(self):
    filters = self.kernel.reshape(-1, 6).T.astype(np.float64)
    distances = np.array([sum(np.linalg.norm(f - g) for g in filters) for f in filters])
    np.testing.assert_allclose(_scores(self.model, "fpgm"), distances / distances.mean(),
                               rtol=1e-6)
    # Filters: five far apart and one at their centre; FPGM removes the centre one.
    kernel = np.zeros((1, 1, 5, 6), np.float32)
    kernel[0, 0, :, :5] = 10 * np.eye(5)
    kernel[0, 0, :, 5] = 2.0  # near the geometric median of the others
    small = kslim.prune(_model(kernel, np.ones(6, np.float32)), {"conv": 1 / 6},
                        criterion="fpgm")
    np.testing.assert_array_equal(small.get_layer("conv").get_weights()[0][0, 0],
                                  kernel[0, 0, :, :5])
    # L1 keeps it (its norm, 10, is the largest) and drops one of the others.
    small = kslim.prune(_model(kernel, np.ones(6, np.float32)), {"conv": 1 / 6}, criterion="l1")
    self.assertIn(2.0, small.get_layer("conv").get_weights()[0])

  def test_bn_gamma_is_the_absolute_gamma(self):
    np.testing.assert_allclose(_scores(self.model, "bn_gamma"), np.abs(self.gamma))
    small = kslim.prune(self.model, {"conv": 0.5}, criterion="bn_gamma")
    np.testing.assert_allclose(small.get_layer("bn").gamma.numpy(), [-2.0, 1.0, 3.0])

  def test_residual_group_averages_its_layers(self):
    model = _model(self.kernel, self.gamma, residual=True)
    graph = DependencyGraph(model)
    group = graph.group("conv")
    self.assertEqual(group.layers, ("conv", "other"))
    own = np.abs(self.kernel.reshape(-1, 6).T).sum(1)
    other = np.abs(model.get_layer("other").kernel.numpy().reshape(-1, 6).T).sum(1)
    np.testing.assert_allclose(criteria.scores("l1", graph, group),
                               (own / own.mean() + other / other.mean()) / 2, rtol=1e-6)

  def test_bn_criteria_skip_groups_without_batch_norm(self):
    inputs = keras.Input((4,))
    x = L.Dense(6, activation="relu", name="hidden")(inputs)
    model = keras.Model(inputs, L.Dense(2, name="out")(x))
    graph = DependencyGraph(model)
    chosen = kslim.pruning.plan(graph, 0.5, "bn_gamma")
    self.assertEqual(chosen.removed, {})
    self.assertIn("no BatchNormalization", chosen.skipped["hidden"])
    self.assertIn("no BatchNormalization", str(chosen))


class SelectTest(absltest.TestCase):

  def test_ratio_rounds_and_pinned_classes_stay(self):
    scores = np.array([5.0, 1.0, 4.0, 2.0, 3.0])
    pinned = np.zeros(5, bool)
    np.testing.assert_array_equal(criteria.select("l1", scores, pinned, 0.4), [1, 3])
    pinned[1] = True
    np.testing.assert_array_equal(criteria.select("l1", scores, pinned, 0.4), [3, 4])
    np.testing.assert_array_equal(criteria.select("l1", scores, np.zeros(5, bool), 0.99),
                                  [1, 2, 3, 4])  # at least one channel stays

  def test_opt_slim_discards_an_energy_share(self):
    gammas = np.array([0.1, 2.0, 0.2, 1.0, 0.3, 3.0])
    energy = gammas ** 2 / (gammas ** 2).sum()  # sorted: 0.1, 0.2, 0.3, 1, 2, 3
    # Cumulative share of the three smallest: (0.01 + 0.04 + 0.09) / 14.14 ~ 0.0099.
    self.assertAlmostEqual(np.sort(energy)[:3].sum(), 0.14 / 14.14)
    np.testing.assert_array_equal(criteria.select("opt_slim", gammas, np.zeros(6, bool), 0.01),
                                  [0, 2, 4])
    np.testing.assert_array_equal(criteria.select("opt_slim", gammas, np.zeros(6, bool), 0.009),
                                  [0, 2])
    np.testing.assert_array_equal(criteria.select("opt_slim", gammas, np.zeros(6, bool), 0.081),
                                  [0, 2, 3, 4])


if __name__ == "__main__":
  absltest.main()
