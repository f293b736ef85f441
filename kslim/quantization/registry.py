"""The declarative table of how kslim.quantize treats each layer type.

Every layer call falls in one `Kind`, which says where fake-quant ops go so that the Keras
model computes what the int8 TFLite kernels compute:

- `WEIGHTED`: weights quantized (the attributes listed), output quantized.
- `COMPUTE`: no weights to quantize; a new output range (Add, Multiply, Rescaling, mean, ...).
- `ACTIVATION`: like COMPUTE; ReLU/ReLU6 after a WEIGHTED or Add op fuse into it in TFLite, so
  the op before them gets no range of its own.
- `FIXED`: TFLite prescribes the output range (Softmax, Logistic, Tanh).
- `PASSTHROUGH`: moves, selects or joins values (Reshape, Flatten, MaxPool, slicing,
  Concatenate, Maximum): TFLite requires the inputs and the output to share one scale, so they
  share one range, and the output, already on that grid, needs no fake-quant of its own.
- `SAME_SCALE`: averages values (AveragePooling): TFLite keeps the input's scale but rounds,
  so the output is quantized again with the input's range.
- `RECURRENT`: an LSTM TFLite's int8 kernel can run: replaced by a `QuantizedLSTM`, which
  quantizes its gate weights and rounds its output at every step, and holds that range itself.
"""

import dataclasses
import enum

from kslim._keras import keras
from kslim.quantization.attention import Einsum
from kslim.quantization.folded_batch_norm import FoldedBatchNorm
from kslim.quantization import recurrent

__all__ = ["Kind", "LayerRule", "rule_for", "FUSABLE_ACTIVATIONS", "NON_NEGATIVE_ACTIVATIONS"]


class Kind(enum.Enum):
  WEIGHTED = "weighted"
  COMPUTE = "compute"
  ACTIVATION = "activation"
  FIXED = "fixed"
  PASSTHROUGH = "passthrough"
  SAME_SCALE = "same_scale"
  RECURRENT = "recurrent"


@dataclasses.dataclass(frozen=True)
class LayerRule:
  kind: Kind
  weights: tuple = ()        # WEIGHTED: attribute names of the quantized kernels
  depthwise: bool = False    # the kernel's output channels span its last two axes
  per_channel: bool = True   # TFLite can hold per-channel ranges for this kernel
  fixed_range: tuple = None  # FIXED: (min, max) TFLite requires


_L = keras.layers
_W = LayerRule(Kind.WEIGHTED, ("kernel",))
# The converter transposes a Dense kernel to TFLite's (out, in) layout and cannot carry a
# per-channel fake-quant axis through that transpose, so Dense kernels use one range (as tfmot).
_DENSE = LayerRule(Kind.WEIGHTED, ("kernel",), per_channel=False)
# Likewise the converter reshapes a Conv1D kernel to 4-D for CONV_2D, and a per-channel range's
# axis does not follow that reshape (conversion fails), so Conv1D kernels use one range too.
_CONV1D = _DENSE
_COMPUTE = LayerRule(Kind.COMPUTE)
_PASS = LayerRule(Kind.PASSTHROUGH)
_ACT = LayerRule(Kind.ACTIVATION)
# TFLite int8 Softmax/Logistic output scale 1/256 with zero point -128; Tanh 1/128, zero point 0.
_PROBABILITY = LayerRule(Kind.FIXED, fixed_range=(0.0, 255.0 / 256.0))
_TANH = LayerRule(Kind.FIXED, fixed_range=(-1.0, 127.0 / 128.0))
_RECURRENT = LayerRule(Kind.RECURRENT)

_BY_CLASS = {
    _L.Conv1D: _CONV1D, _L.Conv2D: _W, _L.Dense: _DENSE, _L.EinsumDense: _DENSE,
    _L.DepthwiseConv2D: LayerRule(Kind.WEIGHTED, ("depthwise_kernel",), depthwise=True),
    Einsum: _COMPUTE,
    _L.Add: _COMPUTE, _L.Subtract: _COMPUTE, _L.Multiply: _COMPUTE, _L.Average: _COMPUTE,
    _L.Maximum: _PASS, _L.Minimum: _PASS,
    _L.GlobalAveragePooling1D: _COMPUTE, _L.GlobalAveragePooling2D: _COMPUTE,
    _L.Rescaling: _COMPUTE, _L.Normalization: _COMPUTE, _L.BatchNormalization: _COMPUTE,
    _L.ReLU: _ACT, _L.LeakyReLU: _COMPUTE, _L.PReLU: _COMPUTE,
    _L.Softmax: _PROBABILITY,
    _L.Concatenate: _PASS,
    _L.AveragePooling1D: LayerRule(Kind.SAME_SCALE), _L.AveragePooling2D: LayerRule(Kind.SAME_SCALE),
    _L.MaxPooling1D: _PASS, _L.MaxPooling2D: _PASS,
    _L.GlobalMaxPooling1D: _PASS, _L.GlobalMaxPooling2D: _PASS,
    _L.Reshape: _PASS, _L.Flatten: _PASS, _L.Permute: _PASS, _L.Dropout: _PASS,
    _L.SpatialDropout2D: _PASS, _L.ZeroPadding2D: _PASS, _L.Cropping2D: _PASS,
    _L.UpSampling2D: _PASS,
}

# Built-in activations by their serialized name.
_ACTIVATIONS = {
    "linear": _PASS, "relu": _ACT, "relu6": _ACT,
    "softmax": _PROBABILITY, "sigmoid": _PROBABILITY, "tanh": _TANH,
    "hard_sigmoid": _COMPUTE, "swish": _COMPUTE, "silu": _COMPUTE, "elu": _COMPUTE,
    "gelu": _COMPUTE,
}

# TFOpLambda symbols (what `tf.reshape(x)`, `x[:, 1:]`, `x * 2` record in a functional model).
_SYMBOLS = {
    "__operators__.getitem": _PASS, "reshape": _PASS, "transpose": _PASS,
    "expand_dims": _PASS, "squeeze": _PASS, "compat.v1.squeeze": _PASS,
    "nn.relu": _ACT, "nn.relu6": _ACT,
    "__operators__.add": _COMPUTE, "math.add": _COMPUTE, "math.subtract": _COMPUTE,
    "math.multiply": _COMPUTE, "math.truediv": _COMPUTE, "math.reduce_mean": _COMPUTE,
    "linalg.matmul": _COMPUTE,
    "math.maximum": _COMPUTE, "math.minimum": _COMPUTE, "nn.leaky_relu": _COMPUTE,
    "math.reduce_max": _PASS, "concat": _PASS,
    "nn.softmax": _PROBABILITY, "math.sigmoid": _PROBABILITY, "math.tanh": _TANH,
}

# Activations that TFLite fuses into the conv / fully-connected / add op before them.
FUSABLE_ACTIVATIONS = ("relu", "relu6")
# Activations whose output is never negative: their tensors use an unsigned range.
NON_NEGATIVE_ACTIVATIONS = ("relu", "relu6", "softmax", "sigmoid", "hard_sigmoid")


def activation_name(layer):
  """The built-in activation a layer applies, by name: ``"relu"`` for ReLU(), Activation("relu")
  or Conv2D(activation="relu"); None when it applies none or a custom function."""
  if isinstance(layer, _L.ReLU):
    standard = float(layer.negative_slope) == 0.0 and float(layer.threshold) == 0.0
    if standard and layer.max_value is None:
      return "relu"
    if standard and layer.max_value is not None and float(layer.max_value) == 6.0:
      return "relu6"
    return None
  if _is_op_lambda(layer):
    return {"nn.relu": "relu", "nn.relu6": "relu6"}.get(layer.symbol)
  activation = getattr(layer, "activation", None)
  if activation is None:
    return None
  name = keras.activations.serialize(activation)
  return name if isinstance(name, str) else None


def rule_for(layer):
  """The `LayerRule` for `layer`, or None when kslim has no rule for it."""
  if isinstance(layer, FoldedBatchNorm):
    return rule_for(layer.layer)  # the folded conv/dense, its kernel quantized after folding
  if isinstance(layer, _L.ReLU):
    return _ACT if activation_name(layer) else _COMPUTE
  if isinstance(layer, _L.Activation):
    return _ACTIVATIONS.get(activation_name(layer))
  if _is_op_lambda(layer):
    return _SYMBOLS.get(layer.symbol)
  if isinstance(layer, _L.LSTM):
    return None if recurrent.unsupported_reason(layer) else _RECURRENT
  for cls in type(layer).__mro__:
    if cls in _BY_CLASS:
      return _BY_CLASS[cls]
  return None


def _is_op_lambda(layer):
  # TFOpLambda (and its SlicingOpLambda subclass) is not exported by tf_keras.
  return any(cls.__name__ == "TFOpLambda" for cls in type(layer).__mro__)
