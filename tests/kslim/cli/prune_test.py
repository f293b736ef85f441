"""Tests for the kslim-prune binary."""

import json
import os

from absl.testing import absltest
import numpy as np

import kslim
from kslim._keras import keras
from tests import fake_fashion_mnist
from tests.binaries import run_binary


def _run(*args):
  return run_binary("kslim.cli.prune", *args, timeout=300)


class PruneBinaryTest(absltest.TestCase):

  def test_sensitivity_derived_prune_fine_tunes_and_saves(self):
    tmp = self.create_tempdir().full_path
    model_path = os.path.join(tmp, "float.keras")
    model = kslim.models.reference_cnn(width=0.5)
    model.save(model_path)
    output, cache = os.path.join(tmp, "out", "small.keras"), os.path.join(tmp, "sens.json")
    proc = _run(f"--model={model_path}", f"--dataset={fake_fashion_mnist.write_npz(tmp)}", "--criterion=fpgm",
                "--flops_reduction=0.5", f"--sensitivity_cache={cache}", "--held_out=64",
                "--reconstruction_images=48", "--sensitivity_refit", "--fine_tune_epochs=1",
                "--batch_size=32", f"--output={output}")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertRegex(proc.stdout, r"original\s+[\d,]+\s+[\d,]+\s+\d+\.\d\d%")
    self.assertRegex(proc.stdout, r"pruned \(fpgm\)\s+[\d,]+\s+[\d,]+\s+\d+\.\d\d%")
    pruned = keras.models.load_model(output)
    self.assertLessEqual(kslim.profile(pruned).total_macs, 0.5 * kslim.profile(model).total_macs)
    self.assertEqual(json.load(open(cache))["criterion"], "fpgm")
    self.assertEqual(json.load(open(cache))["reconstruction_images"], 48)  # the scan refitted
    self.assertTrue(os.path.exists(os.path.join(tmp, "sens.png")))

  def test_reconstruction_refits_on_the_first_training_images(self):
    tmp = self.create_tempdir().full_path
    model_path = os.path.join(tmp, "float.keras")
    model = kslim.models.reference_cnn(width=0.5)
    model.save(model_path)
    dataset, output = fake_fashion_mnist.write_npz(tmp), os.path.join(tmp, "small.keras")
    proc = _run(f"--model={model_path}", f"--dataset={dataset}", "--ratio=0.3",
                "--reconstruction_images=48", "--fine_tune_epochs=0", f"--output={output}")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    (x_train, _), (x_test, _) = kslim.datasets.load(dataset)
    saved = keras.models.load_model(output)
    expected = kslim.prune(model, 0.3, reconstruction_images=x_train[:48])
    np.testing.assert_allclose(saved(x_test).numpy(), expected(x_test).numpy(), atol=1e-5)
    plain = kslim.prune(model, 0.3)
    self.assertGreater(np.max(np.abs(saved(x_test).numpy() - plain(x_test).numpy())), 1e-3)

  def test_flag_errors_name_the_flag(self):
    proc = _run("--reference=reference_cnn", "--ratio=0.3", "--output=out.tflite")
    self.assertIn("--output must end in .keras or .h5", proc.stderr)
    proc = _run("--reference=reference_cnn", "--ratio=1.5", "--output=o.keras")
    self.assertIn("--ratio must be in [0, 1)", proc.stderr)
    proc = _run("--reference=reference_cnn", "--ratio=0.3", "--sensitivity_cache=s.json",
                "--output=o.keras")
    self.assertIn("--sensitivity_cache needs --flops_reduction", proc.stderr)
    proc = _run("--reference=reference_cnn", "--flops_reduction=0.3", "--sensitivity_refit",
                "--sensitivity_cache=s.json", "--output=o.keras")
    self.assertIn("--sensitivity_refit needs --sensitivity_cache and --reconstruction_images",
                  proc.stderr)
    proc = _run("--reference=reference_cnn", "--ratio=0.3", "--criterion=l3", "--output=o.keras")
    self.assertIn("criterion", proc.stderr)
    proc = _run("--reference=reference_cnn", "--output=o.keras")
    self.assertNotEqual(proc.returncode, 0)
    self.assertIn("ratio", proc.stderr)


if __name__ == "__main__":
  absltest.main()
