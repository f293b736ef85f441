"""Sensitivity scans (resumable), ratio derivation, iterative pruning, the callback, slimming."""

import json
import pathlib

from absl.testing import absltest
import numpy as np

import kslim
from kslim._keras import keras
from kslim.pruning import DependencyGraph
from kslim.pruning import Sensitivity

L = keras.layers


def _model():
  inputs = keras.Input((8, 8, 2))
  x = inputs
  for i, filters in enumerate([8, 12, 16]):
    x = L.Conv2D(filters, 3, padding="same", use_bias=False, name=f"c{i}")(x)
    x = L.ReLU()(L.BatchNormalization(name=f"bn{i}")(x))
  outputs = L.Dense(3, name="out")(L.GlobalAveragePooling2D()(x))
  model = keras.Model(inputs, outputs, name="tiny")
  rng = np.random.default_rng(0)
  model.set_weights([rng.normal(0, 0.5, w.shape) + (1.0 if "variance" in v.name else 0.0)
                     for v, w in zip(model.weights, model.get_weights())])
  model.set_weights([np.abs(w) if "variance" in v.name else w
                     for v, w in zip(model.weights, model.get_weights())])
  return model


_X = np.random.default_rng(1).normal(size=(16, 8, 8, 2)).astype(np.float32)


class _Fidelity:
  """eval_fn: minus the mean squared distance of a model's outputs from the original's."""

  def __init__(self, model, fail_after=None):
    self.reference = model(_X).numpy()
    self.calls, self.fail_after = 0, fail_after

  def __call__(self, model):
    self.calls += 1
    if self.fail_after is not None and self.calls > self.fail_after:
      raise KeyboardInterrupt("simulated interruption")
    return -float(np.mean((model(_X).numpy() - self.reference) ** 2))


class SensitivityTest(absltest.TestCase):

  def test_scan_is_cached_plotted_and_resumes_after_an_interruption(self):
    model = _model()
    cache = pathlib.Path(self.create_tempdir().full_path) / "sens.json"
    ratios = (0.25, 0.5, 0.75)
    interrupted = _Fidelity(model, fail_after=5)  # baseline + 4 of the 9 evaluations
    with self.assertRaises(KeyboardInterrupt):
      kslim.pruning.sensitivity(model, interrupted, ratios, cache=cache)
    saved = json.loads(cache.read_text())
    self.assertEqual(sum(len(v) for v in saved["metrics"].values()), 4)
    resumed = _Fidelity(model)
    sens = kslim.pruning.sensitivity(model, resumed, ratios, cache=cache)
    self.assertEqual(resumed.calls, 5)  # only what was missing
    fresh = kslim.pruning.sensitivity(model, _Fidelity(model), ratios)
    self.assertEqual(sens.metrics, fresh.metrics)
    self.assertEqual(sorted(sens.metrics), ["c0", "c1", "c2"])
    self.assertEqual(sens.baseline, 0.0)
    for group in sens.metrics:
      ratios_seen, losses = sens.losses(group)
      np.testing.assert_array_equal(ratios_seen, ratios)
      self.assertTrue(np.all(losses > 0), losses)  # every pruned model moves away
    self.assertGreater(cache.with_suffix(".png").stat().st_size, 5000)
    with self.assertRaisesRegex(ValueError, "holds model 'tiny' with criterion 'l1'"):
      kslim.pruning.sensitivity(model, resumed, ratios, criterion="fpgm", cache=cache)

  def test_scan_with_reconstruction_measures_the_refitted_prune(self):
    model = _model()
    cache = pathlib.Path(self.create_tempdir().full_path) / "sens.json"
    ratios = (0.25, 0.5)
    plain = kslim.pruning.sensitivity(model, _Fidelity(model), ratios, cache=cache)
    with self.assertRaisesRegex(ValueError, "0 reconstruction images, not 'tiny' with 'l1' "
                                "and 16"):
      kslim.pruning.sensitivity(model, _Fidelity(model), ratios, cache=cache,
                                reconstruction_images=_X)
    refit = kslim.pruning.sensitivity(model, _Fidelity(model), ratios,
                                      cache=cache.with_name("refit.json"),
                                      reconstruction_images=_X)
    self.assertEqual(json.loads(cache.with_name("refit.json").read_text())[
        "reconstruction_images"], 16)
    # Each point is the metric of kslim.prune's refitted model at that ratio.
    self.assertAlmostEqual(
        refit.metrics["c1"][0.5],
        _Fidelity(model)(kslim.prune(model, {"c1": 0.5}, reconstruction_images=_X)), places=6)
    # c2 feeds the classifier, refitted on these very images: strictly closer to the original.
    np.testing.assert_array_less(refit.losses("c2")[1], plain.losses("c2")[1])
    self.assertLess(np.mean([refit.losses(g)[1] for g in refit.metrics]),
                    np.mean([plain.losses(g)[1] for g in plain.metrics]))

  def test_ratios_for_loss_interpolates(self):
    sens = Sensitivity("m", "l1", 0.9, {"a": {0.2: 0.9, 0.4: 0.85, 0.6: 0.7},
                                         "b": {0.2: 0.7, 0.4: 0.6},
                                         "c": {0.2: 0.89, 0.4: 0.88}})
    ratios = kslim.pruning.ratios_for_loss(sens, 0.1)
    # a: losses 0, 0.05, 0.2 -> crosses 0.1 between 0.4 and 0.6: 0.4 + 0.05 / 0.15 * 0.2.
    self.assertAlmostEqual(ratios["a"], 0.4 + 0.2 / 3)
    # b: loss 0.2 at 0.2 already: interpolate from (0, 0): 0.2 * 0.1 / 0.2.
    self.assertAlmostEqual(ratios["b"], 0.1)
    self.assertAlmostEqual(ratios["c"], 0.4)  # within budget everywhere: the largest ratio

  def test_ratios_for_flops_reach_the_target(self):
    model = _model()
    sens = kslim.pruning.sensitivity(model, _Fidelity(model), (0.2, 0.4, 0.6, 0.8))
    base = kslim.profile(model).total_macs
    for reduction in (0.3, 0.5):
      ratios = kslim.pruning.ratios_for_flops(sens, reduction)
      macs = kslim.profile(kslim.prune(model, ratios)).total_macs
      self.assertLessEqual(macs, (1 - reduction) * base)
      self.assertGreater(macs, (1 - reduction - 0.1) * base)
    ratios = kslim.pruning.ratios_for_flops(sens, 0.5, align=4)
    aligned = kslim.prune(model, ratios, align=4)
    self.assertLessEqual(kslim.profile(aligned).total_macs, 0.5 * base)
    self.assertGreater(kslim.profile(aligned).total_macs, 0.35 * base)
    for name in ("c0", "c1"):
      self.assertEqual(aligned.get_layer(name).filters % 4, 0, name)
    loaded = Sensitivity.from_json(json.loads(json.dumps(sens.to_json())))
    self.assertEqual(loaded.metrics, sens.metrics)
    with self.assertRaisesRegex(ValueError, "Sensitivity.load"):
      kslim.pruning.ratios_for_flops(loaded, 0.5)
    graph = DependencyGraph(model)
    ratio = kslim.pruning.uniform_ratio_for_flops(graph, 0.5)
    macs = kslim.profile(kslim.prune(model, ratio)).total_macs
    self.assertLessEqual(macs, 0.5 * base)
    self.assertGreater(macs, 0.4 * base)
    for bad in (lambda: kslim.pruning.uniform_ratio_for_flops(graph, 1.0),
                lambda: kslim.pruning.ratios_for_flops(sens, 0.0),
                lambda: kslim.pruning.PruningCallback(1.5)):
      with self.assertRaisesRegex(ValueError, r"reduction must be in \(0, 1\)"):
        bad()


  def test_ratios_for_flops_give_back_channels_the_target_allows(self):
    # Equal curves move every group's ratio together: with 8-channel steps of 32, the
    # bisection alone jumps from 24 kept channels everywhere (0.56x MACs) to 16 (0.25x).
    inputs = keras.Input((8, 8, 2))
    x = inputs
    for i in range(4):
      x = L.ReLU()(L.BatchNormalization()(L.Conv2D(32, 3, padding="same", name=f"c{i}")(x)))
    model = keras.Model(inputs, L.Dense(3)(L.GlobalAveragePooling2D()(x)))
    graph = DependencyGraph(model)
    curve = {0.25: -1.0, 0.5: -2.0, 0.75: -3.0}
    sens = Sensitivity("four", "l1", 0.0, {f"c{i}": dict(curve) for i in range(4)}, graph)
    base = graph.macs()
    ratios = kslim.pruning.ratios_for_flops(sens, 0.5, align=8)
    removed = kslim.pruning.plan(graph, ratios, "l1", 8).removed
    macs = graph.macs(kslim.pruning.plan(graph, ratios, "l1", 8).roots())
    self.assertLessEqual(macs, 0.5 * base)
    self.assertGreater(macs, 0.4 * base)
    for name in removed:  # one more 8-channel step of any group breaks the target
      more = dict(ratios, **{name: (len(removed[name]) - 8) / 32})
      self.assertGreater(graph.macs(kslim.pruning.plan(graph, more, "l1", 8).roots()),
                         0.5 * base, name)


def _fine_tune(model):
  model.compile(keras.optimizers.Adam(1e-3),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  model.fit(_X, np.arange(16) % 3, epochs=1, verbose=0)
  return model


class IterativeTest(absltest.TestCase):

  def test_iterative_prune_reaches_the_target_and_resumes(self):
    model = _model()
    workdir = pathlib.Path(self.create_tempdir().full_path)
    base = kslim.profile(model).total_macs
    pruned = kslim.pruning.iterative_prune(model, _Fidelity(model), _fine_tune, 0.5, steps=2,
                                           ratios=(0.3, 0.6), workdir=workdir)
    self.assertLessEqual(kslim.profile(pruned).total_macs, 0.5 * base)
    self.assertTrue((workdir / "step1.keras").exists())
    self.assertTrue((workdir / "step2_sensitivity.png").exists())

    def no_training(model):
      raise AssertionError("finished steps must not be redone")

    again = kslim.pruning.iterative_prune(model, _Fidelity(model), no_training, 0.5, steps=2,
                                          ratios=(0.3, 0.6), workdir=workdir)
    np.testing.assert_allclose(again(_X).numpy(), pruned(_X).numpy(), atol=1e-6)

  def test_callback_prunes_softly_then_exactly(self):
    model = _model()
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = kslim.pruning.PruningCallback(0.5, criterion="fpgm")
    history = model.fit(_X, np.arange(16) % 3, epochs=3, verbose=0, callbacks=[callback])
    shares = history.history["pruned_macs_share"]
    self.assertLen(shares, 3)
    self.assertTrue(0.1 < shares[0] < shares[1] < shares[2])
    self.assertGreaterEqual(shares[2], 0.5)
    small = callback.pruned_model()
    np.testing.assert_allclose(small(_X).numpy(), model(_X).numpy(), atol=1e-5)
    self.assertLessEqual(kslim.profile(small).total_macs, 0.5 * kslim.profile(model).total_macs)


class SlimmingTest(absltest.TestCase):

  def test_penalty_is_l1_of_the_gammas(self):
    model = _model()
    slim = kslim.pruning.add_slimming_penalty(model, l1=1e-3)
    self.assertEmpty(model.losses)
    gammas = sum(np.abs(model.get_layer(f"bn{i}").gamma.numpy()).sum() for i in range(3))
    self.assertAlmostEqual(float(sum(slim.losses)), 1e-3 * gammas, places=5)
    np.testing.assert_allclose(slim(_X).numpy(), model(_X).numpy(), atol=1e-6)
    path = self.create_tempdir().full_path + "/slim.keras"
    slim.save(path)
    self.assertLen(keras.models.load_model(path).losses, 3)
    with self.assertRaisesRegex(ValueError, "l1 must be positive"):
      kslim.pruning.add_slimming_penalty(model, l1=0)


if __name__ == "__main__":
  absltest.main()
