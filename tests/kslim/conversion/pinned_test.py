"""kslim.conversion.pinned: QAT models with an LSTM to int8 TFLite with their ranges."""

import warnings

import numpy as np
from absl.testing import absltest

import kslim
from kslim._keras import keras
from kslim.conversion import pinned
from kslim.quantization import recurrent
from tflite_tools.runner import TFLiteRunner

_STEPS, _FEATURES = 6, 3


def _data(count, seed=0):
  """Sequences whose class is the sign pattern of two feature sums."""
  x = np.random.default_rng(seed).normal(size=(count, _STEPS, _FEATURES)).astype(np.float32)
  y = (x[:, :, 0].sum(axis=1) > 0).astype(np.int64) + (x[:, :, 1].sum(axis=1) > 0)
  return x, y


def _model(**options):
  inputs = keras.Input((_STEPS, _FEATURES), name="x")
  hidden = keras.layers.Conv1D(6, 3, padding="same", use_bias=False, name="conv")(inputs)
  hidden = keras.layers.ReLU(name="relu")(keras.layers.BatchNormalization(name="bn")(hidden))
  hidden = keras.layers.LSTM(8, name="lstm", **options)(hidden)
  if options.get("return_sequences"):
    hidden = keras.layers.Flatten(name="flat")(hidden)
  return keras.Model(inputs, keras.layers.Dense(3, name="logits")(hidden), name="rnn")


def _trained_qat(config=None, **options):
  keras.utils.set_random_seed(0)  # the same weights and shuffling every run
  qat = kslim.quantize(_model(**options), config)
  qat.compile(keras.optimizers.Adam(1e-2),
              keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  x, y = _data(512)
  qat.fit(x, y, batch_size=16, epochs=2, verbose=0)
  return qat


def _tensor(interpreter, name_part):
  return next(d for d in interpreter.get_tensor_details() if name_part in d["name"])


class PinnedConversionTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.qat = _trained_qat()
    cls.x, _ = _data(128, seed=1)
    with warnings.catch_warnings(record=True) as cls.warnings:
      warnings.simplefilter("always")
      cls.content = kslim.convert(cls.qat, "int8", representative_data=cls.x, report=True)

  def test_every_op_is_int8_with_the_lstm_kernel(self):
    ops = self.content.report.ops_by_dtype
    self.assertEqual(set(ops), {"int8"})
    self.assertIn("UNIDIRECTIONAL_SEQUENCE_LSTM", ops["int8"])
    self.assertIn("CONV_2D", ops["int8"])
    self.assertEqual(self.content.report.float_ops, ())

  def test_the_file_holds_the_ranges_learned_in_training(self):
    self.assertEqual([str(w.message) for w in self.warnings if "matched" in str(w.message)],
                     [])
    # The parity report matches tensors by scale: every range holder found its tensor.
    parity = {entry.layer: entry for entry in self.content.report.parity}
    self.assertEqual(set(parity), {"x_quant", "relu_quant", "lstm", "logits_quant"})
    for entry in parity.values():
      self.assertIsNotNone(entry.tflite_tensor, entry)
    interpreter = TFLiteRunner(self.content).interpreter
    scale, zero_point = interpreter.get_input_details()[0]["quantization"]
    self.assertAlmostEqual(scale / self.qat.get_layer("x_quant").scale(), 1.0, places=5)
    self.assertEqual(zero_point, 0)  # the symmetric input grid
    lstm = next(op for op in interpreter._get_ops_details()  # pylint: disable=protected-access
                if op["op_name"] == "UNIDIRECTIONAL_SEQUENCE_LSTM")
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    output_scale = details[lstm["outputs"][0]]["quantization"][0]
    self.assertAlmostEqual(output_scale / self.qat.get_layer("lstm").scale(), 1.0, places=5)

  def test_the_lstm_weights_are_the_qat_gate_grids(self):
    interpreter = TFLiteRunner(self.content).interpreter
    lstm = next(op for op in interpreter._get_ops_details()  # pylint: disable=protected-access
                if op["op_name"] == "UNIDIRECTIONAL_SEQUENCE_LSTM")
    cell = self.qat.get_layer("lstm").layer.cell
    want = {"input": recurrent.quantize_gates(cell.kernel).numpy(),
            "recurrent": recurrent.quantize_gates(cell.recurrent_kernel).numpy()}
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    # Inputs 1-4: input-to-gate weights, 5-8: recurrent-to-gate weights, gates i, f, c, o;
    # TFLite stores each (units, rows).
    for first, kind in ((1, "input"), (5, "recurrent")):
      for gate, block in enumerate(np.split(want[kind], 4, axis=1)):
        detail = details[lstm["inputs"][first + gate]]
        self.assertEqual(detail["dtype"], np.int8)
        scale, _ = detail["quantization"]
        stored = interpreter.get_tensor(detail["index"]).astype(np.float32) * scale
        np.testing.assert_allclose(stored, block.T, atol=1e-6)

  def test_the_file_agrees_with_the_keras_model(self):
    want = self.qat.predict(self.x, verbose=0)
    got = TFLiteRunner(self.content).predict(self.x)
    scale = self.qat.get_layer("logits_quant").scale()
    self.assertGreaterEqual((got.argmax(1) == want.argmax(1)).mean(), 0.97)
    self.assertLessEqual(np.abs(got - want).max() / scale, 4.01)
    for entry in self.content.report.parity:  # measured: at most 3 steps, under 10% off
      self.assertLessEqual(entry.max_steps, 4.01, entry)
      self.assertLess(entry.mismatch, 0.2, entry)

  def test_an_lstm_over_sequences_converts_too(self):
    qat = _trained_qat(return_sequences=True)
    content = kslim.convert(qat, "int8", representative_data=self.x, io_dtype="float32")
    self.assertIn("UNIDIRECTIONAL_SEQUENCE_LSTM", content.report.ops_by_dtype["int8"])
    self.assertEqual(content.report.float_ops, ())  # only the float input's QUANTIZE
    got = TFLiteRunner(content).predict(self.x)
    self.assertGreaterEqual((got.argmax(1) == qat.predict(self.x, verbose=0).argmax(1)).mean(),
                            0.97)

  def test_a_backwards_lstm_converts_after_its_reversal(self):
    # TFLite runs it as REVERSE_V2 + LSTM; the reversal moves int8 values without requantizing,
    # so its output must keep the input's range (a calibrated one agreed on 41% of examples).
    qat = _trained_qat(go_backwards=True)
    content = kslim.convert(qat, "int8", representative_data=self.x, io_dtype="float32",
                            report=True)
    self.assertIn("REVERSE_V2", content.report.ops_by_dtype["int8"])
    got, want = TFLiteRunner(content).predict(self.x), qat.predict(self.x, verbose=0)
    self.assertGreaterEqual((got.argmax(1) == want.argmax(1)).mean(), 0.97)
    for entry in content.report.parity:
      self.assertLessEqual(entry.max_steps, 4.01, entry)

  def test_a_bidirectional_lstm_stays_float_in_qat_and_converts(self):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((_STEPS, _FEATURES), name="x")
    hidden = keras.layers.Bidirectional(keras.layers.LSTM(8), name="bi")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(hidden))
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      qat = kslim.quantize(model)
    self.assertTrue(any("bi (Bidirectional)" in str(w.message) for w in caught))
    qat.compile(keras.optimizers.Adam(1e-2),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(*_data(512), batch_size=16, epochs=2, verbose=0)
    content = kslim.convert(qat, "int8", representative_data=self.x, io_dtype="float32")
    self.assertEqual(content.report.ops_by_dtype["int8"]["UNIDIRECTIONAL_SEQUENCE_LSTM"], 2)
    got, want = TFLiteRunner(content).predict(self.x), qat.predict(self.x, verbose=0)
    # Its float LSTMs do not round h_t as the int8 kernel does: 94.5% agreement at this seed,
    # 90-98% over unseeded runs.
    self.assertGreaterEqual((got.argmax(1) == want.argmax(1)).mean(), 0.9)

  def test_a_float_model_with_an_lstm_calibrates_with_kslims_calibrators(self):
    # The LSTM's range comes from its float outputs (not its input sequence, which cost the
    # row LSTM 30 points when it did).
    model = _model()
    model.set_weights([w * 3 for w in model.get_weights()])  # h_t of both signs, near +-1
    content = kslim.convert(model, "int8", representative_data=self.x, calibration="mse",
                            io_dtype="float32")
    self.assertIn("UNIDIRECTIONAL_SEQUENCE_LSTM", content.report.ops_by_dtype["int8"])
    want = model.predict(self.x, verbose=0)
    got = TFLiteRunner(content).predict(self.x)
    self.assertLess(np.abs(got - want).max(), 0.05 * np.abs(want).max())


class PinnedErrorsTest(absltest.TestCase):

  def test_a_qat_lstm_needs_representative_data(self):
    qat = _trained_qat()
    with self.assertRaisesRegex(ValueError, "'rnn' holds an LSTM.*pass representative_data"):
      kslim.convert(qat, "int8")

  def test_mixed_per_channel_and_per_tensor_kernels_are_refused(self):
    config = kslim.QuantConfig(overrides={"logits": {"weight_quantizer": "abs_max"}})
    qat = _trained_qat(config)
    with self.assertRaisesRegex(ValueError, r"per-channel kernels \['conv'\], per-tensor "
                                r"kernels \['quant_logits'\]"):
      kslim.convert(qat, "int8", representative_data=_data(64)[0])

  def test_per_tensor_kernels_stay_on_their_grid(self):
    qat = _trained_qat(kslim.QuantConfig(weight_quantizer="abs_max"))
    x, _ = _data(64, seed=1)
    content = kslim.convert(qat, "int8", representative_data=x, report=True)
    for entry in content.report.parity:
      self.assertLessEqual(entry.max_steps, 4.01, entry)

  def test_needs_calibration_finds_quantized_and_float_lstms(self):
    self.assertTrue(pinned.needs_calibration(_model()))
    self.assertTrue(pinned.needs_calibration(kslim.quantize(_model())))
    self.assertFalse(pinned.needs_calibration(kslim.models.plain_cnn()))


if __name__ == "__main__":
  absltest.main()
