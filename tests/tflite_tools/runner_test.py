"""Tests for tflite_tools.runner."""

import numpy as np
import tensorflow as tf
from absl.testing import absltest

from kslim import models
from kslim._keras import keras
from tests.tflite_tools import tiny_models
from tflite_tools import harness
from tflite_tools import runner


_CALIBRATION = np.random.default_rng(0).random((32, 4), dtype=np.float32)


def _int8_model_bytes():
  """A small full-integer model with int8 input and output, to exercise (de)quantization.

  Calibrated on `_CALIBRATION`, so evaluating on those inputs never clips.
  """
  keras.utils.set_random_seed(0)
  model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
  return model, tiny_models.int8_bytes(model, _CALIBRATION)


class RunnerTest(absltest.TestCase):

  def test_float_model_matches_keras_across_batches(self):
    model = models.reference_cnn()
    content = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    x = np.random.default_rng(1).random((10, 28, 28, 1), dtype=np.float32)
    got = runner.TFLiteRunner(content).predict(x, batch_size=4)  # batches of 4, 4, 2
    np.testing.assert_allclose(got, model.predict(x, verbose=0), atol=1e-5)

  def test_lstm_state_does_not_carry_over_and_a_fixed_batch_is_padded(self):
    # A converted LSTM keeps its state in variable tensors; Keras starts each call from zero.
    inputs = keras.Input((5, 3), batch_size=2)
    model = keras.Model(inputs, keras.layers.LSTM(4)(inputs))
    content = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    x = np.random.default_rng(0).normal(size=(5, 5, 3)).astype(np.float32)
    tflite = runner.TFLiteRunner(content)
    self.assertEqual(tflite.fixed_batch, 2)
    got = tflite.predict(x)  # batches of 2, the last one padded
    self.assertEqual(got.shape, (5, 4))
    np.testing.assert_allclose(got, model.predict(x, batch_size=2, verbose=0), atol=1e-5)
    np.testing.assert_allclose(tflite.predict(x[::-1])[::-1], got, atol=1e-6)
    # The harness (what remote targets and the emulator run) batches the same way.
    np.testing.assert_allclose(harness.predict(content, [x])[0], got, atol=1e-6)

  def test_int8_io_is_quantized_and_dequantized(self):
    model, content = _int8_model_bytes()
    r = runner.TFLiteRunner(content)
    self.assertEqual(r.input_details[0]["dtype"], np.int8)
    got = r.predict(_CALIBRATION)
    self.assertEqual(got.dtype, np.float32)
    want = model.predict(_CALIBRATION, verbose=0)
    # int8 input, weights and output: within a few output quantization steps.
    step = r.output_details[0]["quantization"][0]
    np.testing.assert_allclose(got, want, atol=4 * step)
    self.assertLess(step, 0.02)

  def test_quantize_and_dequantize_against_numpy(self):
    detail = {"dtype": np.int8, "quantization": (0.5, -3)}
    np.testing.assert_array_equal(
        runner.quantize(np.array([0.0, 1.0, -70.0, 70.0]), detail), [-3, -1, -128, 127])
    np.testing.assert_allclose(runner.dequantize(np.array([-3, 1], np.int8), detail), [0.0, 2.0])
    float_detail = {"dtype": np.float32, "quantization": (0.0, 0)}
    self.assertEqual(runner.quantize(np.array([1.5]), float_detail).dtype, np.float32)

  def test_wrong_input_shape_names_the_input(self):
    content = tf.lite.TFLiteConverter.from_keras_model(models.reference_cnn()).convert()
    with self.assertRaisesRegex(ValueError, r"input 'serving_default_image:0' expects examples "
                                r"of shape \(28, 28, 1\), got \(32, 32, 1\)"):
      runner.TFLiteRunner(content).predict(np.zeros((2, 32, 32, 1), np.float32))

  def test_missing_and_corrupt_files(self):
    with self.assertRaisesRegex(FileNotFoundError, r"TFLite file /nonexistent\.tflite not "
                                r"found"):
      runner.load_model_bytes("/nonexistent.tflite")
    path = self.create_tempfile(content="not a flatbuffer").full_path
    with self.assertRaisesRegex(ValueError, r"is not a TFLite model"):
      runner.TFLiteRunner(path)


if __name__ == "__main__":
  absltest.main()
