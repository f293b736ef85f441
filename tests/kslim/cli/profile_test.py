"""Tests for the kslim-profile binary."""

import os

from absl.testing import absltest

from kslim import models
from tests.binaries import run_binary


def _run(*args):
  return run_binary("kslim.cli.profile", *args, timeout=120)


class ProfileBinaryTest(absltest.TestCase):

  def test_saved_model_file(self):
    path = os.path.join(self.create_tempdir().full_path, "cnn.keras")
    models.reference_cnn().save(path)
    proc = _run(f"--model={path}")
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    self.assertIn("Total MACs: 5,532,544", proc.stdout)

  def test_needs_exactly_one_source(self):
    proc = _run()
    self.assertNotEqual(proc.returncode, 0)
    self.assertIn("Exactly one of (model, reference) must have a value", proc.stderr)
    proc = _run("--model=a.keras", "--reference=reference_cnn")
    self.assertNotEqual(proc.returncode, 0)
    self.assertIn("must have a value other than None", proc.stderr)

  def test_unloadable_file_names_it(self):
    proc = _run("--model=/nonexistent/model.keras")
    self.assertNotEqual(proc.returncode, 0)
    self.assertIn("--model: cannot load '/nonexistent/model.keras'", proc.stderr)


if __name__ == "__main__":
  absltest.main()
