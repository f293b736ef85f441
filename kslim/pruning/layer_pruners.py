"""Per-layer-type pruning rules: how a layer moves channel indices, and how it shrinks.

Each rule answers two questions for one layer type, as Torch-Pruning's ``prune_out_channels``
/ ``prune_in_channels`` functions do:

- `propagate`: given the channel *atoms* (integer ids, one per channel of the last axis) of
  the call's inputs, which atoms are in its outputs. A convolution makes new atoms (its
  filters); batch norm passes its input's atoms through; Add couples its inputs' atoms (they
  must be removed together); Concatenate concatenates them; Flatten repeats them per spatial
  position; a depthwise convolution repeats each input atom ``depth_multiplier`` times.
- `prune`: given the kept positions of each input's and the output's last axis, the config and
  weights of the smaller layer.

A layer type without a rule, or with a configuration a rule cannot prove safe (channels-first
data, grouped convolutions, normalization across channels), becomes a *barrier*: its inputs'
channels are pinned and its outputs are new pinned atoms, so nothing around it is pruned
wrongly, and the reason is logged.
"""

import numpy as np
import tensorflow as tf

from kslim._keras import keras

__all__ = ["LayerPruner", "Barrier", "rule_for"]

_layers = keras.layers


class Barrier(Exception):
  """Raised by `LayerPruner.check` or `propagate`: the layer cannot be pruned through."""


class LayerPruner:
  """A layer type's channel flow and surgery; the base passes channels through unchanged.

  Subclasses override `propagate` (channel flow), `prune` (the smaller layer) and, for layers
  that create channels, `filters` (the output filters the criteria score).
  """

  # The layer makes new output channels that pruning may remove (convolutions, Dense).
  creates_channels = False

  def check(self, op):
    """Raises `Barrier` with a reason if this call of the layer cannot be pruned through."""
    if op.layer.get_config().get("data_format") == "channels_first":
      raise Barrier("channels-first data (kslim prunes the last axis)")

  def propagate(self, ctx, op, inputs):
    """The atom arrays of the call's outputs, from those of its inputs (one per input `Ref`).

    `ctx` is the `DependencyGraph` under construction: ``ctx.new(layer, n)`` gives the layer's
    own output atoms (the same ones at every call of a shared layer), ``ctx.couple(a, b)``
    makes two atom arrays prunable only together.
    """
    del ctx
    return [inputs[0] for _ in op.output_refs]

  def prune(self, layer, weights, kept_in, kept_out):
    """The config and weights of `layer` with only the kept channels.

    Args:
      layer: the original layer.
      weights: its weights (``layer.get_weights()``).
      kept_in: per input, the kept positions of its last axis (int arrays).
      kept_out: the kept positions of the output's last axis.

    Returns:
      (config, weights) of the pruned layer.
    """
    del kept_in, kept_out
    return layer.get_config(), weights

  def filters(self, layer):
    """(output channels, weights per channel): what L1/L2/FPGM score, for creating layers."""
    raise NotImplementedError(type(layer).__name__)

  def channel_scales(self, layer):
    """Per input channel scale factors (batch norm's gamma), or None."""
    del layer

  def mac_fraction(self, layer, kept_in, kept_out):
    """The share of the layer's MACs left with these kept fractions of input/output channels.

    Per-channel layers (depthwise convolutions) cost in proportion to their channels.
    """
    del layer, kept_in
    return kept_out

  def zero(self, layer, dead):
    """Zeroes the weights that put values on the output channels where `dead` is True.

    With its makers zeroed, a channel carries zeros (batch norm's gamma and beta too), so
    pruning it changes nothing: the soft pruning of `PruningCallback` relies on this.
    """
    weights = layer.get_weights()
    for w in weights:
      if w.ndim == 1 and len(w) == len(dead):
        w[dead] = 0.0
    layer.set_weights(weights)


class PerChannel(LayerPruner):
  """Elementwise per-channel layers with 1-D weights over the last axis (BatchNormalization)."""

  def check(self, op):
    super().check(op)
    layer = op.layer
    rank = len(op.inputs[0].shape)
    axes = np.atleast_1d(layer.get_config().get("axis", -1)) % rank
    if list(axes) != [rank - 1]:
      raise Barrier(f"normalizes over axis {layer.get_config()['axis']}, not the channel axis")

  def prune(self, layer, weights, kept_in, kept_out):
    return layer.get_config(), [w[kept_in[0]] for w in weights]

  def channel_scales(self, layer):
    return np.abs(layer.gamma.numpy()) if getattr(layer, "scale", False) else None


class PReLU(LayerPruner):
  """PReLU: alpha has a channel axis unless it is shared across channels."""

  def prune(self, layer, weights, kept_in, kept_out):
    alpha = weights[0]
    if alpha.shape[-1] != 1:
      alpha = alpha[..., kept_in[0]]
    return layer.get_config(), [alpha]


class Conv(LayerPruner):
  """Conv1D/2D/3D: kernel ``(*k, in, out)``; makes new channels."""

  creates_channels = True
  size_key = "filters"
  in_axis, out_axis = -2, -1

  def check(self, op):
    super().check(op)
    if op.layer.get_config().get("groups", 1) != 1:
      raise Barrier("grouped convolution (channels are tied within groups)")

  def propagate(self, ctx, op, inputs):
    return [ctx.new(op.layer, op.layer.get_config()[self.size_key])]

  def prune(self, layer, weights, kept_in, kept_out):
    config = layer.get_config()
    config[self.size_key] = len(kept_out)
    kernel = np.take(np.take(weights[0], kept_in[0], self.in_axis), kept_out, self.out_axis)
    return config, [kernel] + [b[kept_out] for b in weights[1:]]

  def filters(self, layer):
    kernel = np.moveaxis(layer.kernel.numpy(), self.out_axis, 0)
    return kernel.reshape(kernel.shape[0], -1)

  def mac_fraction(self, layer, kept_in, kept_out):
    return kept_in * kept_out

  def zero(self, layer, dead):
    kernel = layer.kernel.numpy()
    np.moveaxis(kernel, self.out_axis, -1)[..., dead] = 0.0
    layer.kernel.assign(kernel)
    super().zero(layer, dead)


class ConvTranspose(Conv):
  """Conv1D/2D/3DTranspose: kernel ``(*k, out, in)``."""
  in_axis, out_axis = -1, -2


class Dense(Conv):
  """Dense on the last axis: kernel ``(in, out)``."""
  size_key = "units"


class Depthwise(LayerPruner):
  """DepthwiseConv1D/2D: output channel ``c * multiplier + m`` follows input channel ``c``."""

  def propagate(self, ctx, op, inputs):
    return [np.repeat(inputs[0], op.layer.get_config()["depth_multiplier"])]

  def prune(self, layer, weights, kept_in, kept_out):
    kernel = weights[0][..., kept_in[0], :]
    return layer.get_config(), [kernel] + [b[kept_out] for b in weights[1:]]


class Separable(Conv):
  """SeparableConv1D/2D: depthwise over the input's channels, then a 1x1 to new channels."""

  def prune(self, layer, weights, kept_in, kept_out):
    config = layer.get_config()
    config["filters"] = len(kept_out)
    multiplier = config["depth_multiplier"]
    depthwise = weights[0][..., kept_in[0], :]
    rows = (kept_in[0][:, None] * multiplier + np.arange(multiplier)).ravel()
    pointwise = weights[1][..., rows, :][..., kept_out]
    return config, [depthwise, pointwise] + [b[kept_out] for b in weights[2:]]

  def filters(self, layer):
    pointwise = layer.pointwise_kernel.numpy()
    return pointwise.reshape(-1, pointwise.shape[-1]).T

  def mac_fraction(self, layer, kept_in, kept_out):
    # Depthwise part: prod(kernel) MACs per channel; pointwise: `filters` per channel.
    taps = np.prod(layer.depthwise_kernel.shape[:-2])
    return kept_in * (taps + layer.filters * kept_out) / (taps + layer.filters)

  def zero(self, layer, dead):
    pointwise = layer.pointwise_kernel.numpy()
    pointwise[..., dead] = 0.0
    layer.pointwise_kernel.assign(pointwise)
    LayerPruner.zero(self, layer, dead)


class Merge(LayerPruner):
  """Add, Subtract, Multiply, Maximum, Minimum, Average: inputs share channel indices.

  An input whose last axis is 1 (broadcast, e.g. a per-sample gate) couples with nothing; its
  single channel is pinned.
  """

  def propagate(self, ctx, op, inputs):
    width = max(len(a) for a in inputs)
    full = [a for a in inputs if len(a) == width]
    for other in full[1:]:
      ctx.couple(full[0], other)
    for a in inputs:
      if len(a) != width:
        ctx.pin(a, f"broadcast into {op.layer.name!r}")
    return [full[0]]


class Concatenate(LayerPruner):
  """Concatenate: along the channel axis, atoms concatenate; along another axis, they couple."""

  def propagate(self, ctx, op, inputs):
    rank = len(op.inputs[0].shape)
    if op.layer.get_config()["axis"] % rank == rank - 1:
      return [np.concatenate(inputs)]
    return Merge().propagate(ctx, op, inputs)


class Flatten(LayerPruner):
  """Flatten: row-major order puts each channel once per spatial position."""

  def propagate(self, ctx, op, inputs):
    positions = int(np.prod(op.inputs[0].shape[1:-1]))
    return [np.tile(inputs[0], positions)]


class Reshape(LayerPruner):
  """Reshape that keeps the channel axis last (``(1, 1, C)`` in squeeze-excite) or flattens."""

  def propagate(self, ctx, op, inputs):
    in_shape, out_shape = op.inputs[0].shape, op.outputs.shape
    if out_shape[-1] == in_shape[-1]:
      return [inputs[0]]
    if len(out_shape) == 2:
      return Flatten().propagate(ctx, op, inputs)
    raise Barrier(f"reshapes {in_shape[1:]} to {out_shape[1:]}, mixing the channel axis")

  def prune(self, layer, weights, kept_in, kept_out):
    config = layer.get_config()
    config["target_shape"] = tuple(config["target_shape"][:-1]) + (len(kept_out),)
    return config, weights


class Activation(LayerPruner):
  """Activation: elementwise unless it normalizes across channels (softmax)."""

  def check(self, op):
    super().check(op)
    name = op.layer.get_config().get("activation")
    if name in ("softmax", "log_softmax"):
      raise Barrier(f"{name} normalizes across channels")


class Softmax(LayerPruner):
  """Softmax layer: a barrier when it normalizes over the channel axis."""

  def check(self, op):
    rank = len(op.inputs[0].shape)
    if -1 % rank in np.atleast_1d(op.layer.get_config()["axis"]) % rank:
      raise Barrier("softmax normalizes across channels")


class Rescaling(LayerPruner):
  """Rescaling by scalars passes channels through; a per-channel scale is a barrier."""

  def check(self, op):
    config = op.layer.get_config()
    if np.size(config["scale"]) != 1 or np.size(config["offset"]) != 1:
      raise Barrier("per-channel scale or offset")


class Dropout(LayerPruner):
  """Dropout: a noise shape that names the channel count would no longer fit."""

  def check(self, op):
    noise_shape = op.layer.get_config().get("noise_shape")
    if noise_shape is not None and noise_shape[-1] not in (None, 1):
      raise Barrier(f"noise_shape {noise_shape} fixes the channel count")


# TFOpLambda symbols (``layer.symbol``) that act elementwise on their tensor arguments.
_ELEMENTWISE_OPS = frozenset([
    "__operators__.add", "math.add", "math.subtract", "math.multiply", "math.truediv",
    "math.divide", "math.maximum", "math.minimum", "math.negative", "math.abs", "math.square",
    "math.sigmoid", "math.tanh", "nn.relu", "nn.relu6", "nn.silu", "nn.swish", "nn.gelu",
    "nn.elu", "nn.leaky_relu", "identity",
])


class TFOpLambda(LayerPruner):
  """``tf.*`` calls recorded by tf_keras: elementwise ops with scalar constants pass through."""

  def check(self, op):
    symbol = op.layer.symbol
    if symbol not in _ELEMENTWISE_OPS:
      raise Barrier(f"tf.{symbol} is not known to act per channel")
    tensors = set(id(x) for x in op.inputs)
    constants = [x for x in _flat_args(op) if id(x) not in tensors and _is_array(x)]
    if any(np.size(c) != 1 for c in constants):
      raise Barrier(f"tf.{symbol} with a non-scalar constant")

  def propagate(self, ctx, op, inputs):
    return Merge().propagate(ctx, op, inputs)


def _flat_args(op):
  return tf.nest.flatten((op.args, op.kwargs))


def _is_array(value):
  return isinstance(value, (int, float, np.ndarray, list)) or hasattr(value, "numpy")


_PASS = LayerPruner()

# Looked up along the layer's MRO, most specific first.
_RULES = {
    _layers.Conv1DTranspose: ConvTranspose(),
    _layers.Conv2DTranspose: ConvTranspose(),
    _layers.Conv3DTranspose: ConvTranspose(),
    _layers.SeparableConv1D: Separable(),
    _layers.SeparableConv2D: Separable(),
    _layers.DepthwiseConv1D: Depthwise(),
    _layers.DepthwiseConv2D: Depthwise(),
    _layers.Conv1D: Conv(),
    _layers.Conv2D: Conv(),
    _layers.Conv3D: Conv(),
    _layers.Dense: Dense(),
    _layers.BatchNormalization: PerChannel(),
    _layers.PReLU: PReLU(),
    _layers.Add: Merge(),
    _layers.Subtract: Merge(),
    _layers.Multiply: Merge(),
    _layers.Maximum: Merge(),
    _layers.Minimum: Merge(),
    _layers.Average: Merge(),
    _layers.Concatenate: Concatenate(),
    _layers.Flatten: Flatten(),
    _layers.Reshape: Reshape(),
    _layers.Activation: Activation(),
    _layers.Softmax: Softmax(),
    _layers.Rescaling: Rescaling(),
    _layers.Dropout: Dropout(),
    _layers.SpatialDropout1D: _PASS,
    _layers.SpatialDropout2D: _PASS,
    _layers.GaussianNoise: _PASS,
    _layers.GaussianDropout: _PASS,
    _layers.ReLU: _PASS,
    _layers.LeakyReLU: _PASS,
    _layers.ELU: _PASS,
    _layers.ThresholdedReLU: _PASS,
    _layers.ZeroPadding1D: _PASS,
    _layers.ZeroPadding2D: _PASS,
    _layers.ZeroPadding3D: _PASS,
    _layers.Cropping1D: _PASS,
    _layers.Cropping2D: _PASS,
    _layers.Cropping3D: _PASS,
    _layers.UpSampling1D: _PASS,
    _layers.UpSampling2D: _PASS,
    _layers.UpSampling3D: _PASS,
    _layers.MaxPooling1D: _PASS,
    _layers.MaxPooling2D: _PASS,
    _layers.MaxPooling3D: _PASS,
    _layers.AveragePooling1D: _PASS,
    _layers.AveragePooling2D: _PASS,
    _layers.AveragePooling3D: _PASS,
    _layers.GlobalAveragePooling1D: _PASS,
    _layers.GlobalAveragePooling2D: _PASS,
    _layers.GlobalAveragePooling3D: _PASS,
    _layers.GlobalMaxPooling1D: _PASS,
    _layers.GlobalMaxPooling2D: _PASS,
    _layers.GlobalMaxPooling3D: _PASS,
    _layers.Identity: _PASS,
}


def rule_for(layer):
  """The `LayerPruner` for `layer`'s type, or None (the layer is a barrier)."""
  if type(layer).__name__ == "TFOpLambda":
    return TFOpLambda()
  for cls in type(layer).__mro__:
    if cls in _RULES:
      return _RULES[cls]
  return None
