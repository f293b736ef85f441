"""Histograms and the ranges kslim's calibrators choose from them, against numpy."""

import numpy as np
from absl.testing import absltest, parameterized

from kslim.conversion import calibration
from tests.quant_reference import np_fake_quant


def _quantization_mse(values, low, high):
  return float(np.mean((values - np_fake_quant(values, low, high, 8, narrow=False)) ** 2))


class HistogramTest(absltest.TestCase):

  def test_one_pass_over_growing_batches_counts_every_value_in_its_bin(self):
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=5000) * scale for scale in (0.01, 1.0, 30.0, 2.0)]
    histogram = calibration.Histogram(bins=1024)
    for batch in batches:
      histogram.update(batch)
    values = np.concatenate(batches)
    self.assertEqual((histogram.min, histogram.max), (values.min(), values.max()))
    self.assertLessEqual(len(histogram.counts), 1024)
    self.assertGreater(len(histogram.counts), 512)  # the width doubled only as needed
    # The same counts as numpy's histogram over the same (power-of-two) edges.
    expected, _ = np.histogram(values, bins=histogram.edges)
    np.testing.assert_array_equal(histogram.counts, expected)

  def test_bad_values(self):
    with self.assertRaisesRegex(ValueError, "NaN or infinity"):
      calibration.Histogram().update(np.array([1.0, np.nan]))


class ChooseRangeTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    # Heavy-tailed (Laplace) activations, signed and after a ReLU: the max lies far out.
    rng = np.random.default_rng(1)
    cls.signed = rng.laplace(size=200_000)
    cls.relu = np.maximum(rng.laplace(size=200_000), 0)

  def _histogram(self, values):
    histogram = calibration.Histogram()
    histogram.update(values)
    return histogram

  def test_minmax_is_the_data_range_and_percentile_matches_numpy(self):
    histogram = self._histogram(self.signed)
    self.assertEqual(calibration.choose_range(histogram, "minmax", True),
                     (self.signed.min(), self.signed.max()))
    low, high = calibration.choose_range(histogram, "percentile", True, percentile=99.9)
    want_low, want_high = np.percentile(self.signed, [0.1, 99.9])
    self.assertAlmostEqual(low, want_low, delta=2 * histogram.width)
    self.assertAlmostEqual(high, want_high, delta=2 * histogram.width)

  @parameterized.product(method=["percentile", "kl", "mse"], data=["signed", "relu"])
  def test_calibrators_clip_the_tail_and_quantize_typical_values_finer(self, method, data):
    values = getattr(self, data)
    histogram = self._histogram(values)
    low, high = calibration.choose_range(histogram, method, signed=data == "signed")
    full_low, full_high = calibration.choose_range(histogram, "minmax", data == "signed")
    self.assertLessEqual(low, 0.0)
    self.assertGreaterEqual(high, 0.0)
    self.assertLess(high - low, 0.9 * (full_high - full_low))
    if data == "relu":
      self.assertEqual(low, 0.0)
    # The central 99.9% of the values (what a model mostly sees) get a smaller error.
    bulk = values[np.abs(values) <= np.percentile(np.abs(values), 99.9)]
    self.assertLess(_quantization_mse(bulk, low, high),
                    0.9 * _quantization_mse(bulk, full_low, full_high))

  @parameterized.parameters("signed", "relu")
  def test_mse_lowers_the_error_over_all_values_near_a_brute_force_best(self, data):
    values = getattr(self, data)
    histogram = self._histogram(values)
    low, high = calibration.choose_range(histogram, "mse", signed=data == "signed")
    error = _quantization_mse(values, low, high)
    self.assertLess(error, _quantization_mse(values, values.min(), values.max()))
    scales = np.linspace(0.3, 1.0, 141)
    best = min(_quantization_mse(values, s * values.min(), s * values.max()) for s in scales)
    self.assertLess(error, 1.1 * best)

  def test_unknown_method(self):
    with self.assertRaisesRegex(ValueError, "unknown calibration 'entropy'; choose one of"):
      calibration.Calibration.parse("entropy", "calibration")


if __name__ == "__main__":
  absltest.main()
