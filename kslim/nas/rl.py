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

Proposals over the budget are never trained, but they still teach the policy: besides the
reward of its trained candidates, the policy ascends the log of its own within-budget rate
(weighted `feasibility_weight`). The REINFORCE estimate of that gradient uses every proposal
checked against the budget: its "reward" is 1 within budget and 0 over it, its baseline the
moving average of that rate, so an over-budget proposal steps away from its tokens by the
rate (small when most proposals are over budget, but there are many of them) and a
within-budget one steps toward its tokens by one minus the rate (a large step when fitting is
rare). Without that signal a policy that learns to favour large options (they score better)
drifts to where almost every proposal is over budget — measured on OFA subnets under a
6M-MACs budget: 200 proposals in a row, and the search stopped.
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
    feasibility_weight: weight of the log within-budget rate in the policy's objective
      (see the module docstring); 0 leaves over-budget proposals out of the policy.
    feasibility_decay: decay, per proposal, of the moving within-budget rate (its baseline).
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
               feasibility_weight=1.0, feasibility_decay=0.95, constraint=None,
               checkpoint=None, seed=0, max_resample=200):
    if (not learning_rate > 0 or not 0 <= baseline_decay < 1 or not feasibility_weight >= 0
        or not 0 <= feasibility_decay < 1):
      raise ValueError(f"RLNAS: need learning_rate > 0, feasibility_weight >= 0 and decays in "
                       f"[0, 1), got learning_rate={learning_rate!r}, baseline_decay="
                       f"{baseline_decay!r}, feasibility_weight={feasibility_weight!r}, "
                       f"feasibility_decay={feasibility_decay!r}")
    self.learning_rate, self.baseline_decay = float(learning_rate), float(baseline_decay)
    self.logits = [np.zeros(count) for count in space.choices]
    self.normalize_advantage = bool(normalize_advantage)
    self.feasibility_weight = float(feasibility_weight)
    self.feasibility_decay = float(feasibility_decay)
    self.baseline, self.advantage_square = None, None
    self.feasible_rate = None  # moving average of "within budget" over checked proposals
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

  def revisit(self, tokens, reward):
    """No policy step: the candidate's reward already made one when it was trained. Stepping
    again on every revisit is a feedback loop (the likelier the best-known candidate, the
    more revisits, the more steps toward it): measured on a 24-candidate space, the policy
    collapsed onto one candidate within two batches of three in 61 of 100 seeds, and a batch
    of three distinct candidates could no longer be found (1 of 100 without)."""
    del tokens, reward

  def budget_checked(self, tokens, within_budget):
    fit = float(within_budget)
    if self.feasible_rate is None:  # the first proposal: no baseline to compare it with
      self.feasible_rate = fit
      return
    if self.feasibility_weight:
      self._policy_step(tokens, self.feasibility_weight * (fit - self.feasible_rate))
    self.feasible_rate = (self.feasibility_decay * self.feasible_rate
                          + (1 - self.feasibility_decay) * fit)

  def _policy_step(self, tokens, advantage):
    """REINFORCE: the logits move along ``learning_rate * advantage * grad log p(tokens)``."""
    for logits, p, token in zip(self.logits, self.probabilities(), tokens):
      grad = -p
      grad[token] += 1.0  # d log softmax(logits)[token] / d logits
      logits += self.learning_rate * advantage * grad

  def state(self):
    return {"logits": [l.tolist() for l in self.logits], "baseline": self.baseline,
            "advantage_square": self.advantage_square, "feasible_rate": self.feasible_rate}

  def load_state(self, state):
    self.logits = [np.asarray(l, np.float64) for l in state["logits"]]
    self.baseline = state["baseline"]
    self.advantage_square = state["advantage_square"]
    # Checkpoints written before the within-budget-rate term have no rate: it restarts.
    self.feasible_rate = state.get("feasible_rate")
