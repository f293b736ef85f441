"""Tests for the kslim-nas binary."""

import json
import os

from absl.testing import absltest

import kslim
from kslim import nas
from kslim._keras import keras
from tests import fake_fashion_mnist
from tests.binaries import run_binary


def _run(*args):
  return run_binary("kslim.cli.nas", *args, timeout=300)


class NasBinaryTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = absltest.get_default_test_tmpdir()
    cls.data = fake_fashion_mnist.write_npz(cls.tmp, n_test=32)

  def test_search_within_budget_resumes_and_saves_the_best(self):
    space = nas.MobileNetV1Space()
    macs = [kslim.profile(space.decode(t)).total_macs
            for t in ([0] * len(space.choices), [c - 1 for c in space.choices])]
    budget = (macs[0] + macs[1]) / 2
    out = os.path.join(self.create_tempdir().full_path, "nas")
    args = [f"--dataset={self.data}", "--method=sa", "--space=mobilenet_v1", "--constraint=macs",
            f"--budget={budget}", "--held_out=32", "--batch_size=32", "--final_epochs=1",
            f"--output_dir={out}"]
    proc = _run(*args, "--steps=2")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    first = [json.loads(l) for l in open(os.path.join(out, "trials.jsonl"))]
    proc = _run(*args, "--steps=3")  # resumes: only the third candidate is new
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    trials = [json.loads(l) for l in open(os.path.join(out, "trials.jsonl"))]
    self.assertEqual([t["step"] for t in trials], [0, 1, 2])
    self.assertEqual(trials[:2], first)
    self.assertTrue(all(t["cost"] <= budget for t in trials))
    summary = json.load(open(os.path.join(out, "best.json")))
    self.assertEqual(summary["held_out_accuracy"], max(t["reward"] for t in trials))
    self.assertBetween(summary["test_accuracy"], 0.0, 1.0)
    best = keras.models.load_model(os.path.join(out, "best.keras"))
    self.assertEqual(best.count_params(), space.decode(summary["tokens"]).count_params())
    self.assertLessEqual(kslim.profile(best).total_macs, budget)
    self.assertTrue(os.path.exists(os.path.join(out, "trials.png")))
    self.assertIn("best [", proc.stdout)

  def test_flag_errors_name_the_flag(self):
    base = [f"--dataset={self.data}", f"--output_dir={os.path.join(self.tmp, 'bad')}"]
    cases = [(["--constraint=macs"], "--constraint and --budget go together"),
             (["--constraint=latency", "--budget=1"], "--constraint=latency needs"),
             (["--method=evolution"], "method"),
             (["--constraint=macs", "--budget=10", "--steps=1"], "--budget: "),
             (["--held_out=96"], "--held_out=96 leaves no training images")]
    for extra, message in cases:
      proc = _run(*base, *extra)
      self.assertNotEqual(proc.returncode, 0, extra)
      self.assertIn(message, proc.stderr, extra)


if __name__ == "__main__":
  absltest.main()
