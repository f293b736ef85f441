"""The fake-quantization math of kslim's quantizers, as pure TensorFlow functions.

Every function emits TensorFlow's ``FakeQuantWithMinMaxVars`` (or its per-channel form), the op
the TFLite converter reads quantization ranges from, so a trained model exports to int8 with
exactly the ranges it was trained with. Gradients are the op's registered ones: the
straight-through estimator for the input inside the (nudged) range, and for the range bounds
the sum of the upstream gradient over the inputs clipped to them — which is PACT's gradient
for its clipping level alpha (Choi et al., eq. 3).

The op "nudges" a range [min, max] so that 0.0 is exactly representable: with
``n = 2**bits - 1`` levels (``2**bits - 2`` with `narrow_range`), ``scale = (max - min) / n``,
the zero point ``round(qmin - min / scale)`` is clamped to the integer grid, and the range
shifts to ``[(qmin - zp) * scale, (qmax - zp) * scale]``. Symmetric ranges with `narrow_range`
(``[-b, b]`` on ``2**bits - 1`` levels) need no nudging; TFLite requires them for int8 weights.

References:
  Jacob et al., Quantization and Training of Neural Networks for Efficient
  Integer-Arithmetic-Only Inference, https://arxiv.org/abs/1712.05877
  Choi et al., PACT: Parameterized Clipping Activation for Quantized Neural Networks,
  https://arxiv.org/abs/1805.06085
"""

import contextlib
import threading

import tensorflow as tf

__all__ = ["MIN_BITS", "MAX_BITS", "check_num_bits", "fake_quant", "nudged_grid", "abs_max",
           "symmetric_fake_quant", "pact", "ema_update", "int8_container", "disabled",
           "weights_only", "is_weights_only"]

MIN_BITS, MAX_BITS = 2, 8
# Keeps a range away from zero width: an all-zero tensor would otherwise make scale 0.
_MIN_BOUND = 1e-8
_CLIPS = ("both", "upper", "none")


_state = threading.local()


@contextlib.contextmanager
def _setting(name):
  """Sets the thread-local flag `name` for the duration of a `with` block."""
  previous = getattr(_state, name, False)
  setattr(_state, name, True)
  try:
    yield
  finally:
    setattr(_state, name, previous)


def int8_container():
  """Within this context, grids below 8 bits are emitted as 8-bit grids TFLite can run.

  TFLite's kernels take int8 tensors only. A b-bit grid of step
  ``s = (max - min) / levels`` is exactly a subset of an 8-bit grid with the same step, so
  `fake_quant` quantizes on such an 8-bit grid instead:
  - weights (``clip="none"``: they never leave their range) on ``[-127 s, 127 s]``, then,
    on a symmetric narrow grid, once more on the finest 8-bit grid that still holds every
    b-bit level, ``[-127 f, 127 f]`` with ``f = s / (127 // levels)``. The values stay the
    b-bit ones, stored as int8 multiples of ``127 // levels`` (127 at 2 bits, 18 at 4).
    The fine step matters because TFLite quantizes a conv's bias with scale
    ``weight step * input step``: on the coarse step that rounding put about 14% of a
    2-bit-weight conv's outputs one step away from the Keras model's;
  - activations on the 8-bit grid whose top level is the b-bit range's top,
    ``[max - 255 s, max]``: int8 saturation at 127 is then the upper clip, and the op before
    (conv, add, ...) writes b-bit values directly with no extra op. Where the tensor can also
    fall below the range (``clip="both"``: signed tensors, free ranges), a clip at `min`
    (one int8 MAXIMUM) follows, quantized again on the same grid. Non-negative tensors with
    ranges [0, max] (``clip="upper"``, e.g. after a ReLU) need nothing more.
  The converted file stores every tensor as int8 values restricted to the b-bit levels.
  kslim.convert enters this context.
  """
  return _setting("container")


def disabled():
  """Within this context, `fake_quant` returns its input: a QAT model traced here computes the
  float model it was made from (BatchNorm folded). Post-training calibration collects the
  float activations at every quantization point this way."""
  return _setting("disabled")


def weights_only():
  """Within this context, `fake_quant` quantizes weights with plain arithmetic and passes
  activations through: a QAT model traced here is a float model whose kernels hold their
  quantized values, which the converter folds into float constants (no fake-quant op is left).
  TFLite's calibrating quantizer then finds every kernel already on its int8 grid; kslim.convert
  goes this way for the ops the fake-quant path cannot reach (see `kslim.conversion.pinned`).
  Weights are the tensors quantized with ``clip="none"``.
  """
  return _setting("weights_only")


def is_weights_only():
  """Whether a `weights_only` context is active (layers that change what they compute there,
  like `QuantizedLSTM`, ask)."""
  return getattr(_state, "weights_only", False)


def nudged_grid(min_value, max_value, num_bits=8, narrow_range=False):
  """The grid ``FakeQuantWithMinMaxVars`` puts [min, max] on: ``(scale, nudged_min,
  nudged_max)`` as in the module docstring (TensorFlow's `Nudge`, zero point rounded half
  away from zero). Works on tensors and numpy values alike."""
  quant_min = 1.0 if narrow_range else 0.0
  quant_max = 2.0 ** num_bits - 1.0
  scale = (max_value - min_value) / (quant_max - quant_min)
  zero_from_min = quant_min - min_value / scale
  zero = tf.clip_by_value(tf.sign(zero_from_min) * tf.floor(tf.abs(zero_from_min) + 0.5),
                          quant_min, quant_max)
  return scale, (quant_min - zero) * scale, (quant_max - zero) * scale


def _arithmetic_fake_quant(x, min_value, max_value, num_bits, narrow_range):
  """`FakeQuantWithMinMaxVars` (per tensor or per last axis) as ops the converter folds."""
  scale, low, high = nudged_grid(min_value, max_value, num_bits, narrow_range)
  return tf.floor((tf.clip_by_value(x, low, high) - low) / scale + 0.5) * scale + low


def check_num_bits(num_bits):
  """Returns `num_bits` if it is an int in [2, 8]; raises a ValueError naming it otherwise."""
  if isinstance(num_bits, bool) or not isinstance(num_bits, int) or not (
      MIN_BITS <= num_bits <= MAX_BITS):
    raise ValueError(f"num_bits must be an integer from {MIN_BITS} to {MAX_BITS}, got "
                     f"{num_bits!r}")
  return num_bits


def fake_quant(x, min_value, max_value, num_bits=8, narrow_range=False, per_channel=False,
               clip="both"):
  """Quantizes `x` to a `num_bits` uniform grid over [min, max] and back to float.

  Args:
    x: a float tensor.
    min_value: lower bound: a scalar, or a vector over the last axis with `per_channel`.
    max_value: upper bound, shaped like `min_value`.
    num_bits: 2 to 8.
    narrow_range: use ``2**bits - 1`` levels (drops the lowest), as TFLite's int8 weights do.
    per_channel: `min_value`/`max_value` hold one range per slice along the last axis.
    clip: which sides of [min, max] `x` can cross, for the 8-bit grid of an
      `int8_container`: "both", "upper" (`x` is never below `min_value`, e.g. a ReLU output
      on [0, max]) or "none" (weights quantized over their own abs max).

  Returns:
    A tensor like `x`, on the nudged grid described in the module docstring.
  """
  check_num_bits(num_bits)
  if getattr(_state, "disabled", False):
    return tf.identity(x)
  if clip not in _CLIPS:
    raise ValueError(f"clip must be one of {_CLIPS}, got {clip!r}")
  if is_weights_only():
    return (_arithmetic_fake_quant(x, min_value, max_value, num_bits, narrow_range)
            if clip == "none" else tf.identity(x))
  op = (tf.quantization.fake_quant_with_min_max_vars_per_channel if per_channel
        else tf.quantization.fake_quant_with_min_max_vars)
  if num_bits < MAX_BITS and getattr(_state, "container", False):
    step = (max_value - min_value) / (2 ** num_bits - 1 - int(narrow_range))
    if clip == "none" and narrow_range:
      coarse = op(x, -127.0 * step, 127.0 * step, num_bits=MAX_BITS, narrow_range=True)
      fine = step / float(127 // (2 ** (num_bits - 1) - 1))
      return op(coarse, -127.0 * fine, 127.0 * fine, num_bits=MAX_BITS, narrow_range=True)
    if clip == "none":
      return op(x, min_value, min_value + 255.0 * step, num_bits=MAX_BITS)
    low, high = max_value - 255.0 * step, max_value
    y = op(x, low, high, num_bits=MAX_BITS)
    if clip == "upper":
      return y
    return op(tf.maximum(y, min_value), low, high, num_bits=MAX_BITS)
  return op(x, min_value, max_value, num_bits=num_bits, narrow_range=narrow_range)


def abs_max(x, per_channel=False):
  """max |x| over the whole tensor, or over all but the last axis with `per_channel`."""
  axes = list(range(x.shape.rank - 1)) if per_channel else None
  return tf.reduce_max(tf.abs(x), axis=axes)


def symmetric_fake_quant(x, bound, num_bits=8, per_channel=False, clip="both"):
  """Fake-quantizes `x` on the symmetric narrow grid over [-bound, bound].

  The bound is a statistic of the data (abs max, a moving average of it), not a learned
  parameter, so no gradient flows into it; `x` gets the straight-through estimator.
  """
  bound = tf.maximum(tf.stop_gradient(bound), _MIN_BOUND)
  return fake_quant(x, -bound, bound, num_bits, narrow_range=True, per_channel=per_channel,
                    clip=clip)


def pact(x, alpha, num_bits=8, signed=False):
  """PACT: clips `x` at a learnable level `alpha`, then quantizes uniformly.

  ``y = quant(clip(x, 0, alpha))`` (the paper's activation, which replaces ReLU), or with
  `signed` ``quant(clip(x, -alpha, alpha))`` on the symmetric narrow grid (PaddleSlim's form,
  for activations that can be negative). Gradients: ``dy/dx = 1`` inside the range, else 0;
  ``dy/dalpha = 1`` where ``x > alpha``, and ``-1`` where ``x < -alpha`` when signed.

  Args:
    x: activations.
    alpha: the clipping level, a positive scalar variable.
    num_bits: 2 to 8.
    signed: clip to [-alpha, alpha] instead of [0, alpha].

  Returns:
    The quantized activations.
  """
  alpha = tf.maximum(alpha, _MIN_BOUND)
  lower = -alpha if signed else tf.zeros_like(alpha)
  return fake_quant(x, lower, alpha, num_bits, narrow_range=signed,
                    clip="both" if signed else "upper")


def mse_clip(x, num_bits=8, signed=False, candidates=32):
  """The clip level whose `pact` quantization of `x` is closest to `x` (least mean squared
  error), searched over ``max|x| * k / candidates`` for ``k = 1 .. candidates``.

  At low bit widths the best clip is well below max |x|: a few outliers stretch the grid and
  every other value loses precision. PACT starts from this level.

  Args:
    x: a float tensor (a batch of activations).
    num_bits: the grid's bit width, 2 to 8.
    signed: as in `pact`.
    candidates: how many levels are tried.

  Returns:
    A scalar tensor: the best level (max |x| itself when nothing beats it).
  """
  x = tf.stop_gradient(x)
  levels = (tf.maximum(abs_max(x), _MIN_BOUND)
            * tf.range(1, candidates + 1, dtype=x.dtype) / candidates)
  errors = tf.map_fn(lambda level: tf.reduce_mean(tf.square(pact(x, level, num_bits, signed)
                                                            - x)), levels)
  return tf.gather(levels, tf.argmin(errors))


def mse_bound(w, num_bits=8, candidates=32):
  """Per-channel (last axis) symmetric bound with the least squared quantization error,
  searched over ``max|w| * k / candidates`` for ``k = candidates/2 .. candidates``.

  Args:
    w: a kernel, output channels last.
    num_bits: the grid's bit width, 2 to 8 (narrow symmetric grid, as TFLite's weights).
    candidates: grid of fractions of each channel's max |w|; the upper half is searched.

  Returns:
    A vector: one bound per channel.
  """
  w = tf.stop_gradient(w)
  top = tf.maximum(abs_max(w, per_channel=True), _MIN_BOUND)
  fractions = tf.range(candidates // 2, candidates + 1, dtype=w.dtype) / candidates
  bounds = fractions[:, None] * top[None, :]  # (fractions, channels)
  levels = 2.0 ** (num_bits - 1) - 1.0
  scale = tf.reshape(bounds / levels, [-1] + [1] * (w.shape.rank - 1) + [w.shape[-1]])
  error = tf.square(tf.clip_by_value(tf.round(w[None] / scale), -levels, levels) * scale
                    - w[None])
  per_bound = tf.reduce_mean(error, axis=list(range(1, w.shape.rank)))
  best = tf.argmin(per_bound, axis=0)  # per channel
  return tf.gather(tf.transpose(bounds), best, batch_dims=1)


def ema_update(variable, value, decay):
  """``variable <- decay * variable + (1 - decay) * value``; returns the assign op's value."""
  return variable.assign(decay * variable + (1.0 - decay) * tf.cast(value, variable.dtype))
