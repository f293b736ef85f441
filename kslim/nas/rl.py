"""`RLNAS`: a policy over tokens trained with REINFORCE (policy-gradient NAS).

The controller is a categorical distribution per token position (independent softmax
logits: the "simpler" controller of Zoph & Le's LSTM, enough for token spaces of a few dozen
positions). After each trial its logits move along ``lr * advantage * grad log p``, where the
advantage is the reward minus an exponential moving average of past rewards (the baseline),
so tokens of better-than-usual candidates become likelier. By default the advantage is also
divided by a moving average of its own spread: rewards such as accuracies after a short
proxy training differ by a few hundredths, which with a raw advantage would leave the policy
almost uniform for the whole of a few-dozen-trial search, and the step size would depend on
the reward's units.

Proposals over the budget are never trained, but by default they still teach the policy: each
counts as the worst reward seen so far (its normalized advantage at most one spread in size,
and the k-th of one `next_archs` call weighted 1/k, so that a long run of them does not
collapse the policy onto the few candidates already known). Without that signal a policy
that learns to favour large options (they score better) drifts to where almost every
proposal is over budget — measured on OFA subnets under a 6M-MACs budget: 200 proposals in a
row, and the search stopped.
"""

import numpy as np

from kslim.nas.controller import Controller

__all__ = ["RLNAS"]


def _softmax(logits):
  z = np.exp(logits - np.max(logits))
  return z / z.sum()


class RLNAS(Controller):
  """REINFORCE architecture search with ``next_archs()`` / ``reward(score)``.

  Args:
    space: the `SearchSpace`.
    learning_rate: step size of the policy-gradient update of the logits.
    baseline_decay: decay of the moving averages of the reward (the baseline) and of the
      squared advantage.
    normalize_advantage: divide the advantage by the root of the moving average of its
      square, the current one included (so one advantage is at most
      ``1 / sqrt(1 - baseline_decay)`` in size, 2.2 by default).
    penalize_over_budget: a policy step for every proposal over the budget, as if it had
      scored the worst reward seen so far (see the module docstring; the baseline and the
      spread stay those of the trained candidates).
    constraint, checkpoint, seed, max_resample: see `Controller`.

  Example:
    >>> rl = RLNAS(ResNetSpace(), learning_rate=2.0, checkpoint="runs/nas/rl.json")
    >>> for _ in range(rl.step, 30):
    ...   rl.reward(train_and_score(rl.space.decode(rl.next_archs()[0])))

  References:
    Williams, "Simple Statistical Gradient-Following Algorithms for Connectionist
    Reinforcement Learning", 1992; Zoph & Le, "Neural Architecture Search with Reinforcement
    Learning", https://arxiv.org/abs/1611.01578
  """

  def __init__(self, space, learning_rate=1.0, baseline_decay=0.8, normalize_advantage=True,
               penalize_over_budget=True, constraint=None, checkpoint=None, seed=0,
               max_resample=200):
    if not learning_rate > 0 or not 0 <= baseline_decay < 1:
      raise ValueError(f"RLNAS: need learning_rate > 0 and 0 <= baseline_decay < 1, got "
                       f"{learning_rate!r}, {baseline_decay!r}")
    self.learning_rate, self.baseline_decay = float(learning_rate), float(baseline_decay)
    self.logits = [np.zeros(count) for count in space.choices]
    self.normalize_advantage = bool(normalize_advantage)
    self.penalize_over_budget = bool(penalize_over_budget)
    self._skips = 0  # over-budget proposals in this next_archs call
    self.baseline, self.advantage_square = None, None
    super().__init__(space, constraint, checkpoint, seed, max_resample)

  def probabilities(self):
    """The policy: per token position, the probability of each option."""
    return [_softmax(logits) for logits in self.logits]

  def propose(self):
    return [int(self.rng.choice(len(p), p=p)) for p in self.probabilities()]

  def update(self, tokens, reward):
    if self.baseline is None:  # the first reward: nothing to compare it with yet
      self.baseline = reward
      return True
    advantage = reward - self.baseline
    if self.normalize_advantage:
      square = advantage ** 2
      self.advantage_square = square if self.advantage_square is None else (
          self.baseline_decay * self.advantage_square + (1 - self.baseline_decay) * square)
      advantage = advantage / np.sqrt(self.advantage_square) if self.advantage_square else 0.0
    self._policy_step(tokens, advantage)
    self.baseline = self.baseline_decay * self.baseline + (1 - self.baseline_decay) * reward
    return True

  def next_archs(self, count=1):
    self._skips = 0
    return super().next_archs(count)

  def over_budget(self, tokens):
    if not self.penalize_over_budget or not self.history:
      return
    advantage = min(h["reward"] for h in self.history) - self.baseline
    if self.normalize_advantage:  # at most one typical advantage in size
      spread = np.sqrt(self.advantage_square) if self.advantage_square else 0.0
      advantage = max(advantage / spread, -1.0) if spread else 0.0
    self._skips += 1  # the k-th skip of a call steps 1/k: a long run cannot collapse it
    self._policy_step(tokens, advantage / self._skips)

  def _policy_step(self, tokens, advantage):
    """REINFORCE: the logits move along ``learning_rate * advantage * grad log p(tokens)``."""
    for logits, p, token in zip(self.logits, self.probabilities(), tokens):
      grad = -p
      grad[token] += 1.0  # d log softmax(logits)[token] / d logits
      logits += self.learning_rate * advantage * grad

  def state(self):
    return {"logits": [l.tolist() for l in self.logits], "baseline": self.baseline,
            "advantage_square": self.advantage_square}

  def load_state(self, state):
    self.logits = [np.asarray(l, np.float64) for l in state["logits"]]
    self.baseline = state["baseline"]
    self.advantage_square = state["advantage_square"]
