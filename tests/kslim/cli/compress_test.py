"""Tests for the kslim-compress binary: the demo config end to end (on fake data), overrides,
and config errors that name the file and line."""

import os
import pathlib
import textwrap

from absl.testing import absltest

from tests import fake_fashion_mnist
from tests.binaries import run_binary


def _run(*args, env=None):
  return run_binary("kslim.cli.compress", *args, timeout=300, env=env)


class CompressBinaryTest(absltest.TestCase):

  def test_demo_config_runs_end_to_end_with_overrides(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    fake_fashion_mnist.write_dataset(tmp / "data", n_train=128, n_test=64)
    env = dict(os.environ, KSLIM_DATA_DIR=str(tmp / "data"))  # the config's fashion_mnist, faked
    proc = _run("--config=examples/demo.yaml", f"--workdir={tmp / 'run'}",
                "--set=model.train_epochs=1", "--set=strategies.1.benchmark.runs=3",
                "--set=strategies.1.benchmark.threads=[1]", env=env)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertRegex(proc.stdout, r"00_baseline\s+\d+\.\d\d%\s+\+0\.00 pt\s+70,746")
    self.assertRegex(proc.stdout, r"01_quantize\s+\d+\.\d\d%\s+[+-]\d+\.\d\d pt\s+[\d,]+\s+"
                     r"[\d,]+\s+[\d.]+\s+3\.\d\dx\s+[\d.]+\s+[\d.]+x")
    self.assertIn(f"report written to {tmp / 'run' / 'report.md'}", proc.stdout)
    for name in ("report.json", "report.md", "accuracy.png"):
      self.assertTrue((tmp / "run" / name).exists(), name)

  def test_config_errors_name_the_line(self):
    tmp = self.create_tempdir().full_path
    config = os.path.join(tmp, "job.yaml")
    with open(config, "w") as f:
      f.write(textwrap.dedent("""\
          model: {reference: reference_cnn}
          strategies:
            - quantize: {epochs: 1}
            - prune: {ratio: 0.3}
          """))
    proc = _run(f"--config={config}", f"--workdir={tmp}/run")
    self.assertNotEqual(proc.returncode, 0)
    self.assertIn(f"--config: {config}:4: strategies[1].prune: cannot follow 'quantize'",
                  proc.stderr)
    proc = _run(f"--config={config}", f"--workdir={tmp}/run",
                "--set=strategies.0.quantize.epochs=-1")
    self.assertIn(f"{config}:3: strategies[0].quantize.epochs: -1 is below the minimum 0",
                  proc.stderr)
    self.assertFalse(os.path.exists(f"{tmp}/run"))  # nothing started


if __name__ == "__main__":
  absltest.main()
