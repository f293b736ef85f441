"""`search`: the trial loop around any controller — propose, build, score, reward, log."""

import json
import pathlib

from tqdm import tqdm

from kslim import _plot
from kslim.nas.executor import LocalExecutor

__all__ = ["search", "plot_trials"]


def search(controller, evaluate=None, steps=20, log=None, progress=True, executor=None):
  """Runs a controller until it has scored `steps` candidates; resumes where it stopped.

  Args:
    controller: a `Controller` (`SANAS`, `RLNAS`, `RandomSearch`); give it a checkpoint to
      make the search resumable.
    evaluate: ``evaluate(model) -> float``, higher is better (e.g. accuracy after a short
      training on held-out data): candidates train in this process.
    steps: total number of scored candidates, counting those of earlier runs.
    log: optional JSON-lines path: one line per candidate (step, tokens, reward, cost,
      accepted), rewritten from the controller's history on resume.
    progress: show a tqdm bar.
    executor: instead of `evaluate`, an `Executor` (e.g. `OptunaExecutor`) that scores
      ``executor.parallelism`` candidates at a time wherever it runs them.

  Returns:
    ``(best_tokens, best_reward)``.
  """
  if (evaluate is None) == (executor is None):
    raise ValueError("search: give exactly one of evaluate and executor")
  executor = executor or LocalExecutor(evaluate)
  log = pathlib.Path(log) if log else None
  if log is not None:
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("".join(json.dumps(entry) + "\n" for entry in controller.history))
  with tqdm(total=steps, initial=min(controller.step, steps), disable=not progress,
            desc=type(controller).__name__) as bar:
    while controller.step < steps:
      first = controller.step
      candidates = controller.next_archs(min(executor.parallelism, steps - first))
      controller.reward(executor.map(controller.space, candidates, first))
      if log is not None:
        with log.open("a") as f:
          f.writelines(json.dumps(entry) + "\n" for entry in controller.history[first:])
      bar.update(controller.step - first)
      bar.set_postfix(best=f"{controller.best_reward:.4f}")
  executor.close()
  return controller.best_tokens, controller.best_reward


def plot_trials(history, path, cost_label="cost"):
  """Scatter of every trial's reward against its cost, the Pareto front joined: a PNG.

  Args:
    history: a controller's ``history`` (dicts with ``reward`` and ``cost``; entries where
      either is None are left out).
    path: where the PNG goes.
    cost_label: the x axis' name (e.g. "MACs").
  """
  points = sorted((h["cost"], h["reward"]) for h in history
                  if h["cost"] is not None and h["reward"] is not None)
  front, best = [], -float("inf")
  for cost, reward in points:  # cheapest first: a point is on the front if it beats all cheaper
    if reward > best:
      front.append((cost, reward))
      best = reward
  figure, ax = _plot.subplots(figsize=(6, 4))
  ax.scatter([c for c, _ in points], [r for _, r in points], s=14, alpha=0.6, label="trials")
  ax.plot([c for c, _ in front], [r for _, r in front], "r.-", label="Pareto front")
  ax.set(xlabel=cost_label, ylabel="reward (held-out accuracy)")
  ax.legend()
  _plot.save(figure, path)
