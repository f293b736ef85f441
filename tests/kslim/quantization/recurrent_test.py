"""kslim.quantization.recurrent: QuantizedLSTM against a numpy LSTM, state, saving, rules."""

import warnings

import numpy as np
import tensorflow as tf
from absl.testing import absltest

import kslim
from kslim._keras import keras
from kslim.quantization import quant_ops
from kslim.quantization import quantizers
from kslim.quantization import recurrent
from tests.quant_reference import np_fake_quant

_RNG = np.random.default_rng(0)
_UNITS, _FEATURES, _STEPS = 4, 3, 5


def _sigmoid(v):
  return 1.0 / (1.0 + np.exp(-v))


def _np_gates(kernel):
  """Each gate's block of a (rows, 4 * units) kernel on its own symmetric 8-bit grid."""
  blocks = np.split(kernel, 4, axis=1)
  return np.concatenate([np_fake_quant(b, -np.abs(b).max(), np.abs(b).max(), 8, True)
                         for b in blocks], axis=1)


def _np_lstm(x, kernel, recurrent_kernel, bias, round_hidden):
  """A Keras LSTM (gates i, f, c, o; zero initial state) in numpy, `round_hidden` on each h_t."""
  h = np.zeros((len(x), _UNITS), np.float32)
  c = np.zeros_like(h)
  for t in range(x.shape[1]):
    i, f, g, o = np.split(x[:, t] @ kernel + h @ recurrent_kernel + bias, 4, axis=1)
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    h = round_hidden(_sigmoid(o) * np.tanh(c))
  return h


def _layer(bound=None):
  """A built QuantizedLSTM with large weights (so h_t saturates): with `bound`, PACT's
  symmetric range ±bound, else a moving average of abs max."""
  quantizer = (quantizers.MovingAverageAbsMax(8, signed=True) if bound is None
               else quantizers.PACT(8, signed=True))
  layer = recurrent.QuantizedLSTM(keras.layers.LSTM(_UNITS), quantizer)
  layer.build((None, _STEPS, _FEATURES))
  kernel, recurrent_kernel, bias = layer.layer.get_weights()
  gate_scale = np.repeat([1.0, 3.0, 0.5, 2.0], _UNITS).astype(np.float32)
  layer.layer.set_weights([kernel * 3 * gate_scale, recurrent_kernel * 3 * gate_scale,
                           _RNG.normal(size=bias.shape).astype(np.float32)])
  if bound is not None:
    layer._quantizer_vars["alpha"].assign(bound)  # pylint: disable=protected-access
  return layer


class QuantizedLSTMTest(absltest.TestCase):

  def test_each_gate_matrix_gets_its_own_symmetric_8_bit_grid(self):
    kernel = (_RNG.normal(size=(_FEATURES, 4 * _UNITS))
              * np.repeat([1.0, 10.0, 0.1, 3.0], _UNITS)).astype(np.float32)
    got = recurrent.quantize_gates(tf.constant(kernel)).numpy()
    np.testing.assert_allclose(got, _np_gates(kernel), atol=1e-6)
    for block in np.split(got, 4, axis=1):  # 255 levels of the block's own step
      step = np.abs(block).max() / 127
      np.testing.assert_allclose(block / step, np.round(block / step), atol=1e-3)

  def test_rounds_the_hidden_state_at_every_step_as_tflite(self):
    layer = _layer(bound=0.3)  # narrower than |h|: clipping inside the recurrence matters
    x = _RNG.normal(size=(16, _STEPS, _FEATURES)).astype(np.float32)
    kernel, recurrent_kernel, bias = layer.layer.get_weights()
    q_kernel, q_recurrent = _np_gates(kernel), _np_gates(recurrent_kernel)
    round_h = lambda h: np_fake_quant(h, -0.3, 0.3, 8, True)
    want = round_h(_np_lstm(x, q_kernel, q_recurrent, bias, round_h))
    got = layer(x, training=False).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    # Rounding only the output (a float LSTM then one fake-quant) is another model.
    once = round_h(_np_lstm(x, q_kernel, q_recurrent, bias, lambda h: h))
    self.assertGreater(np.abs(once - got).max(), 0.01)

  def test_a_backwards_lstm_reads_the_sequence_from_its_end(self):
    layer = recurrent.QuantizedLSTM(keras.layers.LSTM(_UNITS, go_backwards=True),
                                    quantizers.PACT(8, signed=True))
    layer.build((None, _STEPS, _FEATURES))
    layer._quantizer_vars["alpha"].assign(0.3)  # pylint: disable=protected-access
    x = _RNG.normal(size=(8, _STEPS, _FEATURES)).astype(np.float32)
    kernel, recurrent_kernel, bias = layer.layer.get_weights()
    round_h = lambda h: np_fake_quant(h, -0.3, 0.3, 8, True)
    want = round_h(_np_lstm(x[:, ::-1], _np_gates(kernel), _np_gates(recurrent_kernel), bias,
                            round_h))
    np.testing.assert_allclose(layer(x, training=False).numpy(), want, atol=1e-5)

  def test_weights_only_is_the_keras_lstm_with_quantized_kernels(self):
    layer = _layer(bound=0.3)
    x = _RNG.normal(size=(8, _STEPS, _FEATURES)).astype(np.float32)
    plain = keras.layers.LSTM(_UNITS)
    plain.build((None, _STEPS, _FEATURES))
    kernel, recurrent_kernel, bias = layer.layer.get_weights()
    plain.set_weights([_np_gates(kernel), _np_gates(recurrent_kernel), bias])
    with quant_ops.weights_only():
      got = layer(x, training=False).numpy()
    np.testing.assert_allclose(got, plain(x).numpy(), atol=1e-6)

  def test_training_takes_the_range_from_the_unrounded_outputs(self):
    layer = _layer()
    x = _RNG.normal(size=(16, _STEPS, _FEATURES)).astype(np.float32)
    with quant_ops.weights_only():  # the float LSTM with the quantized weights
      float_max = np.abs(layer(x, training=False).numpy()).max()
    layer(x, training=True)
    # The bias-corrected moving average after one batch is that batch's max |h|.
    self.assertAlmostEqual(layer.range()[1], float_max, places=5)

  def test_pact_alpha_gets_a_gradient_through_the_recurrence(self):
    layer = recurrent.QuantizedLSTM(keras.layers.LSTM(_UNITS, return_sequences=True),
                                    quantizers.PACT(8, signed=True))
    x = _RNG.normal(size=(16, _STEPS, _FEATURES)).astype(np.float32) * 3
    layer(x, training=True)  # PACT's first level from the data
    alpha = layer._quantizer_vars["alpha"]  # pylint: disable=protected-access
    self.assertIn(alpha.ref(), {w.ref() for w in layer.trainable_weights})
    alpha.assign(0.2)  # clips most h_t
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(layer(x, training=False))
    self.assertNotEqual(float(tape.gradient(loss, alpha)), 0.0)

  def test_saves_and_loads_with_identical_outputs(self):
    inputs = keras.Input((_STEPS, _FEATURES), name="x")
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.LSTM(_UNITS,
                                                                        name="lstm")(inputs)))
    qat = kslim.quantize(model)
    x = _RNG.normal(size=(32, _STEPS, _FEATURES)).astype(np.float32)
    qat.compile("adam", "mse")
    qat.fit(x, np.zeros((32, 2)), epochs=1, verbose=0)
    path = self.create_tempdir().full_path + "/qat.keras"
    qat.save(path)
    with kslim.quantization.scope():
      loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), qat.predict(x, verbose=0))
    self.assertIsInstance(loaded.get_layer("lstm"), recurrent.QuantizedLSTM)

  def test_options_the_int8_kernel_does_not_run_are_refused(self):
    for lstm, reason in ((keras.layers.LSTM(2, stateful=True), "stateful"),
                         (keras.layers.LSTM(2, activation="relu"), "activation is not tanh"),
                         (keras.layers.LSTM(2, recurrent_dropout=0.1), "dropout")):
      self.assertEqual(recurrent.unsupported_reason(lstm), reason)
      with self.assertRaisesRegex(ValueError, f"LSTM {lstm.name!r}.*{reason}"):
        recurrent.QuantizedLSTM(lstm, quantizers.MovingAverageAbsMax())


class QuantizeLSTMTest(absltest.TestCase):

  def _model(self, **lstm_options):
    inputs = keras.Input((_STEPS, _FEATURES), name="x")
    hidden = keras.layers.LSTM(_UNITS, name="lstm", **lstm_options)(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="logits")(hidden))

  def test_quantize_replaces_the_lstm_and_keeps_dense_kernels_per_channel(self):
    qat = kslim.quantize(self._model())
    self.assertIsInstance(qat.get_layer("lstm"), recurrent.QuantizedLSTM)
    # The QuantizedLSTM holds its output range: no ActivationQuantize follows it.
    self.assertEqual([l.name for l in kslim.quantization.activation_quantizers(qat)],
                     ["x_quant", "lstm", "logits_quant"])
    # Converted without fake-quant ops, a Dense kernel keeps one range per output channel.
    self.assertIsInstance(qat.get_layer("quant_logits").quantize_config.quantizer,
                          quantizers.ChannelWiseAbsMax)

  def test_an_lstm_the_kernel_cannot_run_stays_float_with_the_warning(self):
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      qat = kslim.quantize(self._model(activation="relu"))
    self.assertIs(type(qat.get_layer("lstm")), keras.layers.LSTM)
    self.assertTrue(any("lstm (LSTM)" in str(w.message) for w in caught))

  def test_trains_under_mirrored_strategy(self):
    x = _RNG.normal(size=(64, _STEPS, _FEATURES)).astype(np.float32)
    with tf.distribute.MirroredStrategy().scope():
      qat = kslim.quantize(self._model(), kslim.QuantConfig(activation_quantizer="pact"))
      qat.compile(keras.optimizers.Adam(1e-3), "mse")
    qat.fit(x, np.zeros((64, 2)), epochs=1, batch_size=16, verbose=0)
    self.assertGreater(qat.get_layer("lstm").range()[1], 0.0)

  def test_fewer_than_8_bits_are_refused_before_training(self):
    for config in (kslim.QuantConfig(weight_bits=4),
                   kslim.QuantConfig(overrides={"logits": {"activation_bits": 4}})):
      with self.assertRaisesRegex(ValueError, r"LSTM layer\(s\) \['lstm'\] needs 8-bit"):
        kslim.quantize(self._model(), config)


if __name__ == "__main__":
  absltest.main()
