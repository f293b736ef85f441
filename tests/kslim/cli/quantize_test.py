"""Tests for the kslim-quantize binary."""

import os

import numpy as np
from absl.testing import absltest

import kslim
from kslim._keras import keras
from tests import fake_fashion_mnist
from tests.binaries import run_binary
from tflite_tools import analyze


def _run(*args):
  return run_binary("kslim.cli.quantize", *args, timeout=300)


class QuantizeBinaryTest(absltest.TestCase):

  def test_fine_tunes_exports_and_prints_before_and_after(self):
    tmp = self.create_tempdir().full_path
    data = fake_fashion_mnist.write_npz(tmp)
    model_path = os.path.join(tmp, "float.keras")
    kslim.models.reference_cnn().save(model_path)
    tflite, qat_path = os.path.join(tmp, "out", "m.tflite"), os.path.join(tmp, "out", "m.keras")
    proc = _run(f"--model={model_path}", f"--dataset={data}", "--epochs=1", "--batch_size=32",
                "--weight_bits=4", "--activation_quantizer=pact", f"--output_tflite={tflite}",
                f"--output_keras={qat_path}", "--report")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertRegex(proc.stdout, r"float32\s+\d+\.\d\d%\s+-\s+\d+\.\d")
    self.assertRegex(proc.stdout, r"QAT w4a8\s+\d+\.\d\d%\s+\d+\.\d\d%\s+\d+\.\d")
    self.assertIn("per-layer parity", proc.stdout)
    self.assertEqual(open(tflite, "rb").read()[4:8], b"TFL3")
    with kslim.quantization.scope():
      loaded = keras.models.load_model(qat_path)
    self.assertTrue(kslim.quantization.is_quantized(loaded))

  def test_a_reference_lstm_exports_the_int8_lstm_kernel(self):
    tmp = self.create_tempdir().full_path
    data = fake_fashion_mnist.write_npz(tmp)
    tflite = os.path.join(tmp, "lstm.tflite")
    proc = _run("--reference=row_lstm", f"--dataset={data}", "--epochs=1", "--batch_size=32",
                f"--output_tflite={tflite}")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertRegex(proc.stdout, r"QAT w8a8\s+\d+\.\d\d%\s+\d+\.\d\d%")
    self.assertIn("UNIDIRECTIONAL_SEQUENCE_LSTM", analyze.analyze(tflite).ops_by_dtype["int8"])

  def test_flag_errors_name_the_flag(self):
    proc = _run("--reference=reference_cnn", "--output_tflite=out.bin")
    self.assertNotEqual(proc.returncode, 0)
    self.assertIn("--output_tflite must end in .tflite", proc.stderr)
    proc = _run("--reference=reference_cnn", "--output_tflite=o.tflite", "--weight_bits=9")
    self.assertIn("weight_bits", proc.stderr)
    bad = os.path.join(self.create_tempdir().full_path, "bad.npz")
    np.savez(bad, x_train=np.zeros((2, 28, 28, 1)))
    proc = _run("--reference=reference_cnn", "--output_tflite=o.tflite", f"--dataset={bad}")
    self.assertNotEqual(proc.returncode, 0)
    self.assertIn("lacks the arrays ['y_train', 'x_test', 'y_test']", proc.stderr)


if __name__ == "__main__":
  absltest.main()
