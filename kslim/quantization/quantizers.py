"""kslim's quantizers: PaddleSlim's quantizer family as tfmot `Quantizer`s.

A quantizer turns a float tensor into its fake-quantized twin (the math is in `quant_ops`).
Following tfmot's `Quantizer` contract, its state (running ranges, PACT's alpha) is created in
`build` on the layer that owns the tensor, so it is saved, restored and distributed with that
layer; the quantizer object itself holds only its settings and serializes through `get_config`.

Weight quantizers are stateless: the range is the weights' current abs max, recomputed at
every call, so the exported model uses exactly the final weights' range (the converter folds
the computation into constants). Activation quantizers keep a range learned in training and
use it unchanged at inference.

==========================  ===========  =========================================================
name                        role         range
==========================  ===========  =========================================================
``abs_max``                 weights      max |w| over the tensor (`AbsMax`)
``channel_wise_abs_max``    weights      max |w| per output channel (`ChannelWiseAbsMax`)
``abs_max``                 activations  largest batch max |x| seen in training (`RunningAbsMax`)
``moving_average_abs_max``  activations  bias-corrected EMA of the batch max |x| (`MovingAverageAbsMax`)
``moving_average_min_max``  activations  bias-corrected EMAs of the batch min and max (`MovingAverageMinMax`)
``pact``                    activations  learned clipping level alpha (`PACT`)
==========================  ===========  =========================================================

Example:
  >>> q = ChannelWiseAbsMax(num_bits=4)
  >>> q.get_config()
  {'num_bits': 4, 'depthwise': False}
"""

import enum

import tensorflow as tf
import tensorflow_model_optimization as tfmot

from kslim._keras import keras
from kslim.quantization import quant_ops

__all__ = ["Role", "ConfigEquality", "Quantizer", "AbsMax", "ChannelWiseAbsMax", "RunningAbsMax",
           "MovingAverageAbsMax", "MovingAverageMinMax", "PACT", "FixedRange", "get", "names"]

_register = keras.utils.register_keras_serializable(package="kslim")


class Role(str, enum.Enum):
  """What a quantizer is applied to."""
  WEIGHTS = "weights"
  ACTIVATIONS = "activations"


class ConfigEquality:
  """Mixin: two objects are equal when they are of one type with equal `get_config()`."""

  def __eq__(self, other):
    return type(self) is type(other) and self.get_config() == other.get_config()

  def __ne__(self, other):
    return not self == other


class Quantizer(ConfigEquality, tfmot.quantization.keras.quantizers.Quantizer):
  """Base class: bit width, config round trip and equality derived from the config.

  Args:
    num_bits: 2 to 8.
  """

  role = None  # a Role, set by each concrete class

  def __init__(self, num_bits=8):
    self.num_bits = quant_ops.check_num_bits(num_bits)

  def build(self, tensor_shape, name, layer):
    del tensor_shape, name, layer  # stateless by default
    return {}

  def get_config(self):
    return {"num_bits": self.num_bits}

  def __hash__(self):
    return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))

  def __repr__(self):
    args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
    return f"{type(self).__name__}({args})"


@_register
class AbsMax(Quantizer):
  """Per-tensor symmetric weight quantizer: range ``[-max|w|, max|w|]`` on the narrow grid."""

  role = Role.WEIGHTS

  def __call__(self, inputs, training, weights, **kwargs):
    del training, weights, kwargs
    return quant_ops.symmetric_fake_quant(inputs, quant_ops.abs_max(inputs), self.num_bits,
                                         clip="none")


@_register
class ChannelWiseAbsMax(Quantizer):
  """Per-output-channel symmetric weight quantizer (TFLite's per-axis int8 weights).

  Channels are the kernel's last axis (Conv1D/Conv2D/Dense). For a DepthwiseConv2D kernel
  ``(h, w, in, multiplier)`` TFLite's output channels are ``in * multiplier``, so with
  `depthwise` the last two axes are merged before taking per-channel ranges.

  Args:
    num_bits: 2 to 8.
    depthwise: the kernel is a depthwise kernel.
  """

  role = Role.WEIGHTS
  clips = False  # the range covers every weight: nothing to clip

  def __init__(self, num_bits=8, depthwise=False):
    super().__init__(num_bits)
    self.depthwise = bool(depthwise)

  def __call__(self, inputs, training, weights, **kwargs):
    del kwargs
    shape = inputs.shape
    flat = tf.reshape(inputs, shape[:-2] + [shape[-2] * shape[-1]]) if self.depthwise else inputs
    bound = self.bound(flat, training, weights)
    if self.clips:  # clip in float first: the fake-quant then sees only in-range weights
      flat = tf.clip_by_value(flat, -bound, bound)
    quantized = quant_ops.symmetric_fake_quant(flat, bound, self.num_bits, per_channel=True,
                                               clip="none")
    return tf.reshape(quantized, shape) if self.depthwise else quantized

  def bound(self, flat, training, weights):
    """Per-channel range ``[-bound, bound]`` of the kernel `flat` (channels last)."""
    del training, weights
    return quant_ops.abs_max(flat, per_channel=True)

  def get_config(self):
    return {**super().get_config(), "depthwise": self.depthwise}


@_register
class ChannelWiseMSE(ChannelWiseAbsMax):
  """Per-output-channel symmetric weight quantizer whose range minimises each channel's
  squared quantization error (searched over fractions of its max |w| at every training step).

  At 2-4 bits the largest weight of a channel stretches its grid over values most weights never
  reach; clipping it costs less than the coarser grid does. At 8 bits the search usually keeps
  the max. The chosen ranges are stored (non-trainable), so inference and the int8 file use
  the ranges of the last training step; before any training step they are the abs max. Same
  arguments as `ChannelWiseAbsMax`.
  """

  clips = True

  def build(self, tensor_shape, name, layer):
    channels = tensor_shape[-2] * tensor_shape[-1] if self.depthwise else tensor_shape[-1]
    return {"bound": layer.add_weight(f"{name}_bound", shape=(channels,),
                                      initializer=keras.initializers.Zeros(), trainable=False,
                                      aggregation=tf.VariableAggregation.MEAN)}

  def bound(self, flat, training, weights):
    stored = weights["bound"]
    if training:
      return stored.assign(quant_ops.mse_bound(flat, self.num_bits))
    return tf.where(stored > 0, stored, quant_ops.abs_max(flat, per_channel=True))


class _ActivationQuantizer(Quantizer):
  """Activation quantizers: a stored range, symmetric or (for non-negative tensors) [0, max].

  Args:
    num_bits: 2 to 8.
    signed: the tensor can be negative: quantize on ``[-r, r]`` (narrow grid) instead of
      ``[0, r]``. kslim.quantize sets it from the graph (e.g. False after a ReLU).
  """

  role = Role.ACTIVATIONS

  def __init__(self, num_bits=8, signed=True):
    super().__init__(num_bits)
    self.signed = bool(signed)

  def get_config(self):
    return {**super().get_config(), "signed": self.signed}

  def _quantize(self, x, bound):
    if self.signed:
      return quant_ops.symmetric_fake_quant(x, bound, self.num_bits)
    bound = tf.maximum(tf.stop_gradient(bound), 1e-8)
    return quant_ops.fake_quant(x, tf.zeros_like(bound), bound, self.num_bits, clip="upper")

  def range(self, weights):
    """The (min, max) this quantizer uses at inference, from its state."""
    bound = self._bound(weights)
    return (-bound if self.signed else tf.zeros_like(bound)), bound

  @property
  def narrow_range(self):
    """Whether the grid drops its lowest level (symmetric ranges do)."""
    return self.signed

  def _bound(self, weights):
    raise NotImplementedError


def _statistic(layer, name, initial=0.0):
  # MEAN aggregation lets replicas update the variable under tf.distribute strategies.
  return layer.add_weight(name, shape=(), initializer=keras.initializers.Constant(initial),
                          trainable=False, aggregation=tf.VariableAggregation.MEAN)


def _ema_decay(decay):
  if not 0.0 <= decay < 1.0:
    raise ValueError(f"decay must be in [0, 1), got {decay!r}")
  return float(decay)


@_register
class RunningAbsMax(_ActivationQuantizer):
  """``abs_max`` for activations: the largest batch max |x| seen in training.

  Training quantizes each batch with the running maximum including that batch; inference uses
  the stored maximum (a fixed range, as a deployed int8 model needs).
  """

  def build(self, tensor_shape, name, layer):
    return {"max": _statistic(layer, f"{name}_max")}

  def __call__(self, inputs, training, weights, **kwargs):
    if training:
      batch = tf.cast(quant_ops.abs_max(inputs), weights["max"].dtype)
      weights["max"].assign(tf.maximum(weights["max"], tf.stop_gradient(batch)))
    return self._quantize(inputs, weights["max"])

  def _bound(self, weights):
    return weights["max"]


@_register
class MovingAverageAbsMax(_ActivationQuantizer):
  """``moving_average_abs_max``: an exponential moving average of the batch max |x|.

  As in PaddleSlim, the average is bias-corrected: ``accum <- d * accum + m`` and
  ``state <- d * state + 1``, the range being ``accum / state``, so the very first batch
  already gets its own max instead of a range decayed towards zero. Updated only in training.

  Args:
    num_bits: 2 to 8.
    signed: see `_ActivationQuantizer`.
    decay: the EMA decay d, in [0, 1).
  """

  def __init__(self, num_bits=8, signed=True, decay=0.9):
    super().__init__(num_bits, signed)
    self.decay = _ema_decay(decay)

  def build(self, tensor_shape, name, layer):
    return {"accum": _statistic(layer, f"{name}_accum"),
            "state": _statistic(layer, f"{name}_state")}

  def __call__(self, inputs, training, weights, **kwargs):
    if training:
      batch = tf.stop_gradient(tf.cast(quant_ops.abs_max(inputs), weights["accum"].dtype))
      weights["accum"].assign(self.decay * weights["accum"] + batch)
      weights["state"].assign(self.decay * weights["state"] + 1.0)
    return self._quantize(inputs, self._bound(weights))

  def _bound(self, weights):
    return tf.math.divide_no_nan(weights["accum"], weights["state"])

  def get_config(self):
    return {**super().get_config(), "decay": self.decay}


@_register
class MovingAverageMinMax(_ActivationQuantizer):
  """``moving_average_min_max``: an asymmetric range ``[min, max]``, as TFLite stores int8
  activations and tfmot's default QAT scheme tracks them.

  Training keeps bias-corrected EMAs of the batch min and max (as `MovingAverageAbsMax`); the
  range always includes 0. Post-training calibration sets the range directly (`set_range`),
  which is how kslim's percentile/KL/MSE calibrators reach the converter.

  Args:
    num_bits: 2 to 8.
    signed: unused by the grid (the range decides); kept for the common signature.
    decay: the EMA decay, in [0, 1).

  Example:
    >>> MovingAverageMinMax(num_bits=8, decay=0.99).get_config()
    {'num_bits': 8, 'signed': True, 'decay': 0.99}
  """

  def __init__(self, num_bits=8, signed=True, decay=0.9):
    super().__init__(num_bits, signed)
    self.decay = _ema_decay(decay)

  def build(self, tensor_shape, name, layer):
    return {"min": _statistic(layer, f"{name}_min"), "max": _statistic(layer, f"{name}_max"),
            "state": _statistic(layer, f"{name}_state")}

  def __call__(self, inputs, training, weights, **kwargs):
    if training:
      x = tf.stop_gradient(tf.cast(inputs, weights["min"].dtype))
      weights["min"].assign(self.decay * weights["min"] + tf.reduce_min(x))
      weights["max"].assign(self.decay * weights["max"] + tf.reduce_max(x))
      weights["state"].assign(self.decay * weights["state"] + 1.0)
    low, high = self.range(weights)
    return quant_ops.fake_quant(inputs, low, tf.maximum(high, low + 1e-8), self.num_bits)

  def range(self, weights):
    low = tf.math.divide_no_nan(weights["min"], weights["state"])
    high = tf.math.divide_no_nan(weights["max"], weights["state"])
    return tf.minimum(low, 0.0), tf.maximum(high, 0.0)

  def set_range(self, weights, low, high):
    """Fixes the range to [low, high] (as if every training batch had spanned it)."""
    weights["min"].assign(low)
    weights["max"].assign(high)
    weights["state"].assign(1.0)

  @property
  def narrow_range(self):
    return False

  def get_config(self):
    return {**super().get_config(), "decay": self.decay}


@_register
class PACT(_ActivationQuantizer):
  """PACT: clip at a learnable level alpha, then quantize uniformly (Choi et al., 2018).

  ``y = quant(clip(x, 0, alpha))`` (``clip(x, -alpha, alpha)`` when `signed`), with
  ``dy/dalpha = 1`` for clipped inputs (see `quant_ops.pact`) and an L2 penalty
  ``decay * alpha**2`` added to the model's losses, as in the paper. Alpha starts at the level
  that quantizes the first training batch with the least squared error (`quant_ops.mse_clip`):
  at 2-4 bits that is well below the batch's max |x|, and a short fine-tune with a small
  learning rate moves alpha too little to get there on its own.

  Args:
    num_bits: 2 to 8.
    signed: see `_ActivationQuantizer`.
    decay: the L2 coefficient on alpha.

  References:
    Choi et al., PACT: Parameterized Clipping Activation for Quantized Neural Networks,
    https://arxiv.org/abs/1805.06085
  """

  def __init__(self, num_bits=8, signed=False, decay=1e-4):
    super().__init__(num_bits, signed)
    if decay < 0:
      raise ValueError(f"decay must be >= 0, got {decay!r}")
    self.decay = float(decay)

  def build(self, tensor_shape, name, layer):
    alpha = layer.add_weight(
        f"{name}_alpha", shape=(), initializer=keras.initializers.Constant(0.0),
        regularizer=keras.regularizers.L2(self.decay) if self.decay else None, trainable=True,
        aggregation=tf.VariableAggregation.MEAN)
    return {"alpha": alpha, "initialized": _statistic(layer, f"{name}_initialized")}

  def __call__(self, inputs, training, weights, **kwargs):
    alpha = weights["alpha"]
    if training:
      start = tf.cond(weights["initialized"] < 0.5,
                      lambda: tf.cast(quant_ops.mse_clip(inputs, self.num_bits, self.signed),
                                      alpha.dtype),
                      lambda: tf.identity(alpha))
      with tf.control_dependencies([alpha.assign(start)]):
        weights["initialized"].assign(1.0)
        alpha = tf.identity(alpha)
    return quant_ops.pact(inputs, alpha, self.num_bits, signed=self.signed)

  def _bound(self, weights):
    return tf.maximum(weights["alpha"], 1e-8)

  def get_config(self):
    return {**super().get_config(), "decay": self.decay}


@_register
class FixedRange(_ActivationQuantizer):
  """A constant range, for outputs whose int8 scale TFLite prescribes.

  TFLite's int8 Softmax and Logistic kernels require the output range ``[0, 255/256]`` and
  Tanh ``[-1, 127/128]``; kslim.quantize uses this quantizer for them.

  Args:
    num_bits: 2 to 8.
    minimum: the range's lower bound.
    maximum: the range's upper bound.
  """

  def __init__(self, num_bits=8, minimum=0.0, maximum=1.0):
    super().__init__(num_bits, signed=minimum < 0)
    if not minimum < maximum:
      raise ValueError(f"minimum must be below maximum, got [{minimum}, {maximum}]")
    self.minimum, self.maximum = float(minimum), float(maximum)

  def __call__(self, inputs, training, weights, **kwargs):
    del training, weights, kwargs
    return quant_ops.fake_quant(inputs, self.minimum, self.maximum, self.num_bits)

  def range(self, weights):
    return tf.constant(self.minimum), tf.constant(self.maximum)

  @property
  def narrow_range(self):
    return False

  def get_config(self):
    return {"num_bits": self.num_bits, "minimum": self.minimum, "maximum": self.maximum}


_BY_NAME = {
    Role.WEIGHTS: {"abs_max": AbsMax, "channel_wise_abs_max": ChannelWiseAbsMax,
                   "channel_wise_mse": ChannelWiseMSE},
    Role.ACTIVATIONS: {"abs_max": RunningAbsMax, "moving_average_abs_max": MovingAverageAbsMax,
                       "moving_average_min_max": MovingAverageMinMax, "pact": PACT},
}


def names(role):
  """The quantizer names accepted for `role` (a `Role` or its value)."""
  return sorted(_BY_NAME[Role(role)])


def get(identifier, role, **kwargs):
  """Resolves a quantizer name (e.g. ``"pact"``) or instance for `role`.

  Args:
    identifier: a name from `names(role)` or a `Quantizer` instance (returned as is).
    role: `Role.WEIGHTS` or `Role.ACTIVATIONS`.
    **kwargs: constructor arguments for a named quantizer (``num_bits=4``).

  Returns:
    A `Quantizer`.

  Raises:
    ValueError: unknown name, or a quantizer made for the other role.
  """
  role = Role(role)
  if isinstance(identifier, Quantizer):
    if identifier.role is not role:
      raise ValueError(f"{identifier!r} quantizes {identifier.role.value}, not {role.value}")
    return identifier
  table = _BY_NAME[role]
  if identifier not in table:
    raise ValueError(f"unknown {role.value} quantizer {identifier!r}; choose one of "
                     f"{sorted(table)}")
  return table[identifier](**kwargs)
