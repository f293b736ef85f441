"""An LSTM that computes what TFLite's int8 LSTM kernel computes.

TFLite's integer ``UNIDIRECTIONAL_SEQUENCE_LSTM`` stores each of its eight gate matrices
(input and recurrent weights of the input, forget, cell and output gates) as int8 with one
symmetric scale, keeps the cell state and the gates in int16, and writes the hidden state
``h_t`` as int8 on the output's grid *at every step*: the next step reads the rounded (and
clipped) ``h_t``. A float Keras LSTM followed by one fake-quant op rounds only what leaves the
layer, so its output drifts from the file's by tens of steps once the range clips some
``h_t`` (measured: 33 steps on a toy model). `QuantizedLSTM` quantizes where the kernel does:

- every gate matrix on its own symmetric 8-bit grid (abs max, narrow range);
- ``h_t`` at every step, with the layer's output range (this layer is the range holder of the
  LSTM's output, like an `ActivationQuantize`).

The int16 cell state and gates stay float: their rounding is below an int8 step. In training a
float pass (same quantized weights, unrounded ``h_t``) gives the range statistics (an EMA or
PACT's initial level); then the quantized recurrence runs with that range, so gradients reach
PACT's alpha through every step.

The int8 file is made by `kslim.conversion.pinned`: traced in `quant_ops.weights_only()`,
this layer is the plain Keras LSTM with quantized weights, which the converter fuses into
one LSTM op, and the output range is pinned into TFLite's calibration.
"""

import tensorflow as tf

from kslim._keras import keras
from kslim.quantization import quant_ops
from kslim.quantization.wrapper import ActivationQuantize

__all__ = ["QuantizedLSTM", "unsupported_reason"]

_register = keras.utils.register_keras_serializable(package="kslim")
_GATES = 4  # Keras orders an LSTM kernel's columns as input, forget, cell, output gate


def unsupported_reason(layer):
  """Why `QuantizedLSTM` cannot stand in for the LSTM `layer`, or None when it can.

  TFLite fuses only the standard cell (tanh, sigmoid gates) into its LSTM kernel (a backwards
  one after a REVERSE_V2); the other options change what is computed in ways the int8 kernel
  does not follow.
  """
  checks = (
      (keras.activations.serialize(layer.activation) == "tanh", "activation is not tanh"),
      (keras.activations.serialize(layer.recurrent_activation) == "sigmoid",
       "recurrent_activation is not sigmoid"),
      (not layer.stateful, "stateful"),
      (not layer.return_state, "return_state"),
      (not layer.dropout and not layer.recurrent_dropout, "dropout"),
  )
  return next((reason for ok, reason in checks if not ok), None)


def quantize_gates(kernel):
  """Fake-quantizes each gate's block of an LSTM kernel ``(rows, 4 * units)`` on its own
  symmetric 8-bit grid, as TFLite stores the four matrices separately."""
  rows, units = kernel.shape[0], kernel.shape[1] // _GATES
  # (rows, gate, unit) -> (rows * unit, gate): one channel per gate for the per-channel op.
  gates = tf.reshape(tf.transpose(tf.reshape(kernel, (rows, _GATES, units)), (0, 2, 1)),
                     (rows * units, _GATES))
  quantized = quant_ops.symmetric_fake_quant(gates, quant_ops.abs_max(gates, per_channel=True),
                                             per_channel=True, clip="none")
  return tf.reshape(tf.transpose(tf.reshape(quantized, (rows, units, _GATES)), (0, 2, 1)),
                    (rows, _GATES * units))


@_register
class QuantizedLSTM(ActivationQuantize):
  """`layer` (a Keras LSTM, forwards or backwards) with 8-bit gate weights and its output
  quantized at every step.

  Args:
    layer: the LSTM; see `unsupported_reason` for the options it may not use.
    quantizer: the activation quantizer of the output (8 bits for TFLite's int8 kernel).
    **kwargs: Keras layer arguments (``name``).

  Example:
    >>> from kslim.quantization import quantizers
    >>> lstm = QuantizedLSTM(keras.layers.LSTM(16), quantizers.MovingAverageAbsMax())
  """

  def __init__(self, layer, quantizer, **kwargs):
    reason = unsupported_reason(layer)
    if reason is not None:
      raise ValueError(f"QuantizedLSTM: LSTM {layer.name!r} cannot be quantized ({reason})")
    super().__init__(quantizer, **kwargs)
    self.layer = layer

  def build(self, input_shape):
    if not self.layer.built:
      self.layer.build(input_shape)
    units = self.layer.units
    super().build(tf.TensorShape(input_shape)[:-1].concatenate([units]))

  def call(self, inputs, training=None, mask=None):
    if mask is not None:
      raise ValueError(f"QuantizedLSTM {self.name!r}: masked sequences are not supported "
                       "(TFLite's LSTM kernel has no mask)")
    if training is None:
      training = keras.backend.learning_phase()
    cell = self.layer.cell
    kernel, recurrent = quantize_gates(cell.kernel), quantize_gates(cell.recurrent_kernel)
    if quant_ops.is_weights_only():
      return self._keras_lstm(inputs, kernel, recurrent)
    return tf.__internal__.smart_cond.smart_cond(
        training, lambda: self._quantized(inputs, kernel, recurrent, True),
        lambda: self._quantized(inputs, kernel, recurrent, False))

  def _quantized(self, inputs, kernel, recurrent, training):
    if training:  # statistics from the unrounded outputs (PACT's first level, EMAs)
      self.quantizer(self._recurrence(inputs, kernel, recurrent, None), True,
                     weights=self._quantizer_vars)
    return self._recurrence(inputs, kernel, recurrent,
                            lambda h: self.quantizer(h, False, weights=self._quantizer_vars))

  def _recurrence(self, inputs, kernel, recurrent, round_hidden):
    """The LSTM over time; `round_hidden` (or nothing) applied to every ``h_t``."""
    cell = self.layer.cell
    projected = tf.einsum("btc,cg->btg", inputs, kernel)
    if cell.use_bias:
      projected += cell.bias
    batch = tf.shape(inputs)[0]
    zeros = tf.zeros(tf.stack([batch, self.layer.units]), inputs.dtype)

    def step(x_t, states):
      h, c = states
      z = x_t + tf.matmul(h, recurrent)
      i, f, g, o = tf.split(z, _GATES, axis=-1)
      c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
      h = tf.sigmoid(o) * tf.tanh(c)
      if round_hidden is not None:
        h = round_hidden(h)
      return h, [h, c]

    last, sequence, _ = keras.backend.rnn(step, projected, [zeros, zeros],
                                          go_backwards=self.layer.go_backwards,
                                          unroll=self.layer.unroll)
    return sequence if self.layer.return_sequences else last

  def _keras_lstm(self, inputs, kernel, recurrent):
    """The Keras LSTM itself with the quantized kernels (what the converter fuses)."""
    cell = self.layer.cell
    saved = cell.kernel, cell.recurrent_kernel
    cell.kernel, cell.recurrent_kernel = kernel, recurrent
    try:
      return self.layer.call(inputs)
    finally:
      cell.kernel, cell.recurrent_kernel = saved

  def quantized_tensor(self, node):
    """The LSTM's output: the values this layer rounds (its input is the sequence)."""
    return self.get_output_at(node)

  def compute_output_shape(self, input_shape):
    return self.layer.compute_output_shape(input_shape)

  def get_config(self):
    return {**super().get_config(), "layer": keras.layers.serialize(self.layer)}

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config["layer"] = keras.layers.deserialize(config["layer"])
    return super().from_config(config)
