"""Embedding quantization: int8 tables with one scale per row (PaddleSlim's embedding quant).

Embedding tables are often most of a recommendation or text model's size, yet only a few rows
are read per example. Storing each row as int8 values ``q`` with its own float scale ``s``
(``row ~= s * q``, ``s = max |row| / (2**(bits-1) - 1)``) shrinks the table 4x, keeps rows of
very different norms accurate (a per-table scale would not), and costs one multiply per
looked-up value. The TFLite file keeps the table in int8: GATHER reads int8 rows, which are
then cast and scaled.

Example:
  >>> small = kslim.quantize_embeddings(model, bits=8)
  >>> small.save("small.keras")  # loads back in kslim.quantization.scope()
"""

import numpy as np
import tensorflow as tf

from kslim import _graph
from kslim._keras import check_model
from kslim._keras import keras
from kslim.quantization import quant_ops

__all__ = ["QuantizedEmbedding", "quantize_embeddings", "quantize_rows"]

_register = keras.utils.register_keras_serializable(package="kslim")


def quantize_rows(table, bits=8):
  """Symmetric per-row quantization of a ``(rows, dim)`` table.

  Returns:
    ``(values, scales)``: int8 values in ``[-(2**(bits-1) - 1), 2**(bits-1) - 1]`` and float32
    scales with ``table ~= values * scales[:, None]``; an all-zero row gets scale 1.
  """
  quant_ops.check_num_bits(bits)
  table = np.asarray(table, np.float32)
  top = 2 ** (bits - 1) - 1
  peak = np.abs(table).max(axis=1)
  scales = np.where(peak > 0, peak / top, 1.0).astype(np.float32)
  values = np.clip(np.round(table / scales[:, None]), -top, top).astype(np.int8)
  return values, scales


@_register
class QuantizedEmbedding(keras.layers.Layer):
  """An `Embedding` whose table is int8 with a float32 scale per row.

  Args:
    input_dim: vocabulary size.
    output_dim: embedding size.
    bits: 2 to 8: the values' bit width (stored in int8).
    mask_zero: as in `Embedding`.
    **kwargs: Keras layer arguments (``name``).

  Weights: ``table`` (int8, ``(input_dim, output_dim)``) and ``scales`` (float32,
  ``(input_dim,)``), both not trainable.

  Example:
    >>> layer = QuantizedEmbedding(1000, 16)
    >>> layer.build(None)
    >>> layer.set_weights(quantize_rows(np.random.normal(size=(1000, 16))))
  """

  def __init__(self, input_dim, output_dim, bits=8, mask_zero=False, **kwargs):
    super().__init__(**kwargs)
    self.input_dim, self.output_dim = int(input_dim), int(output_dim)
    self.bits = quant_ops.check_num_bits(bits)
    self.mask_zero = bool(mask_zero)

  def build(self, input_shape):
    self.table = self.add_weight("table", shape=(self.input_dim, self.output_dim),
                                 dtype=tf.int8, initializer="zeros", trainable=False)
    self.scales = self.add_weight("scales", shape=(self.input_dim,), initializer="ones",
                                  trainable=False)
    super().build(input_shape)

  def call(self, inputs):
    ids = tf.cast(inputs, tf.int32)
    rows = tf.cast(tf.gather(self.table, ids), self.compute_dtype)
    return rows * tf.expand_dims(tf.gather(self.scales, ids), -1)

  def compute_mask(self, inputs, mask=None):
    return tf.not_equal(inputs, 0) if self.mask_zero else None

  def compute_output_shape(self, input_shape):
    return tf.TensorShape(input_shape).concatenate([self.output_dim])

  def get_config(self):
    return {**super().get_config(), "input_dim": self.input_dim,
            "output_dim": self.output_dim, "bits": self.bits, "mask_zero": self.mask_zero}


def quantize_embeddings(model, bits=8):
  """Returns a copy of `model` with every `Embedding` replaced by a `QuantizedEmbedding`.

  Args:
    model: a tf_keras Sequential or functional model (not modified).
    bits: 2 to 8.

  Returns:
    A functional model; its other layers keep their float weights.

  Raises:
    TypeError: `model` is not a tf_keras model.
    ValueError: `model` has no Embedding layer, or `bits` is not in [2, 8].
  """
  check_model(model, "kslim.quantize_embeddings")
  quant_ops.check_num_bits(bits)
  graph = _graph.Graph.from_model(model)
  graph.clone_layers()
  replacements = {}  # a shared Embedding is replaced by one shared QuantizedEmbedding
  for op in graph.ops:
    layer = op.layer
    if type(layer) is not keras.layers.Embedding:  # pylint: disable=unidiomatic-typecheck
      continue
    if layer not in replacements:
      quantized = QuantizedEmbedding(layer.input_dim, layer.output_dim, bits,
                                     mask_zero=layer.mask_zero, name=layer.name)
      graph.initial_weights[quantized] = list(
          quantize_rows(graph.initial_weights.pop(layer)[0], bits))
      replacements[layer] = quantized
    op.layer = replacements[layer]
  if not replacements:
    raise ValueError(f"kslim.quantize_embeddings: model {model.name!r} has no Embedding layer")
  return graph.build()
