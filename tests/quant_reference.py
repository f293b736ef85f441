"""Numpy references for the quantization tests."""

import numpy as np


def np_fake_quant(x, lo, hi, bits, narrow):
  """Numpy reference of TF's nudged fake quantization (see quant_ops' docstring)."""
  qmin, qmax = (1 if narrow else 0), 2**bits - 1
  scale = (hi - lo) / (qmax - qmin)
  zero_point = np.clip(np.round(qmin - lo / scale), qmin, qmax)
  nudged_lo, nudged_hi = (qmin - zero_point) * scale, (qmax - zero_point) * scale
  clipped = np.clip(x, nudged_lo, nudged_hi)
  return np.floor((clipped - nudged_lo) / scale + 0.5) * scale + nudged_lo
