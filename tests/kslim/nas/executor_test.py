"""Executors: a search whose trials run on a local cluster of Optuna workers gives the same
result as the in-process search; failures, timeouts and a resumed driver are handled."""

import os
import subprocess
import sys
import threading

from absl.testing import absltest

from kslim import nas

_SPACE = """
from kslim import nas

def space():
  # The "model" is the decoded option dict; its score is cheap and deterministic.
  return nas.BlockSpace({"a": (0, 1, 2, 3), "b": (0, 1, 2), "c": (0, 1)}, lambda **v: v)

def score(values):
  return values["a"] * 0.3 + values["b"] * 0.1 - values["c"] * 0.2
"""
_scope = {}
exec(_SPACE, _scope)  # pylint: disable=exec-used  # the same definitions the workers run
_space, _score = _scope["space"], _scope["score"]

_WORKER = _SPACE + """
import sys
worker = nas.OptunaWorker(sys.argv[1], "cluster", space(), score)
print("trained", worker.run(idle_timeout=120, poll_interval=0.1))
"""


class OptunaExecutorTest(absltest.TestCase):

  def _storage(self):
    return f"journal:{self.create_tempdir().full_path}/nas.log"

  def test_local_cluster_of_workers_matches_in_process_search(self):
    storage = self._storage()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    workers = [subprocess.Popen([sys.executable, "-c", _WORKER, storage], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    try:
      executor = nas.OptunaExecutor(storage, "cluster", parallelism=2, poll_interval=0.1,
                                    timeout=240)
      distributed = nas.RandomSearch(_space(), seed=3)
      best = nas.search(distributed, steps=8, executor=executor, progress=False)
      outputs = [w.communicate(timeout=120) for w in workers]
    finally:
      for w in workers:
        w.kill()
    for w, (out, err) in zip(workers, outputs):
      self.assertEqual(w.returncode, 0, err[-2000:])  # stopped by the driver's close()
    trained = [int(out.split()[-1]) for out, _ in outputs]
    self.assertEqual(sum(trained), 8)  # every candidate trained once, by some worker
    local = nas.RandomSearch(_space(), seed=3)
    local_best = nas.search(local, _score, steps=8, progress=False)
    # Batches of 2 draw the same candidates from the same seed; the scores came back in order.
    self.assertEqual(distributed.history, local.history)
    self.assertEqual(best, local_best)
    for entry in distributed.history:
      values = dict(zip("abc", entry["tokens"]))
      self.assertAlmostEqual(entry["reward"], _score(values))

  def test_resumed_driver_reuses_queued_trials(self):
    storage = self._storage()
    executor = nas.OptunaExecutor(storage, "resume", parallelism=2, poll_interval=0.05,
                                  timeout=0.3)
    batch = [[0, 1, 1], [3, 2, 0]]
    with self.assertRaisesRegex(TimeoutError, "steps 4-5 not scored .* OptunaWorkers running "
                                "on study 'resume'"):
      executor.map(_space(), batch, first_step=4)  # no worker: the driver "dies" waiting
    resumed = nas.OptunaExecutor(storage, "resume", parallelism=2, poll_interval=0.05,
                                 timeout=60)
    worker = nas.OptunaWorker(storage, "resume", _space(), _score)
    thread = threading.Thread(target=worker.run, kwargs={"max_trials": 2, "poll_interval": 0.05})
    thread.start()
    scores = resumed.map(_space(), batch, first_step=4)
    thread.join()
    self.assertEqual(scores, [_score({"a": 0, "b": 1, "c": 1}), _score({"a": 3, "b": 2, "c": 0})])
    self.assertLen(resumed.study.trials, 2)  # queued once, not again on resume

  def test_trial_of_a_lost_worker_is_queued_again(self):
    storage = self._storage()
    executor = nas.OptunaExecutor(storage, "lost", poll_interval=0.05, timeout=60,
                                  trial_timeout=0.5)
    dead = nas.OptunaWorker(storage, "lost", _space(), _score)
    alive = nas.OptunaWorker(storage, "lost", _space(), _score)

    def claim_and_die():
      while dead._claim() is None:  # takes the queued trial, then never reports
        pass
      alive.run(max_trials=1, poll_interval=0.05)  # another worker finds it queued again

    thread = threading.Thread(target=claim_and_die)
    thread.start()
    scores = executor.map(_space(), [[1, 2, 0]], first_step=0)
    thread.join()
    self.assertEqual(scores, [_score({"a": 1, "b": 2, "c": 0})])
    states = sorted(t.state.name for t in executor.study.trials)
    self.assertEqual(states, ["COMPLETE", "FAIL"])

  def test_failed_trial_names_the_candidate_and_the_workers_error(self):
    storage = self._storage()

    def broken(values):
      raise ValueError(f"cannot train {values}")

    executor = nas.OptunaExecutor(storage, "broken", poll_interval=0.05, timeout=60)
    worker = nas.OptunaWorker(storage, "broken", _space(), broken)
    thread = threading.Thread(target=worker.run, kwargs={"max_trials": 1, "poll_interval": 0.05})
    thread.start()
    with self.assertRaisesRegex(RuntimeError, r"tokens \[2, 0, 1\]\) failed on its worker:"
                                r"(.|\n)*ValueError: cannot train"):
      executor.map(_space(), [[2, 0, 1]], first_step=0)
    thread.join()

  def test_bad_storage_url_is_a_clear_error(self):
    with self.assertRaisesRegex(ValueError, "Optuna storage 'nosuchdb://x'.*journal:<path>"):
      nas.OptunaExecutor("nosuchdb://x", "s")

  def test_local_executor_and_evaluate_are_exclusive(self):
    with self.assertRaisesRegex(ValueError, "exactly one of evaluate and executor"):
      nas.search(nas.RandomSearch(_space()), _score, steps=1,
                 executor=nas.LocalExecutor(_score))
    self.assertEqual(nas.LocalExecutor(_score).map(_space(), [[1, 0, 1]], 0),
                     [_score({"a": 1, "b": 0, "c": 1})])


if __name__ == "__main__":
  absltest.main()
