"""Graph rewrites that make the Keras model compute what the TFLite converter will emit.

The converter folds BatchNormalization into the preceding convolution, splits
SeparableConv2D into a depthwise and a 1x1 convolution, and runs any activation other than
ReLU/ReLU6 as its own op. Doing the same before quantization means training sees (and
quantizes) exactly the kernels and tensors the int8 file will contain: the folded kernel is
what gets quantized, and every tensor TFLite stores gets its own range.

Each rewrite keeps the function the model computes unchanged (tests check this in float).
"""

import numpy as np

from kslim import _graph
from kslim._keras import keras
from kslim.quantization import attention
from kslim.quantization import registry
from kslim.quantization.folded_batch_norm import FOLDABLE
from kslim.quantization.folded_batch_norm import FoldedBatchNorm

__all__ = ["fold_batch_norm_weights", "dense_to_pointwise_conv", "split_separable_convs",
           "fold_batch_norms", "split_activations", "canonicalize"]


def fold_batch_norm_weights(kernel, bias, gamma, beta, mean, variance, epsilon,
                            depthwise=False):
  """Folds inference-mode batch norm into the kernel and bias before it.

  ``bn(conv(x)) = s * (conv(x) + b - mean) + beta`` with ``s = gamma / sqrt(var + eps)``,
  so the folded kernel is ``k * s`` (per output channel) and the bias ``(b - mean) * s + beta``.

  Args:
    kernel: the conv/dense kernel, output channels last (for a depthwise kernel
      ``(h, w, in, multiplier)``, the output channel ``c * multiplier + m``).
    bias: the layer's bias, or None.
    gamma, beta: batch norm scale and offset, or None when the layer has none.
    mean, variance: batch norm moving statistics.
    epsilon: batch norm epsilon.
    depthwise: `kernel` is a depthwise kernel.

  Returns:
    (folded kernel, folded bias) as float32 arrays.
  """
  scale = np.asarray(1.0 if gamma is None else gamma) / np.sqrt(np.asarray(variance) + epsilon)
  scale = np.broadcast_to(scale, np.shape(mean))
  shaped = scale.reshape(kernel.shape[-2:]) if depthwise else scale
  folded_kernel = kernel * shaped
  bias = np.zeros_like(mean) if bias is None else bias
  folded_bias = (bias - mean) * scale + (0.0 if beta is None else beta)
  return folded_kernel.astype(np.float32), folded_bias.astype(np.float32)


def split_separable_convs(graph):
  """Replaces each SeparableConv2D by DepthwiseConv2D (no bias) + 1x1 Conv2D."""
  for op in list(graph.ops):
    layer = op.layer
    if not isinstance(layer, keras.layers.SeparableConv2D):
      continue
    graph.require_single_call(layer)
    config = layer.get_config()
    depthwise = keras.layers.DepthwiseConv2D(
        config["kernel_size"], strides=config["strides"], padding=config["padding"],
        depth_multiplier=config["depth_multiplier"], data_format=config["data_format"],
        dilation_rate=config["dilation_rate"], use_bias=False, name=f"{layer.name}_depthwise")
    pointwise = keras.layers.Conv2D(
        config["filters"], 1, activation=config["activation"], use_bias=config["use_bias"],
        data_format=config["data_format"], name=f"{layer.name}_pointwise")
    weights = graph.initial_weights.pop(layer)
    graph.initial_weights[depthwise] = weights[:1]
    graph.initial_weights[pointwise] = weights[1:]
    channels = op.inputs[0].shape[-1] * config["depth_multiplier"]
    middle = _graph.Ref(op.outputs.shape[:-1] + (channels,), op.outputs.dtype)
    graph.replace([op], [_graph.Op(depthwise, (op.inputs[0],), {}, middle),
                         _graph.Op(pointwise, (middle,), {}, op.outputs)])


def fold_batch_norms(graph, keep_training=None):
  """Folds every BatchNormalization that only follows a linear conv/dense into it.

  Args:
    graph: the `_graph.Graph`, rewritten in place.
    keep_training: optional predicate on the conv/dense layer. Where it holds, the pair becomes
      a `FoldedBatchNorm` that goes on normalizing with batch statistics in training; elsewhere
      the moving statistics are folded into the kernel and bias once.
  """
  for bn_op in list(graph.ops):
    bn = bn_op.layer
    if not isinstance(bn, keras.layers.BatchNormalization) or graph.calls_of(bn) != 1:
      continue
    source = graph.producer(bn_op.inputs[0])
    if source is None or not _foldable(graph, source, bn_op, bn):
      continue
    layer = source.layer
    weights = graph.initial_weights.pop(layer)
    bn_weights = list(graph.initial_weights.pop(bn))  # [gamma] [beta] mean variance
    gamma = bn_weights.pop(0) if bn.scale else None
    beta = bn_weights.pop(0) if bn.center else None
    mean, variance = bn_weights
    bias = weights[1] if layer.use_bias else None
    config = layer.get_config()
    if keep_training is not None and keep_training(layer):
      config.update(use_bias=False)
      folded = FoldedBatchNorm(type(layer).from_config(config), bn.epsilon, bn.momentum,
                               name=layer.name)
      folded.layer._name = f"{layer.name}_linear"  # pylint: disable=protected-access
      graph.initial_weights[folded] = [
          weights[0], np.ones_like(mean) if gamma is None else gamma,
          np.zeros_like(mean) if beta is None else beta,
          mean if bias is None else mean - bias, variance]
    else:
      config.update(use_bias=True)
      folded = type(layer).from_config(config)
      graph.initial_weights[folded] = list(fold_batch_norm_weights(
          weights[0], bias, gamma, beta, mean, variance, bn.epsilon,
          depthwise=isinstance(layer, keras.layers.DepthwiseConv2D)))
    graph.replace([source, bn_op], [_graph.Op(folded, source.args, source.kwargs,
                                              bn_op.outputs)])


def split_activations(graph):
  """Moves a built-in activation TFLite cannot fuse (anything but ReLU/ReLU6) into its own layer."""
  for op in list(graph.ops):
    layer = op.layer
    rule = registry.rule_for(layer)
    if rule is None or rule.kind is not registry.Kind.WEIGHTED:
      continue
    name = registry.activation_name(layer)
    if name in (None, "linear") or name in registry.FUSABLE_ACTIVATIONS:
      continue
    graph.require_single_call(layer)
    config = layer.get_config()
    config.update(activation="linear")
    linear = type(layer).from_config(config)
    graph.initial_weights[linear] = graph.initial_weights.pop(layer)
    activation = keras.layers.Activation(name, name=f"{layer.name}_{name}")
    middle = _graph.Ref(op.outputs.shape, op.outputs.dtype)
    graph.replace([op], [_graph.Op(linear, op.args, op.kwargs, middle),
                         _graph.Op(activation, (middle,), {}, op.outputs)])


def dense_to_pointwise_conv(graph):
  """Turns a Dense on a sequence or feature map into the equivalent 1x1 Conv1D/Conv2D.

  tf_keras computes Dense on rank-3/4 inputs as reshape, matmul, reshape, then bias add, which
  the converter emits as FULLY_CONNECTED + RESHAPE + ADD with the FULLY_CONNECTED's output
  never quantized (it stays float). A 1x1 convolution is the same function and converts to one
  int8 CONV_2D with the bias (and a ReLU) fused.
  """
  convs = {3: keras.layers.Conv1D, 4: keras.layers.Conv2D}
  for op in list(graph.ops):
    layer = op.layer
    if type(layer) is not keras.layers.Dense or len(op.inputs[0].shape) not in convs:  # pylint: disable=unidiomatic-typecheck
      continue
    graph.require_single_call(layer)
    rank = len(op.inputs[0].shape)
    config = layer.get_config()
    conv = convs[rank](config["units"], 1, activation=config["activation"],
                       use_bias=config["use_bias"], name=layer.name)
    kernel, *bias = graph.initial_weights.pop(layer)
    graph.initial_weights[conv] = [kernel.reshape((1,) * (rank - 2) + kernel.shape)] + bias
    op.layer = conv


def canonicalize(graph, keep_training=None):
  """All rewrites, in the order the converter would apply them (see `fold_batch_norms`)."""
  attention.split_attention(graph)
  dense_to_pointwise_conv(graph)
  split_separable_convs(graph)
  fold_batch_norms(graph, keep_training)
  split_activations(graph)


def _foldable(graph, source, bn_op, bn):
  layer = source.layer
  axis = bn.axis if isinstance(bn.axis, int) else (bn.axis[0] if len(bn.axis) == 1 else None)
  rank = len(bn_op.inputs[0].shape)
  return (isinstance(layer, FOLDABLE) and graph.calls_of(layer) == 1
          and registry.activation_name(layer) == "linear"
          and axis is not None and axis % rank == rank - 1
          and len(graph.consumers(bn_op.inputs[0])) == 1
          and bn_op.inputs[0] not in graph.output_refs())
