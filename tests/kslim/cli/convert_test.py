"""Tests for the kslim-convert binary."""

import os

from absl.testing import absltest

import kslim
from tests import fake_fashion_mnist
from tests.binaries import run_binary


def _run(*args):
  return run_binary("kslim.cli.convert", *args, timeout=300)


class ConvertBinaryTest(absltest.TestCase):

  def test_converts_with_a_kslim_calibrator_and_prints_the_report(self):
    tmp = self.create_tempdir().full_path
    data = fake_fashion_mnist.write_npz(tmp, n_train=64, n_test=32)
    model_path = os.path.join(tmp, "float.keras")
    kslim.models.reference_cnn().save(model_path)
    output = os.path.join(tmp, "out", "m.tflite")
    proc = _run(f"--model={model_path}", f"--dataset={data}", "--calibration=kl",
                "--num_samples=48", "--bias_correction", f"--output={output}")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn("TFLite int8:", proc.stdout)
    self.assertIn("ops left in float32: none", proc.stdout)
    self.assertRegex(proc.stdout, r"int8 \(kl\)\s+\d+\.\d\d%\s+\d+\.\d")
    self.assertEqual(open(output, "rb").read()[4:8], b"TFL3")

  def test_flag_errors_name_the_flag(self):
    proc = _run("--reference=reference_cnn", "--output=out.bin")
    self.assertNotEqual(proc.returncode, 0)
    self.assertIn("--output must end in .tflite", proc.stderr)
    proc = _run("--reference=reference_cnn", "--output=o.tflite", "--mode=float16",
                "--calibration=kl")
    self.assertIn("need --mode=int8", proc.stderr)
    proc = _run("--reference=reference_cnn", "--output=o.tflite", "--num_samples=4")
    self.assertIn("num_samples", proc.stderr)
    proc = _run("--reference=reference_cnn", "--output=o.tflite", "--mode=int4")
    self.assertIn("--mode", proc.stderr)


if __name__ == "__main__":
  absltest.main()
