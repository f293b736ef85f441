"""Tests for the kslim package surface."""

import os
import subprocess
import sys

from absl.testing import absltest

import kslim


class PackageTest(absltest.TestCase):

  def test_import_is_light_and_changes_no_environment(self):
    code = ("import os, sys; before = dict(os.environ); import kslim; "
            "assert 'tensorflow' not in sys.modules, 'kslim imported TensorFlow eagerly'; "
            "assert dict(os.environ) == before; print(kslim.__version__)")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, check=False)
    self.assertEqual(proc.returncode, 0, proc.stderr)
    self.assertEqual(proc.stdout.strip(), kslim.__version__)

  def test_public_names_resolve(self):
    for name in kslim.__all__:
      self.assertIsNotNone(getattr(kslim, name))
    self.assertIs(kslim.profile, __import__("kslim.profiling").profiling.profile)

  def test_unknown_attribute(self):
    with self.assertRaisesRegex(AttributeError, r"no attribute 'quantise'"):
      kslim.quantise  # pylint: disable=pointless-statement


if __name__ == "__main__":
  absltest.main()
