"""`Controller`: what every token search shares — the ``next_archs()`` / ``reward(score)``
protocol, budget filtering, the best candidate so far, and a checkpoint to resume from.

A controller proposes candidates (token lists of a `SearchSpace`); candidates over the
constraint's budget are skipped before anyone trains them, and a candidate scored before (one
with the same `SearchSpace.key`: the same model) is not trained again: the controller may
learn from its recorded score (`revisit`) and proposes anew. After each reward the whole
state, random generator included, is written to the checkpoint (JSON, replaced atomically),
so a search killed at any point resumes with the same next candidate and loses no finished
trial.
"""

import abc
import json
import math
import os
import pathlib

import numpy as np
from absl import logging

__all__ = ["Controller"]


class Controller(abc.ABC):
  """Base class of the search controllers (`SANAS`, `RLNAS`, `RandomSearch`).

  Args:
    space: the `SearchSpace` searched.
    constraint: an optional `Constraint`; candidates over its budget are never proposed.
    checkpoint: a JSON path; when it exists the controller resumes from it.
    seed: seed of the controller's random generator.
    max_resample: proposals tried per step before giving up on finding one within budget.
      Already-scored proposals are answered from the history during the first half of
      them; past that a known candidate is trained again (the controller has converged).
  """

  def __init__(self, space, constraint=None, checkpoint=None, seed=0, max_resample=200):
    self.space = space
    self.constraint = constraint
    self.checkpoint = pathlib.Path(checkpoint) if checkpoint else None
    self.max_resample = max_resample
    self.rng = np.random.default_rng(seed)
    self.step = 0
    self.skipped = 0
    self.revisited = 0  # proposals answered from the history instead of trained again
    self.best_tokens, self.best_reward = None, -math.inf
    self.history = []  # one dict per rewarded candidate: step, tokens, reward, cost, accepted
    self._pending = []  # (tokens, cost) of the candidates proposed and not yet rewarded
    self._scores = {}  # space.key(tokens) -> reward of every scored candidate
    if self.checkpoint is not None and self.checkpoint.exists():
      self._load()

  @abc.abstractmethod
  def propose(self):
    """A new candidate's tokens (may be over budget: `next_archs` filters)."""

  @abc.abstractmethod
  def update(self, tokens, reward):
    """Learns from `reward` of `tokens`; returns whether the candidate was accepted."""

  def revisit(self, tokens, reward):
    """Called for a proposal scored before (nothing trained) with its recorded reward; by
    default the controller learns from it as from a new trial (`update`)."""
    self.update(tokens, reward)

  def budget_checked(self, tokens, within_budget):
    """Called for every new proposal whose cost was checked against the budget, before it is
    returned (within budget) or skipped (over it, nothing trained); a controller may learn
    from it. By default it does not."""
    del tokens, within_budget

  def state(self):
    """The subclass's own state, JSON-serializable."""
    return {}

  def load_state(self, state):
    """Restores what `state` returned."""
    del state

  def next_archs(self, count=1):
    """The next candidates to train: `count` distinct token lists, each within budget
    (PaddleSlim's interface; `count` > 1 feeds parallel workers). Repeated calls before
    `reward` return the same candidates. A proposal scored before is answered with its
    recorded reward (``update``) instead of being returned, during the first half of the
    `max_resample` proposals.

    Raises:
      RuntimeError: fewer than `count` distinct candidates within the budget among
        `max_resample` proposals.
    """
    if count < 1:
      raise ValueError(f"{type(self).__name__}.next_archs: count must be >= 1, got {count}")
    if not self._pending:
      tries = 0
      while len(self._pending) < count:
        if tries == self.max_resample:
          self._pending = []
          raise RuntimeError(f"{type(self).__name__}: fewer than {count} distinct candidates "
                             f"within {self.constraint} in {self.max_resample} proposals; "
                             "raise the budget")
        tries += 1
        tokens = self.space.check(self.propose())
        key = self.space.key(tokens)
        known = self._scores.get(key)
        if known is not None and tries <= self.max_resample // 2:
          self.revisited += 1  # scored before: learn from that score, train nothing
          self.revisit(tokens, known)
          continue
        if any(key == self.space.key(pending) for pending, _ in self._pending):
          continue
        cost = self._cost(tokens)
        if self.constraint is not None:
          within = cost <= self.constraint.budget
          self.budget_checked(tokens, within)
          if not within:
            self.skipped += 1
            logging.debug("skipping %s: %s %g over budget %g", tokens,
                          self.constraint.metric.value, cost, self.constraint.budget)
            continue
        self._pending.append((tokens, cost))
    return [list(tokens) for tokens, _ in self._pending]

  def reward(self, score):
    """Records the scores of the candidates `next_archs` returned, in its order: one float,
    or a list with one per candidate. Returns whether the controller accepted each (a bool,
    or a list of them). Saves the checkpoint."""
    if not self._pending:
      raise RuntimeError(f"{type(self).__name__}: reward() without a pending candidate; call "
                         "next_archs() first")
    scores = [score] if np.ndim(score) == 0 else list(score)
    if len(scores) != len(self._pending):
      raise ValueError(f"{type(self).__name__}: {len(scores)} scores for "
                       f"{len(self._pending)} pending candidates")
    accepted = []
    for (tokens, cost), value in zip(self._pending, scores):
      value = float(value)
      accepted.append(bool(self.update(tokens, value)))
      if value > self.best_reward:
        self.best_tokens, self.best_reward = list(tokens), value
      self._scores[self.space.key(tokens)] = value
      self.history.append({"step": self.step, "tokens": list(tokens), "reward": value,
                           "cost": cost, "accepted": accepted[-1]})
      self.step += 1
    self._pending = []
    self._save()
    return accepted[0] if np.ndim(score) == 0 else accepted

  def _cost(self, tokens):
    if self.constraint is None:
      return None
    return self.constraint.value(self.space.build(tokens))

  def _save(self):
    if self.checkpoint is None:
      return
    data = {"controller": type(self).__name__, "step": self.step, "skipped": self.skipped,
            "revisited": self.revisited, "best_tokens": self.best_tokens,
            "best_reward": self.best_reward, "history": self.history,
            "rng": self.rng.bit_generator.state, "state": self.state()}
    self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    tmp = self.checkpoint.with_name(self.checkpoint.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, self.checkpoint)  # atomic: a crash never leaves half a checkpoint

  def _load(self):
    data = json.loads(self.checkpoint.read_text())
    if data.get("controller") != type(self).__name__:
      raise ValueError(f"{self.checkpoint} is a {data.get('controller')} checkpoint, not a "
                       f"{type(self).__name__} one")
    self.step, self.skipped, self.revisited = data["step"], data["skipped"], data["revisited"]
    self.best_tokens, self.best_reward = data["best_tokens"], data["best_reward"]
    self.history = data["history"]
    self._scores = {self.space.key(h["tokens"]): h["reward"] for h in self.history}
    self.rng.bit_generator.state = data["rng"]
    self.load_state(data["state"])
    logging.info("%s: resumed from %s after %d steps", type(self).__name__, self.checkpoint,
                 self.step)
