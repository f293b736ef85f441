"""Tests for the kslim-demo binary: flag validation in-process, and one real run."""

import os
import pathlib
import subprocess
import sys

from absl import flags
from absl.testing import absltest, flagsaver

from kslim.cli import demo
from tests import fake_fashion_mnist

FLAGS = flags.FLAGS


class DemoFlagsTest(absltest.TestCase):

  def _parse(self, *args):
    with flagsaver.flagsaver():
      FLAGS.unparse_flags()
      try:
        FLAGS(["kslim-demo", *args])
      finally:
        FLAGS.unparse_flags()
        FLAGS.mark_as_parsed()

  def test_unknown_stage_is_rejected(self):
    with self.assertRaisesRegex(flags.IllegalFlagValueError, r"--stages: every stage"):
      self._parse("--stages=baseline,bogus")

  def test_bad_thread_count_is_rejected(self):
    with self.assertRaisesRegex(flags.IllegalFlagValueError, r"--threads"):
      self._parse("--threads=1,zero")

  def test_epochs_must_be_positive(self):
    with self.assertRaisesRegex(flags.IllegalFlagValueError, r"epochs"):
      self._parse("--epochs=0")

  def test_defaults_are_the_demo(self):
    self._parse()
    self.assertEqual(list(demo.DEFAULT_STAGES), ["baseline", "export_float32", "evaluate", "qat",
                                                 "export_int8", "evaluate"])


class DemoBinaryTest(absltest.TestCase):

  def test_runs_end_to_end_and_prints_the_table(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    fake_fashion_mnist.write_dataset(tmp / "data", n_train=128, n_test=64)
    env = dict(os.environ, KSLIM_DATA_DIR=str(tmp / "data"), TF_USE_LEGACY_KERAS="1",
               TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, "-m", "kslim.cli.demo", f"--workdir={tmp / 'run'}", "--epochs=1",
         "--threads=1", "--latency_runs=3"],
        env=env, capture_output=True, text=True, timeout=300, check=False)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertRegex(proc.stdout, r"reference_cnn_float32\s+\d+\.\d\d%\s+\d+\.\d\d%\s+70,746")
    self.assertRegex(proc.stdout, r"reference_cnn_int8\s+\d+\.\d\d%\s+\d+\.\d\d%")
    self.assertTrue((tmp / "run" / "results.json").exists())


if __name__ == "__main__":
  absltest.main()
