"""`search`: the trial loop around any controller — propose, build, score, reward, log."""

import json
import pathlib

from tqdm import tqdm

__all__ = ["search"]


def search(controller, evaluate, steps, log=None, progress=True):
  """Runs a controller until it has scored `steps` candidates; resumes where it stopped.

  Args:
    controller: a `Controller` (`SANAS`, `RLNAS`, `RandomSearch`); give it a checkpoint to
      make the search resumable.
    evaluate: ``evaluate(model) -> float``, higher is better (e.g. accuracy after a short
      training on held-out data).
    steps: total number of scored candidates, counting those of earlier runs.
    log: optional JSON-lines path: one line per candidate (step, tokens, reward, cost,
      accepted), rewritten from the controller's history on resume.
    progress: show a tqdm bar.

  Returns:
    ``(best_tokens, best_reward)``.
  """
  log = pathlib.Path(log) if log else None
  if log is not None:
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("".join(json.dumps(entry) + "\n" for entry in controller.history))
  with tqdm(total=steps, initial=min(controller.step, steps), disable=not progress,
            desc=type(controller).__name__) as bar:
    while controller.step < steps:
      tokens = controller.next_archs()[0]
      controller.reward(evaluate(controller.space.decode(tokens)))
      if log is not None:
        with log.open("a") as f:
          f.write(json.dumps(controller.history[-1]) + "\n")
      bar.update(1)
      bar.set_postfix(best=f"{controller.best_reward:.4f}")
  return controller.best_tokens, controller.best_reward
