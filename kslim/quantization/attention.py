"""MultiHeadAttention as the ops TFLite runs, so each of its tensors gets its own int8 range.

A `MultiHeadAttention` layer is one Keras layer, but the converter emits it as projections
(FULLY_CONNECTED or BATCH_MATMUL), a score product, a softmax, a context product and an output
projection, each of which stores an int8 tensor. `split_attention` rewrites every call into
exactly those parts, with the same weights:

  q = Reshape(heads)(Dense(query))   # and k, v; q's kernel and bias scaled by 1/sqrt(d)
  probs = Softmax(axes)(Einsum(dot_product_equation)(k, q))
  output = Dense(output)(Reshape(merge heads)(Einsum(combine_equation)(probs, v)))

The projections become Dense layers on the last axis (TFLite's FULLY_CONNECTED with the bias
fused; the EinsumDense the layer uses inside would add its bias after a reshape, in float).
kslim.quantize then quantizes the projection kernels (per tensor, like Dense), gives the
scores, context and output their own ranges and the softmax TFLite's fixed [0, 255/256]
range. Folding ``1/sqrt(key_dim)`` into the query projection is exact in float.

Calls with an attention mask, a causal mask or returned scores keep the layer whole (it then
stays float, with kslim.quantize's warning).
"""

import math

import tensorflow as tf

from kslim import _graph
from kslim._keras import keras

__all__ = ["Einsum", "split_attention"]

_register = keras.utils.register_keras_serializable(package="kslim")
_SIMPLE_ARGUMENTS = ("query", "value", "key", "training")


@_register
class Einsum(keras.layers.Layer):
  """``tf.einsum(equation, a, b)`` of two tensors, as a layer.

  Args:
    equation: the einsum equation, e.g. ``"aecd,abcd->acbe"``.
    **kwargs: Keras layer arguments (``name``).

  Example:
    >>> Einsum("ab,cb->ac")([tf.ones((2, 3)), tf.ones((4, 3))]).shape
    TensorShape([2, 4])
  """

  def __init__(self, equation, **kwargs):
    super().__init__(**kwargs)
    self.equation = equation

  def call(self, inputs):
    first, second = inputs
    return tf.einsum(self.equation, first, second)

  def get_config(self):
    return {**super().get_config(), "equation": self.equation}


def split_attention(graph):
  """Replaces every simple `MultiHeadAttention` call in `graph` by its parts (module doc)."""
  for op in list(graph.ops):
    if not isinstance(op.layer, keras.layers.MultiHeadAttention):
      continue
    inputs = _simple_inputs(op)
    if inputs is None:
      continue
    graph.require_single_call(op.layer)
    graph.replace([op], _parts(graph, op, *inputs))


def _simple_inputs(op):
  """(query, value, key) Refs of a call without masks or returned scores, else None."""
  names = dict(zip(("query", "value", "key"), op.args))
  if len(op.args) > 3 or any(k not in _SIMPLE_ARGUMENTS for k in op.kwargs):
    return None
  names.update({k: v for k, v in op.kwargs.items() if k != "training"})
  query, value = names.get("query"), names.get("value")
  key = names.get("key") if names.get("key") is not None else value
  if not all(isinstance(ref, _graph.Ref) for ref in (query, value, key)):
    return None
  return query, value, key


def _parts(graph, op, query, value, key):
  layer = op.layer
  built = _built_copy(layer, graph.initial_weights.pop(layer), query, value, key)
  name = layer.name
  # pylint: disable=protected-access

  def ref(shape):
    return _graph.Ref(tuple(shape), op.outputs.dtype)

  def dense(weights, units, activation, dense_name):
    copy = keras.layers.Dense(units, activation=activation, use_bias=len(weights) > 1,
                              name=dense_name)
    graph.initial_weights[copy] = weights
    return copy

  def split_heads(source, inputs, suffix, scale=1.0):
    """Dense on the last axis, then a reshape to (heads, size): TFLite's FULLY_CONNECTED with
    its bias fused (an EinsumDense would add the bias after the reshape, in float)."""
    kernel, *bias = [w * scale for w in source.get_weights()]
    heads, size = kernel.shape[1:]
    flat = ref(inputs.shape[:-1] + (heads * size,))
    out = ref(inputs.shape[:-1] + (heads, size))
    projection = dense([kernel.reshape(kernel.shape[0], -1)] + [b.reshape(-1) for b in bias],
                       heads * size, source.activation, f"{name}_{suffix}")
    return out, [_graph.Op(projection, (inputs,), {}, flat),
                 _graph.Op(keras.layers.Reshape(out.shape[1:], name=f"{name}_{suffix}_heads"),
                           (flat,), {}, out)]

  q_ref, ops = split_heads(built._query_dense, query, "query",
                           1.0 / math.sqrt(float(built._key_dim)))
  k_ref, key_ops = split_heads(built._key_dense, key, "key")
  v_ref, value_ops = split_heads(built._value_dense, value, "value")
  ops += key_ops + value_ops
  scores_ref = ref(_einsum_shape(built._dot_product_equation, k_ref.shape, q_ref.shape))
  probs_ref = ref(scores_ref.shape)
  ops += [_graph.Op(Einsum(built._dot_product_equation, name=f"{name}_scores"),
                    ([k_ref, q_ref],), {}, scores_ref),
          _graph.Op(keras.layers.Softmax(axis=built._softmax.axis, name=f"{name}_softmax"),
                    (scores_ref,), {}, probs_ref)]
  if built._dropout:
    dropped = ref(probs_ref.shape)
    ops.append(_graph.Op(keras.layers.Dropout(built._dropout, name=f"{name}_dropout"),
                         (probs_ref,), {}, dropped))
    probs_ref = dropped
  context_ref = ref(_einsum_shape(built._combine_equation, probs_ref.shape, v_ref.shape))
  merged_ref = ref(context_ref.shape[:-2] + (context_ref.shape[-2] * context_ref.shape[-1],))
  kernel, *bias = built._output_dense.get_weights()
  output = dense([kernel.reshape(-1, kernel.shape[-1])] + bias, kernel.shape[-1],
                 built._output_dense.activation, f"{name}_output")
  ops += [_graph.Op(Einsum(built._combine_equation, name=f"{name}_context"),
                    ([probs_ref, v_ref],), {}, context_ref),
          _graph.Op(keras.layers.Reshape(merged_ref.shape[1:], name=f"{name}_merge_heads"),
                    (context_ref,), {}, merged_ref),
          _graph.Op(output, (merged_ref,), {}, op.outputs)]
  return ops


def _built_copy(layer, weights, query, value, key):
  """A built copy of `layer` holding `weights`, whose sublayers give configs and weights."""
  copy = type(layer).from_config(layer.get_config())
  copy(keras.Input(query.shape[1:]), keras.Input(value.shape[1:]),
       key=keras.Input(key.shape[1:]))
  copy.set_weights(weights)
  return copy


def _einsum_shape(equation, first, second):
  """The output shape of ``tf.einsum(equation, a, b)`` for input shapes `first`, `second`."""
  inputs, output = equation.split("->")
  sizes = {}
  for letters, shape in zip(inputs.split(","), (first, second)):
    sizes.update({letter: size for letter, size in zip(letters, shape) if size is not None})
  return tuple(sizes.get(letter) for letter in output)

