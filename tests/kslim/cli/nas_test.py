"""Tests for the kslim-nas binary."""

from concurrent import futures
import json
import os
import subprocess
import sys

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
            "--sa_temperature=1e-9", f"--output_dir={out}"]
    proc = _run(*args, "--steps=2")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    first = [json.loads(l) for l in open(os.path.join(out, "trials.jsonl"))]
    proc = _run(*args, "--steps=3")  # resumes: only the third candidate is new
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    trials = [json.loads(l) for l in open(os.path.join(out, "trials.jsonl"))]
    self.assertEqual([t["step"] for t in trials], [0, 1, 2])
    self.assertEqual(trials[:2], first)
    # At a temperature of 1e-9 a worse candidate is never accepted: each accepted trial is the
    # best so far.
    for i, trial in enumerate(trials):
      self.assertEqual(trial["accepted"], i == 0 or trial["reward"] >= max(
          t["reward"] for t in trials[:i] if t["accepted"]), trials)
    self.assertTrue(all(t["cost"] <= budget for t in trials))
    summary = json.load(open(os.path.join(out, "best.json")))
    self.assertEqual(summary["held_out_accuracy"], max(t["reward"] for t in trials))
    self.assertEqual(summary["init_temperature"], 1e-9)
    self.assertBetween(summary["test_accuracy"], 0.0, 1.0)
    best = keras.models.load_model(os.path.join(out, "best.keras"))
    self.assertEqual(best.count_params(), space.decode(summary["tokens"]).count_params())
    self.assertLessEqual(kslim.profile(best).total_macs, budget)
    self.assertTrue(os.path.exists(os.path.join(out, "trials.png")))
    self.assertIn("best sa model", proc.stdout)

  def test_search_on_a_local_cluster_of_workers(self):
    out = os.path.join(self.create_tempdir().full_path, "nas")
    common = [f"--dataset={self.data}", "--method=random", "--space=mobilenet_v1",
              "--held_out=32", "--batch_size=32",
              f"--storage=journal:{self.create_tempdir().full_path}/nas.log"]
    worker = subprocess.Popen(
        [sys.executable, "-m", "kslim.cli.nas", *common, "--worker", f"--output_dir={out}w"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
      proc = _run(*common, "--steps=3", "--parallel=2", "--final_epochs=0",
                  f"--output_dir={out}")
      worker_out, worker_err = worker.communicate(timeout=120)
    finally:
      worker.kill()
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertEqual(worker.returncode, 0, worker_err[-3000:])
    self.assertIn("worker trained 3 candidates", worker_out)  # the driver trained none
    trials = [json.loads(l) for l in open(os.path.join(out, "trials.jsonl"))]
    self.assertEqual([t["step"] for t in trials], [0, 1, 2])
    self.assertTrue(all(0.0 <= t["reward"] <= 1.0 for t in trials))

  def test_differentiable_search_builds_the_derived_network(self):
    out = os.path.join(self.create_tempdir().full_path, "darts")
    proc = _run(f"--dataset={self.data}", "--method=pc_darts", "--held_out=32",
                "--batch_size=16", "--supernet_channels=4", "--supernet_layers=2", "--nodes=2",
                "--final_channels=4", "--final_layers=2", "--final_epochs=1",
                "--constraint=params", "--budget=1e6", f"--output_dir={out}")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    summary = json.load(open(os.path.join(out, "best.json")))
    genotype = nas.Genotype(**summary["genotype"])
    best = keras.models.load_model(os.path.join(out, "best.keras"))
    rebuilt = nas.build_network(genotype, (28, 28, 1), 10, channels=4, layers=2)
    self.assertEqual(best.count_params(), rebuilt.count_params())
    self.assertEqual(summary["cost"], best.count_params())
    self.assertTrue(os.path.exists(os.path.join(out, "supernet", "checkpoint")))
    self.assertIn("best pc_darts model", proc.stdout)

  def test_once_for_all_picks_a_subnet_within_budget(self):
    out = os.path.join(self.create_tempdir().full_path, "ofa")
    supernet = nas.OFASupernet((28, 28, 1), 10)
    largest = kslim.profile(supernet.extract(supernet.largest())).total_macs
    budget = 0.6 * largest
    proc = _run(f"--dataset={self.data}", "--method=ofa", "--held_out=32", "--batch_size=32",
                "--ofa_epochs=full=1,width=1", "--ofa_samples=3", "--ofa_subnets_per_step=3",
                "--final_epochs=0",
                "--constraint=macs", f"--budget={budget}", f"--output_dir={out}")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    trials = [json.loads(l) for l in open(os.path.join(out, "trials.jsonl"))]
    self.assertLen(trials, 5)  # smallest, largest, 3 random
    self.assertIsNone(trials[1]["reward"])  # the largest is over budget: never scored
    summary = json.load(open(os.path.join(out, "best.json")))
    best = keras.models.load_model(os.path.join(out, "best.keras"))
    self.assertLessEqual(kslim.profile(best).total_macs, budget)
    self.assertEqual(summary["held_out_accuracy"],
                     max(t["reward"] for t in trials if t["reward"] is not None))
    self.assertTrue(os.path.exists(os.path.join(out, "trials.png")))

  def test_once_for_all_subnets_searched_by_sa_within_budget(self):
    out = os.path.join(self.create_tempdir().full_path, "ofa_sa")
    supernet = nas.OFASupernet((28, 28, 1), 10)
    budget = 0.6 * kslim.profile(supernet.extract(supernet.largest())).total_macs
    proc = _run(f"--dataset={self.data}", "--method=ofa", "--ofa_search=sa", "--steps=3",
                "--held_out=32", "--batch_size=32", "--ofa_epochs=full=1", "--final_epochs=0",
                "--constraint=macs", f"--budget={budget}", f"--output_dir={out}")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    trials = [json.loads(l) for l in open(os.path.join(out, "trials.jsonl"))]
    self.assertLen(trials, 3)
    self.assertTrue(all(t["cost"] <= budget for t in trials))
    summary = json.load(open(os.path.join(out, "best.json")))
    self.assertEqual(summary["held_out_accuracy"], max(t["reward"] for t in trials))
    self.assertEqual(summary["config"], nas.OFASpace(supernet).config(summary["tokens"]))
    best = keras.models.load_model(os.path.join(out, "best.keras"))
    self.assertEqual(kslim.profile(best).total_macs,
                     kslim.profile(supernet.extract(summary["config"])).total_macs)
    self.assertEqual(json.load(open(os.path.join(out, "checkpoint.json")))["controller"],
                     "SANAS")

  def test_flag_errors_name_the_flag(self):
    base = [f"--dataset={self.data}", f"--output_dir={os.path.join(self.tmp, 'bad')}"]
    cases = [(["--constraint=macs"], "--constraint and --budget go together"),
             (["--constraint=latency", "--budget=1"], "--constraint=latency needs"),
             (["--method=evolution"], "method"),
             (["--constraint=macs", "--budget=10", "--steps=1"], "--budget: "),
             (["--held_out=96"], "--held_out=96 leaves no training images"),
             (["--worker"], "--worker needs --storage"),
             (["--method=darts", "--storage=journal:x.log"], "--storage a token method"),
             (["--method=ofa", "--ofa_epochs=full=1,shrink=2", "--held_out=32"],
              "--ofa_epochs: 'shrink=2'"),
             (["--storage=nosuch://x", "--held_out=32"], "--storage: Optuna storage"),
             (["--sa_temperature=0"], "--sa_temperature must be > 0")]
    with futures.ThreadPoolExecutor(4) as pool:  # each run is mostly TensorFlow's import
      procs = list(pool.map(lambda case: _run(*base, *case[0]), cases))
    for (extra, message), proc in zip(cases, procs):
      self.assertNotEqual(proc.returncode, 0, extra)
      self.assertIn(message, proc.stderr, extra)


if __name__ == "__main__":
  absltest.main()
