"""`SANAS`: simulated annealing over a token search space (PaddleSlim's SA-NAS).

Each step mutates one token of the current candidate. A better reward is always accepted; a
worse one with probability ``exp((reward - current) / T)``, where the temperature
``T = init_temperature * reduce_rate ** step`` cools as the search goes on, so it explores
first and then settles on the best region.
"""

import math

from kslim.nas.controller import Controller

__all__ = ["SANAS", "acceptance_probability"]


def acceptance_probability(reward, current, temperature):
  """Metropolis rule: 1 for a better reward, else ``exp((reward - current) / T)``."""
  if reward >= current:
    return 1.0
  return math.exp((reward - current) / temperature) if temperature > 0 else 0.0


class SANAS(Controller):
  """Simulated-annealing architecture search with ``next_archs()`` / ``reward(score)``.

  Args:
    space: the `SearchSpace`.
    init_temperature: T at step 0, on the scale of the rewards: a worse reward by T is
      accepted with probability 1/e. Set it near the differences expected between
      neighbouring candidates: on short-proxy accuracies a few hundredths apart, 0.005 climbed
      in a 12-trial benchmark while 0.03 accepted most worse moves and fell behind random
      search (`benchmarks/nas.py`). The default, 0.1, accepts nearly any such move at first.
    reduce_rate: T's factor per step, in (0, 1].
    init_tokens: the first candidate (default: the space's `init_tokens`).
    constraint, checkpoint, seed, max_resample: see `Controller`.

  Example:
    >>> sa = SANAS(MobileNetV2Space(), init_temperature=0.05, constraint=Constraint("macs", 2e6),
    ...            checkpoint="runs/nas/sa.json")
    >>> for _ in range(sa.step, 30):
    ...   tokens = sa.next_archs()[0]
    ...   sa.reward(train_and_score(sa.space.decode(tokens)))

  References:
    Kirkpatrick et al., "Optimization by Simulated Annealing", Science 1983; PaddleSlim
    ``paddleslim.nas.SANAS``.
  """

  def __init__(self, space, init_temperature=0.1, reduce_rate=0.85, init_tokens=None,
               constraint=None, checkpoint=None, seed=0, max_resample=200):
    if not init_temperature > 0 or not 0 < reduce_rate <= 1:
      raise ValueError(f"SANAS: need init_temperature > 0 and 0 < reduce_rate <= 1, got "
                       f"{init_temperature!r}, {reduce_rate!r}")
    self.init_temperature, self.reduce_rate = float(init_temperature), float(reduce_rate)
    self.init_tokens = space.check(init_tokens if init_tokens is not None
                                   else space.init_tokens())
    self.current_tokens, self.current_reward = None, None
    super().__init__(space, constraint, checkpoint, seed, max_resample)

  @property
  def temperature(self):
    """The temperature of the current step."""
    return self.init_temperature * self.reduce_rate ** self.step

  def propose(self):
    if self.current_tokens is None:  # the first candidate; random ones if it is over budget
      first = self.skipped == 0 and not self._pending  # or when a batch needs more than one
      return self.init_tokens if first else self.space.random_tokens(self.rng)
    tokens = list(self.current_tokens)
    positions = [i for i, count in enumerate(self.space.choices) if count > 1]
    i = positions[self.rng.integers(len(positions))]
    tokens[i] = int((tokens[i] + 1 + self.rng.integers(self.space.choices[i] - 1))
                    % self.space.choices[i])  # any other value of that token
    return tokens

  def update(self, tokens, reward):
    if self.current_reward is None:
      accepted = True
    else:
      accepted = self.rng.random() < acceptance_probability(reward, self.current_reward,
                                                            self.temperature)
    if accepted:
      self.current_tokens, self.current_reward = list(tokens), reward
    return accepted

  def state(self):
    return {"current_tokens": self.current_tokens, "current_reward": self.current_reward}

  def load_state(self, state):
    self.current_tokens, self.current_reward = state["current_tokens"], state["current_reward"]
