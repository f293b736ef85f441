"""Tests for tflite_tools.compare (tflite-compare)."""

import json
import os

import numpy as np
from absl.testing import absltest

from kslim._keras import keras
from tests.binaries import run_binary
from tests.tflite_tools import tiny_models
from tflite_tools import compare


def setUpModule():
  global _DIR, _MODEL, _FLOAT, _INT8  # pylint: disable=global-statement
  _DIR = absltest.get_default_test_tmpdir()
  _MODEL, _FLOAT, _INT8 = tiny_models.write_pair(_DIR)


class CompareTest(absltest.TestCase):

  def test_float_file_reproduces_keras(self):
    x = tiny_models.CALIBRATION
    y = _MODEL.predict(x, verbose=0).argmax(-1)
    y[:8] = (y[:8] + 1) % 3  # 8 of 32 labels wrong on purpose: accuracy 75% for both
    c = compare.compare(_MODEL, _FLOAT, x, y, batch_size=10)
    self.assertEqual((c.examples, c.keras_accuracy, c.tflite_accuracy, c.top1_agreement),
                     (32, 0.75, 0.75, 1.0))
    self.assertLess(c.max_abs_diff, 1e-5)

  def test_int8_file_against_numpy_reference(self):
    x = tiny_models.CALIBRATION
    c = compare.compare(_MODEL, _INT8, x)
    self.assertIsNone(c.keras_accuracy)
    from tflite_tools.runner import TFLiteRunner  # pylint: disable=import-outside-toplevel
    got, want = TFLiteRunner(_INT8).predict(x), _MODEL.predict(x, verbose=0)
    self.assertAlmostEqual(c.max_abs_diff, float(np.abs(got - want).max()), places=6)
    self.assertAlmostEqual(c.top1_agreement, float(np.mean(got.argmax(-1) == want.argmax(-1))))
    self.assertGreater(c.max_abs_diff, 0.0)  # int8 is not bit-exact

  def test_mismatched_models(self):
    other = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(5)])
    with self.assertRaisesRegex(ValueError, r"outputs shape \(3,\), the Keras model \(5,\)"):
      compare.compare(other, _FLOAT, tiny_models.CALIBRATION)
    with self.assertRaisesRegex(ValueError, r"expects examples of shape \(8, 8, 1\)"):
      compare.compare(_MODEL, _FLOAT, np.zeros((2, 4, 4, 1), np.float32))

  def test_binary_on_an_npz(self):
    tmp = self.create_tempdir().full_path
    keras_path, data, out = (os.path.join(tmp, n) for n in ("m.keras", "d.npz", "c.json"))
    _MODEL.save(keras_path)
    y = _MODEL.predict(tiny_models.CALIBRATION, verbose=0).argmax(-1)
    np.savez(data, x_test=tiny_models.CALIBRATION, y_test=y)
    proc = run_binary("tflite_tools.compare", f"--keras={keras_path}", f"--tflite={_FLOAT}",
                      f"--dataset={data}", "--num_examples=20", f"--json={out}")
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    self.assertIn("20 examples: Keras accuracy 100.00%, TFLite accuracy 100.00%, top-1 "
                  "agreement 100.00%", proc.stdout)
    self.assertEqual(json.load(open(out))["examples"], 20)

  def test_binary_errors_name_the_flag_or_file(self):
    tmp = self.create_tempdir().full_path
    keras_path, data = os.path.join(tmp, "m.keras"), os.path.join(tmp, "d.npz")
    _MODEL.save(keras_path)
    np.savez(data, images=tiny_models.CALIBRATION)
    proc = run_binary("tflite_tools.compare", f"--keras={keras_path}", f"--tflite={_FLOAT}",
                      f"--dataset={data}")
    self.assertIn("has no x_test array", proc.stderr)
    proc = run_binary("tflite_tools.compare", f"--keras={keras_path}",
                      "--tflite=/no/m.tflite", "--dataset=" + data.replace("d.npz", "x.npz"))
    self.assertIn("--dataset: expected 'fashion_mnist' or an existing .npz file", proc.stderr)
    np.savez(data, x_test=tiny_models.CALIBRATION)
    proc = run_binary("tflite_tools.compare", f"--keras={keras_path}",
                      "--tflite=/no/m.tflite", f"--dataset={data}")
    self.assertIn("TFLite file /no/m.tflite not found", proc.stderr)
    proc = run_binary("tflite_tools.compare", "--keras=/no/m.keras", f"--tflite={_FLOAT}",
                      f"--dataset={data}")
    self.assertIn("--keras: cannot load '/no/m.keras'", proc.stderr)


if __name__ == "__main__":
  absltest.main()
