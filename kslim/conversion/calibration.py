"""Post-training calibration: activation histograms and the ranges chosen from them.

TFLite's own calibration (``minmax``) takes each activation's min and max over the
representative data, so one outlier stretches the range and coarsens the grid for every other
value. kslim's calibrators collect a histogram of every quantized activation in one pass and
choose a tighter range from it:

- ``percentile``: the [100 - p, p] percentiles (p = 99.99 by default).
- ``kl``: the threshold minimizing the KL divergence between the activation distribution and
  its quantized version (TensorRT's entropy calibration; Migacz, 2017).
- ``mse``: the range minimizing the expected squared error, clipping error outside plus
  ``step**2 / 12`` rounding error inside (as in Banner et al., 2019, and NNCF/OpenVINO).

The model's input and ReLU6 outputs keep their min/max range whatever the method (see
`_keeps_full_range`). The chosen ranges are set on a `kslim.quantize` model built with ``moving_average_min_max``
activation quantizers (BatchNorm folded with its moving statistics), which the converter then
turns into int8 exactly as it does a QAT model: TFLite honours the ranges because they are the
model's own fake-quant ranges.

References:
  Migacz, 8-bit Inference with TensorRT, GTC 2017.
  Banner et al., Post-training 4-bit quantization of convolution networks for
  rapid-deployment, https://arxiv.org/abs/1810.05723
"""

import math

import numpy as np
import tensorflow as tf
import tqdm

from kslim._enum import Choice
from kslim._keras import keras
from kslim.quantization import quant_ops
from kslim.quantization import quantizers
from kslim.quantization import registry
from kslim.quantization.config import QuantConfig
from kslim.quantization.quantize import activation_quantizers
from kslim.quantization.quantize import input_quantizer
from kslim.quantization.quantize import quantize

__all__ = ["Calibration", "Histogram", "choose_range", "calibrate", "collect_histograms",
           "probe", "DEFAULT_PERCENTILE"]

DEFAULT_PERCENTILE = 99.99
_LEVELS = 256  # int8


class Calibration(Choice):
  """How activation ranges are chosen for post-training int8 conversion."""
  MINMAX = "minmax"
  PERCENTILE = "percentile"
  KL = "kl"
  MSE = "mse"


class Histogram:
  """A histogram of every value seen, built in one pass over batches of any range.

  Bins have a power-of-two width ``w`` and edges at multiples of ``w``. When a batch falls
  outside the bins there is room for, the width doubles and neighbouring bins merge exactly
  (bin ``k`` goes to bin ``k // 2``), so the histogram never needs a second pass or an
  interpolation, and always spans its data with between `bins` / 2 and `bins` bins.

  Args:
    bins: the most bins kept.

  Example:
    >>> h = Histogram()
    >>> h.update(np.array([0.0, 1.0, 3.0]))
    >>> h.min, h.max, h.counts.sum()
    (0.0, 3.0, 3)
  """

  def __init__(self, bins=16384):
    self.bins = int(bins)
    self.width = None
    self.first = 0  # the index k of the first bin [k w, (k + 1) w)
    self.counts = np.zeros(0, np.int64)
    self.min, self.max = math.inf, -math.inf

  @property
  def edges(self):
    """The ``len(counts) + 1`` bin edges."""
    return (self.first + np.arange(len(self.counts) + 1)) * self.width

  def update(self, values):
    """Adds `values` (any shape); raises ValueError on NaN or infinite values."""
    values = np.asarray(values, np.float64).ravel()
    if values.size == 0:
      return
    low, high = values.min(), values.max()
    if not (np.isfinite(low) and np.isfinite(high)):
      raise ValueError("activation values include NaN or infinity")
    self.min, self.max = min(self.min, float(low)), max(self.max, float(high))
    if self.width is None:
      span = max(self.max - self.min, 1e-12)
      self.width = 2.0 ** math.ceil(math.log2(span / (self.bins // 2)))
      self.first = math.floor(self.min / self.width)
    first = min(self.first, math.floor(self.min / self.width))
    last = max(self.first + len(self.counts) - 1, math.floor(self.max / self.width))
    while last - first + 1 > self.bins:
      self._merge_pairs()
      first, last = math.floor(first / 2), math.floor(last / 2)
    counts = np.zeros(last - first + 1, np.int64)
    counts[self.first - first:self.first - first + len(self.counts)] = self.counts
    index = np.floor(values / self.width).astype(np.int64) - first
    counts += np.bincount(np.clip(index, 0, len(counts) - 1), minlength=len(counts))
    self.first, self.counts = first, counts

  def _merge_pairs(self):
    index = (self.first + np.arange(len(self.counts))) // 2
    merged_first = index[0] if len(index) else self.first // 2
    self.counts = np.bincount(index - merged_first, weights=self.counts).astype(np.int64)
    self.first, self.width = int(merged_first), self.width * 2


def calibrate(model, examples, method, per_channel=True, percentile=DEFAULT_PERCENTILE,
              batch_size=64):
  """The fake-quant twin of float `model` with activation ranges calibrated on `examples`.

  Args:
    model: a float tf_keras model.
    examples: float32 input examples (see `representative_data.examples`).
    method: a `Calibration`.
    per_channel: quantize kernels per output channel (else one range per kernel).
    percentile: p for ``percentile``.
    batch_size: examples per forward pass.

  Returns:
    A `kslim.quantize` model (BatchNorm folded with its moving statistics, weights quantized
    like TFLite's post-training quantization) whose ranges are fixed; convert it with
    ``kslim.convert(..., mode="int8")``.
  """
  config = QuantConfig(weight_quantizer="channel_wise_abs_max" if per_channel else "abs_max",
                       activation_quantizer="moving_average_min_max", batch_norm="freeze")
  qat = quantize(model, config)
  layers = [layer for layer in activation_quantizers(qat)
            if isinstance(layer.quantizer, quantizers.MovingAverageMinMax)]
  histograms = collect_histograms(qat, layers, examples, batch_size)
  for layer, histogram in zip(layers, histograms):
    keep = _keeps_full_range(qat, layer)
    layer.set_range(*choose_range(histogram, Calibration.MINMAX if keep else method,
                                  layer.quantizer.signed, percentile))
  return qat


def _keeps_full_range(qat, layer):
  """Whether `layer` quantizes the model input or a ReLU6 output, which keep min/max ranges.

  Clipping the data users feed (an image's bright pixels) loses what no layer can recover; a
  ReLU6 output piles up at 6, and clipping that spike (as KL does, since the spike looks like
  a tail) maps every saturated value to a much smaller one.
  """
  if any(input_quantizer(qat, tensor) is layer for tensor in qat.inputs):
    return True
  producers = tf.nest.flatten([node.inbound_layers for node in layer.inbound_nodes])
  # A wrapped layer (QuantizeWrapper) applies the activation of the layer it holds.
  return any(registry.activation_name(getattr(p, "layer", p)) == "relu6" for p in producers)


def collect_histograms(qat, layers, examples, batch_size=64):
  """One pass over `examples`: a `Histogram` per layer of the float values it quantizes.

  A layer called on several tensors (a shared range) gets one histogram of all of them.
  """
  tensors, owners = [], []
  for index, layer in enumerate(layers):
    for node in range(len(layer.inbound_nodes)):
      tensors.append(layer.quantized_tensor(node))
      owners.append(index)
  histograms = [Histogram() for _ in layers]
  with quant_ops.disabled():  # the float activations, traced without fake-quant ops
    for outputs in probe(qat, tensors, examples, batch_size, desc="calibrating"):
      for owner, values in zip(owners, outputs):
        try:
          histograms[owner].update(values)
        except ValueError as error:
          raise ValueError(f"kslim.convert: layer {layers[owner].name!r}: {error}") from None
  return histograms


def probe(model, tensors, examples, batch_size=64, desc=None):
  """Yields, batch by batch over `examples`, the values of `tensors` (KerasTensors of
  `model`'s graph) as a list of numpy arrays.

  The probe model is traced on the first batch, so a caller inside `quant_ops.disabled()`
  gets float values. `desc` shows a progress bar with that label.
  """
  probe_model = keras.Model(model.inputs, tensors)
  for start in tqdm.trange(0, len(examples), batch_size, desc=desc, unit="batch", leave=False,
                           disable=None if desc else True):
    outputs = probe_model.predict_on_batch(examples[start:start + batch_size])
    yield outputs if len(tensors) > 1 else [outputs]


def choose_range(histogram, method, signed, percentile=DEFAULT_PERCENTILE):
  """The ``(low, high)`` range `method` picks for the values `histogram` holds.

  Args:
    histogram: a `Histogram` with data.
    method: a `Calibration` (or its value).
    signed: whether the tensor can be negative (from the graph); KL then picks a symmetric
      threshold over 128 levels a side (cut to the data's min and max), else ``[0, T]`` over
      256 levels.
    percentile: p for ``percentile``, in (50, 100].

  Returns:
    Floats ``low <= 0 <= high``.
  """
  method = Calibration(method)
  if method is Calibration.MINMAX:
    low, high = histogram.min, histogram.max
  elif method is Calibration.PERCENTILE:
    low, high = _quantiles(histogram, [1 - percentile / 100, percentile / 100])
  elif method is Calibration.MSE:
    low, high = _mse_range(histogram)
  else:
    signed = signed and histogram.min < 0  # data that never went negative uses [0, T]
    threshold = _kl_threshold(histogram, _LEVELS // 2 if signed else _LEVELS)
    low, high = (-threshold if signed else 0.0), threshold
  # Never wider than the data (a symmetric KL range on one-sided data would waste levels),
  # and always holding 0, which TFLite requires to be exact.
  low = min(max(float(low), histogram.min), 0.0)
  high = max(min(float(high), histogram.max), 0.0)
  return low, max(high, low + 1e-8)


def _quantiles(histogram, fractions):
  """Values below which the given fractions of the data lie (linear within a bin)."""
  cumulative = np.concatenate([[0], np.cumsum(histogram.counts)]) / histogram.counts.sum()
  values = np.interp(fractions, cumulative, histogram.edges)
  return np.clip(values, histogram.min, histogram.max)


def _mse_range(histogram, candidates=200, rounds=3):
  """Coordinate descent on (low, high) over the expected squared quantization error."""
  centers = (histogram.edges[:-1] + histogram.edges[1:]) / 2
  counts = histogram.counts.astype(np.float64)

  def error(lows, highs):
    lows, highs = np.broadcast_arrays(np.asarray(lows, float), np.asarray(highs, float))
    step = (highs - lows)[:, None] / (_LEVELS - 1)
    below = np.minimum(centers[None] - lows[:, None], 0.0)
    above = np.maximum(centers[None] - highs[:, None], 0.0)
    inside = (below == 0) & (above == 0)
    return ((below ** 2 + above ** 2 + inside * step ** 2 / 12) * counts).sum(axis=1)

  low, high = min(histogram.min, 0.0), max(histogram.max, 0.0)
  for _ in range(rounds):
    if high > 0:
      options = np.linspace(high / candidates, high, candidates)
      high = options[np.argmin(error(low, options))]
    if low < 0:
      options = np.linspace(low, low / candidates, candidates)
      low = options[np.argmin(error(options, high))]
  return low, high


def _kl_threshold(histogram, levels, max_bins=2048):
  """TensorRT's entropy calibration on the histogram of |x|.

  For each candidate threshold T (a bin edge), P is the histogram clipped at T (the outliers
  added to its last bin) and Q is P merged into `levels` bins and spread back uniformly over
  the non-empty bins each merged bin came from; T minimizes KL(P || Q). The first bin (zeros,
  mostly, after a ReLU) is left out, as in TensorRT-style implementations: its spike would
  otherwise dominate both distributions and pull T towards 0.
  """
  counts = _abs_counts(histogram)
  counts[0] = 0
  width = histogram.width
  while len(counts) > max_bins:
    counts = np.add.reduceat(counts, np.arange(0, len(counts), 2))
    width *= 2
  if len(counts) <= levels:
    return len(counts) * width
  best, best_divergence = len(counts), math.inf
  for size in range(levels, len(counts) + 1, max(1, (len(counts) - levels) // 512)):
    p = counts[:size].astype(np.float64)
    p[-1] += counts[size:].sum()
    q = _quantize_distribution(counts[:size].astype(np.float64), levels)
    divergence = _kl(p, q)
    if divergence < best_divergence:
      best, best_divergence = size, divergence
  return best * width


def _abs_counts(histogram):
  """Counts of |x| on bins [k w, (k + 1) w), k >= 0: negative bin k folds onto bin -k - 1."""
  index = histogram.first + np.arange(len(histogram.counts))
  folded = np.where(index < 0, -index - 1, index)
  return np.bincount(folded, weights=histogram.counts)


def _quantize_distribution(p, levels):
  """P merged into `levels` bins, each spread evenly over its source bins that are non-empty."""
  starts = np.linspace(0, len(p), levels + 1).astype(int)[:-1]
  nonzero = p > 0
  totals = np.add.reduceat(p, starts)
  occupied = np.add.reduceat(nonzero.astype(np.float64), starts)
  per_bin = np.divide(totals, occupied, out=np.zeros_like(totals), where=occupied > 0)
  return np.repeat(per_bin, np.diff(np.append(starts, len(p)))) * nonzero


def _kl(p, q):
  p, q = p / p.sum(), q / max(q.sum(), 1e-12)
  mask = p > 0
  return float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))
