"""kslim.convert on float models: every mode, kslim's calibrators, bias correction, errors."""

import numpy as np
import tensorflow as tf
from ai_edge_litert import interpreter as litert
from absl.testing import absltest, parameterized

import kslim
from kslim import models
from kslim._keras import keras
from kslim.conversion import calibration
from tflite_tools.runner import TFLiteRunner


def _op_outputs(content):
  """``[(op name, output dtype, output scale)]`` in execution order."""
  interpreter = litert.Interpreter(model_content=bytes(content))
  interpreter.allocate_tensors()
  tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
  return [(op["op_name"], np.dtype(tensors[op["outputs"][0]]["dtype"]).name,
           tensors[op["outputs"][0]]["quantization"][0])
          for op in interpreter._get_ops_details()]  # pylint: disable=protected-access


class ModesTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.model = models.reference_cnn()
    cls.x = np.random.default_rng(0).random((40, 28, 28, 1), dtype=np.float32)
    cls.want = cls.model.predict(cls.x, verbose=0)

  @parameterized.parameters(("float32", 1e-5), ("float16", 2e-2), ("dynamic", 5e-2))
  def test_float_modes_match_keras(self, mode, tolerance):
    path = self.create_tempfile().full_path
    content = kslim.convert(self.model, mode, output_path=path)
    self.assertEqual(open(path, "rb").read(), content)
    got = TFLiteRunner(content).predict(self.x)
    np.testing.assert_allclose(got, self.want, atol=tolerance)

  def test_each_mode_stores_the_expected_dtypes(self):
    files = {mode: kslim.convert(self.model, mode, representative_data=self.x)
             for mode in ("float32", "float16", "dynamic", "int8", "int16x8")}
    # 70K float32 weights ~ 280 KB; float16 halves them and int8 quarters them.
    self.assertLess(len(files["float16"]), 0.6 * len(files["float32"]))
    self.assertLess(len(files["dynamic"]), 0.35 * len(files["float32"]))
    self.assertEqual(set(files["float32"].report.ops_by_dtype), {"float32"})
    self.assertIn("DEQUANTIZE", files["float16"].report.ops_by_dtype["float16"])
    dynamic = files["dynamic"].report
    self.assertIn("CONV_2D", dynamic.float_ops)
    self.assertIn("int8 weights", dynamic.float_reasons["CONV_2D"])
    self.assertEqual(set(files["int8"].report.ops_by_dtype), {"int8"})
    self.assertEqual(files["int8"].report.float_ops, ())
    conv_dtypes = {dtype for name, dtype, _ in _op_outputs(files["int16x8"]) if name == "CONV_2D"}
    self.assertEqual(conv_dtypes, {"int16"})
    self.assertIn("ops left in float32: none", str(files["int8"].report))

  def test_int8_agrees_with_keras(self):
    content = kslim.convert(self.model, "int8", representative_data=self.x, io_dtype="float32",
                            calibration="mse")
    got = TFLiteRunner(content).predict(self.x)
    self.assertGreaterEqual((got.argmax(1) == self.want.argmax(1)).mean(), 0.9)

  def test_bad_options_are_refused_before_converting(self):
    with self.assertRaisesRegex(ValueError, r"unknown conversion mode 'int4'; choose one of "
                                r"\['float32', 'float16', 'dynamic', 'int8', 'int16x8'\]"):
      kslim.convert(self.model, "int4")
    with self.assertRaisesRegex(ValueError, "unknown calibration 'entropy'"):
      kslim.convert(self.model, "int8", calibration="entropy")
    with self.assertRaisesRegex(ValueError, "apply to mode='int8'; 'int16x8' uses TFLite's"):
      kslim.convert(self.model, "int16x8", calibration="kl", representative_data=self.x)
    with self.assertRaisesRegex(ValueError, "io_dtype 'int8' does not fit mode 'int16x8'"):
      kslim.convert(self.model, "int16x8", io_dtype="int8", representative_data=self.x)
    with self.assertRaisesRegex(ValueError, "io_dtype applies to the integer modes"):
      kslim.convert(self.model, "float16", io_dtype="float32")
    with self.assertRaisesRegex(ValueError, "representative_data is required"):
      kslim.convert(self.model, "int8")
    with self.assertRaisesRegex(ValueError, r"has 8 example\(s\); at least 32"):
      kslim.convert(self.model, "int8", representative_data=self.x[:8])
    with self.assertRaisesRegex(ValueError, r"the model's input takes examples of shape "
                                r"\(28, 28, 1\)"):
      kslim.convert(self.model, "int8", representative_data=self.x[:, :14])
    qat = kslim.quantize(self.model)
    with self.assertRaisesRegex(ValueError, "calibration and bias_correction apply to float"):
      kslim.convert(qat, "int8", calibration="kl")


def _mlp(seed=0):
  tf.keras.utils.set_random_seed(seed)
  inputs = keras.Input((16,))
  hidden = keras.layers.Dense(64, activation="relu", name="hidden")(inputs)
  return keras.Model(inputs, keras.layers.Dense(4, name="out")(hidden))


class CalibratorsTest(parameterized.TestCase):
  """A calibration set with two outlier examples (x25); the deployed inputs have none."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    rng = np.random.default_rng(0)
    cls.model = _mlp()
    cls.calibration = rng.normal(size=(512, 16)).astype(np.float32)
    cls.calibration[:2] *= 25
    cls.test = rng.normal(size=(2000, 16)).astype(np.float32)
    cls.want = cls.model.predict(cls.test, verbose=0)
    cls.files = {method: kslim.convert(cls.model, "int8", representative_data=cls.calibration,
                                       calibration=method, io_dtype="float32", percentile=99.5)
                 for method in ("minmax", "percentile", "kl", "mse")}

  def _hidden_scale(self, method):
    return [scale for name, _, scale in _op_outputs(self.files[method])
            if name == "FULLY_CONNECTED"][0]

  def _error(self, method):
    return float(np.mean((TFLiteRunner(self.files[method]).predict(self.test) - self.want) ** 2))

  @parameterized.parameters("percentile", "kl", "mse")
  def test_the_file_holds_the_ranges_kslim_chose(self, method):
    # kslim.convert calibrates on the first num_samples=256 examples.
    qat = calibration.calibrate(self.model, self.calibration[:256], method, percentile=99.5)
    low, high = qat.get_layer("hidden_quant").range()
    self.assertAlmostEqual(self._hidden_scale(method), (high - low) / 255, delta=1e-6)

  @parameterized.parameters("percentile", "kl")
  def test_clipping_calibrators_ignore_the_outliers(self, method):
    self.assertLess(self._hidden_scale(method), 0.6 * self._hidden_scale("minmax"))
    # The input keeps its outlier-stretched range (it is never clipped), so the error falls
    # by what the hidden layer's finer grid gives.
    self.assertLess(self._error(method), 0.75 * self._error("minmax"))

  def test_mse_keeps_rare_far_outliers_but_never_does_worse(self):
    # Clipping 32 values 25 sigma out costs more squared error than a coarser grid does.
    self.assertLessEqual(self._hidden_scale("mse"), self._hidden_scale("minmax"))
    self.assertLess(self._error("mse"), 1.05 * self._error("minmax"))


class KeptRangesTest(absltest.TestCase):

  def test_model_input_and_relu6_outputs_keep_their_min_max_range(self):
    tf.keras.utils.set_random_seed(0)
    inputs = keras.Input((16,), name="x")
    hidden = keras.layers.Dense(64, activation="relu6", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(4, name="out")(hidden))
    data = np.random.default_rng(0).laplace(size=(256, 16)).astype(np.float32) * 3
    ranges = {}
    for method in ("minmax", "kl", "percentile"):
      qat = calibration.calibrate(model, data, method, percentile=99.0)
      ranges[method] = {layer.name: layer.range()
                        for layer in kslim.quantization.activation_quantizers(qat)}
    for method in ("kl", "percentile"):
      for name in ("x_quant", "hidden_quant"):
        self.assertEqual(ranges[method][name], ranges["minmax"][name], (method, name))
    self.assertEqual(ranges["minmax"]["hidden_quant"], (0.0, 6.0))
    self.assertLess(ranges["percentile"]["out_quant"][1], ranges["minmax"]["out_quant"][1])


class PerFeatureNormalizationTest(absltest.TestCase):
  """A per-pixel Normalization whose 1/std multipliers span three orders of magnitude (pixels
  that are almost always 0), as `models.standardized_cnn` has on Fashion-MNIST."""

  def test_kslim_keeps_the_multipliers_that_tflite_minmax_rounds_to_zero(self):
    tf.keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    images = rng.random((256, 8, 8, 1), dtype=np.float32)
    images[:, :, :2] *= rng.random((256, 8, 2, 1)) < 0.01  # a border that is rarely lit
    model = models.standardized_cnn((8, 8, 1), width=0.25)
    models.adapt_normalization(model, images)
    want = model.predict(images, verbose=0)

    def error(method):
      content = kslim.convert(model, "int8", representative_data=images, calibration=method,
                              percentile=100.0, io_dtype="float32")
      return float(np.abs(TFLiteRunner(content).predict(images) - want).mean())

    # TFLite quantizes the per-pixel multiplier per tensor, so most pixels are multiplied by
    # 0; kslim's path (the same min/max ranges) keeps the two elementwise ops in float.
    self.assertGreater(error("minmax"), 5 * error("percentile"))


class BiasCorrectionTest(absltest.TestCase):

  def test_bias_correction_removes_the_mean_shift_of_quantization(self):
    # One large output channel sets a per-tensor range far too coarse for the others, whose
    # weights then round with a systematic error; the inputs have a non-zero mean.
    tf.keras.utils.set_random_seed(1)
    inputs = keras.Input((32,))
    model = keras.Model(inputs, keras.layers.Dense(8, name="dense")(inputs))
    kernel, bias = model.get_weights()
    kernel[:, 0] *= 60
    model.set_weights([kernel, bias])
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (512, 32)).astype(np.float32)
    want = model.predict(x, verbose=0)
    shifts = {}
    for correct in (False, True):
      content = kslim.convert(model, "int8", representative_data=x, per_channel=False,
                              bias_correction=correct, io_dtype="float32")
      shifts[correct] = np.abs((TFLiteRunner(content).predict(x) - want).mean(axis=0))[1:]
    self.assertLess(shifts[True].max(), 0.25 * shifts[False].max())


class RecurrentTest(absltest.TestCase):

  def test_a_dynamic_batch_lstm_converts_as_a_batch_of_one(self):
    # TFLite's fused LSTM needs a fixed batch; over a dynamic one the converter fails on
    # TensorListReserve, so kslim converts a batch-1 copy.
    inputs = keras.Input((6, 4))
    model = keras.Model(inputs, keras.layers.LSTM(3, name="lstm")(inputs), name="rnn")
    x = np.random.default_rng(0).normal(size=(40, 6, 4)).astype(np.float32)
    want = model.predict(x, verbose=0)
    for mode, tolerance in (("float32", 1e-5), ("int8", 0.05)):
      content = kslim.convert(model, mode, representative_data=x if mode == "int8" else None,
                              io_dtype="float32" if mode == "int8" else None)
      self.assertIn("UNIDIRECTIONAL_SEQUENCE_LSTM", content.report.ops_by_dtype[
          "float32" if mode == "float32" else "int8"])
      runner = TFLiteRunner(content)
      self.assertEqual(runner.fixed_batch, 1)
      np.testing.assert_allclose(runner.predict(x), want, atol=tolerance)
    self.assertIsNone(model.inputs[0].shape[0])  # the model itself is not changed

  def test_a_gru_calibrates_without_tflites_crashing_calibrator(self):
    # TFLite's min/max calibrator segfaults on the GRU's WHILE loop; kslim's calibration of
    # the same ranges converts it, the GRU staying float between int8 ops.
    inputs = keras.Input((6, 4))
    hidden = keras.layers.GRU(5, name="gru")(keras.layers.Dense(4, activation="relu")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(hidden), name="gru_model")
    x = np.random.default_rng(0).normal(size=(40, 6, 4)).astype(np.float32)
    content = kslim.convert(model, "int8", representative_data=x, io_dtype="float32")
    self.assertIn("WHILE", content.report.ops_by_dtype["int32"])
    self.assertIn("FULLY_CONNECTED", content.report.ops_by_dtype["int8"])
    np.testing.assert_allclose(TFLiteRunner(content).predict(x), model.predict(x, verbose=0),
                               atol=0.05)
    with self.assertRaisesRegex(ValueError, r"int16x8 mode cannot hold recurrent layer\(s\) "
                                r"\['gru'\]"):
      kslim.convert(model, "int16x8", representative_data=x)


if __name__ == "__main__":
  absltest.main()
