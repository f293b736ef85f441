"""Per-layer parameter and multiply-accumulate (MAC) counts of a Keras model.

MACs follow the convention of the literature's FLOPs tables: only the multiply-accumulates of
convolutions, dense layers and recurrent cells (their input and recurrent matrix products at
every step) count; bias, batch norm, activations, gates' elementwise products and pooling are
excluded.
"""

import dataclasses
import math

import tensorflow_model_optimization as tfmot

from kslim._keras import call_sites, check_model, keras
from kslim._table import format_table
from kslim.quantization.folded_batch_norm import FoldedBatchNorm
from kslim.quantization.recurrent import QuantizedLSTM

__all__ = ["LayerProfile", "Profile", "mac_rule", "profile"]


def _conv_macs(layer, input_shape, output_shape):
  # Kernel (*k, in/groups, out): every output element costs prod(k) * in/groups MACs.
  del input_shape
  return math.prod(output_shape[1:]) * math.prod(layer.kernel.shape[:-1])


def _conv_transpose_macs(layer, input_shape, output_shape):
  # Kernel (*k, out, in): every input element is scattered through prod(k) * out MACs.
  del output_shape
  return math.prod(input_shape[1:]) * math.prod(layer.kernel.shape[:-1])


def _depthwise_macs(layer, input_shape, output_shape):
  # Kernel (*k, in, multiplier): every output element costs prod(k) MACs.
  del input_shape
  return math.prod(output_shape[1:]) * math.prod(layer.depthwise_kernel.shape[:-2])


def _separable_macs(layer, input_shape, output_shape):
  # Depthwise at the output resolution, then a 1x1 projection of in*multiplier channels.
  del input_shape
  *kernel, channels, multiplier = layer.depthwise_kernel.shape
  positions = math.prod(output_shape[1:]) // layer.filters
  return positions * channels * multiplier * (math.prod(kernel) + layer.filters)


def _dense_macs(layer, input_shape, output_shape):
  # Applied to the last axis: in * units MACs for every position of the leading axes.
  del output_shape
  return math.prod(input_shape[1:]) * layer.units


def _recurrent_macs(gates):
  """LSTM (4 gates), GRU (3), SimpleRNN (1): each step multiplies the input and the previous
  state by every gate's matrix, ``gates * units * (in + units)`` MACs."""
  def macs(layer, input_shape, output_shape):
    del output_shape
    steps, features = input_shape[1], input_shape[-1]
    return steps * gates * layer.units * (features + layer.units)
  return macs


# Looked up along the layer's MRO, so subclasses (Conv2DTranspose is a Conv2D) find their own.
_MAC_RULES = {
    keras.layers.Conv1D: _conv_macs,
    keras.layers.Conv2D: _conv_macs,
    keras.layers.Conv3D: _conv_macs,
    keras.layers.Conv1DTranspose: _conv_transpose_macs,
    keras.layers.Conv2DTranspose: _conv_transpose_macs,
    keras.layers.Conv3DTranspose: _conv_transpose_macs,
    keras.layers.DepthwiseConv1D: _depthwise_macs,
    keras.layers.DepthwiseConv2D: _depthwise_macs,
    keras.layers.SeparableConv1D: _separable_macs,
    keras.layers.SeparableConv2D: _separable_macs,
    keras.layers.Dense: _dense_macs,
    keras.layers.LSTM: _recurrent_macs(4),
    keras.layers.GRU: _recurrent_macs(3),
    keras.layers.SimpleRNN: _recurrent_macs(1),
}


def mac_rule(layer):
  """The MAC count function ``(layer, input_shape, output_shape) -> int`` for `layer`, or None."""
  if isinstance(layer, (tfmot.quantization.keras.QuantizeWrapper, FoldedBatchNorm,
                        QuantizedLSTM)):
    layer = layer.layer  # fake-quantizes the inner layer's weights; the arithmetic is the same
  for cls in type(layer).__mro__:
    if cls in _MAC_RULES:
      return _MAC_RULES[cls]
  return None


@dataclasses.dataclass(frozen=True)
class LayerProfile:
  """One layer's row: `name` is its path through nested models (``"block/conv"``)."""
  name: str
  type: str
  output_shape: tuple
  params: int
  macs: int


@dataclasses.dataclass(frozen=True)
class Profile:
  """Per-layer rows and totals of a model; `str(profile)` is a table.

  Example:
    >>> p = kslim.profile(model)
    >>> p.total_macs, p.total_params
    >>> print(p)
  """
  model_name: str
  rows: tuple
  total_params: int
  trainable_params: int
  total_macs: int

  def __getitem__(self, name):
    """The row of the layer whose path is `name`."""
    for row in self.rows:
      if row.name == name:
        return row
    raise KeyError(f"no layer named {name!r} in the profile of {self.model_name!r}")

  def to_dict(self):
    return dataclasses.asdict(self)

  def __str__(self):
    rows = [[f"{r.name} ({r.type})", str(r.output_shape), f"{r.params:,}", f"{r.macs:,}"]
            for r in self.rows]
    table = format_table(["Layer (type)", "Output shape", "Params", "MACs"], rows,
                         left_columns=2)
    return "\n".join(
        [f"Profile of {self.model_name}", table,
         f"Total params: {self.total_params:,} (trainable: {self.trainable_params:,})",
         f"Total MACs: {self.total_macs:,}"])


def _is_graph_model(layer):
  return isinstance(layer, keras.Model) and getattr(layer, "_is_graph_network", False)


def _walk(model, prefix, repeat, rows, seen):
  """Appends the rows of `model`'s leaf layers; `repeat` counts calls of `model` itself."""
  for layer in model.layers:
    if isinstance(layer, keras.layers.InputLayer):
      continue
    sites = call_sites(model, layer)
    name = prefix + layer.name
    if isinstance(layer, keras.Model):
      if not _is_graph_model(layer):
        raise ValueError(f"kslim.profile: nested model {name!r} ({type(layer).__name__}) is "
                         "subclassed; only Sequential and functional models can be profiled.")
      _walk(layer, name + "/", repeat * len(sites), rows, seen)
      continue
    rule = mac_rule(layer)
    macs = 0
    if rule is not None:
      counted = getattr(layer, "layer", layer)  # a QuantizeWrapper's inner layer holds the kernel
      macs = repeat * sum(
          rule(counted, layer.get_input_shape_at(i), layer.get_output_shape_at(i)) for i in sites)
    # A layer shared by several call sites owns its weights once.
    params = 0 if id(layer) in seen else layer.count_params()
    seen.add(id(layer))
    output_shape = layer.get_output_shape_at(sites[0]) if sites else ()
    rows.append(LayerProfile(name, type(layer).__name__, output_shape, params, macs))


def profile(model):
  """Counts parameters and MACs of every layer of a Sequential, functional or nested model.

  Args:
    model: a built tf_keras Sequential or functional model (nested models are walked).

  Returns:
    A `Profile`: per-layer rows (nested layers named ``outer/inner``) and the totals.

  Raises:
    TypeError: `model` is not a tf_keras model (e.g. a Keras 3 model).
    ValueError: `model` is subclassed or not built, so its layers' shapes are unknown.
  """
  check_model(model, "kslim.profile")
  if not _is_graph_model(model):
    raise ValueError(
        f"kslim.profile: model {model.name!r} has no known graph ({type(model).__name__}); give "
        "it an Input (or call build()) and use the Sequential or functional API.")
  rows = []
  _walk(model, "", 1, rows, set())
  trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
  return Profile(model.name, tuple(rows), model.count_params(), trainable,
                 sum(r.macs for r in rows))
