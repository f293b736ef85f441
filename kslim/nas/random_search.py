"""`RandomSearch`: uniformly random candidates within budget, the baseline every controller
must beat at an equal number of trials."""

from kslim.nas.controller import Controller

__all__ = ["RandomSearch"]


class RandomSearch(Controller):
  """Random search with ``next_archs()`` / ``reward(score)``; see `Controller` for the args.

  Example:
    >>> rs = RandomSearch(MobileNetV1Space(), seed=1)
    >>> rs.reward(train_and_score(rs.space.decode(rs.next_archs()[0])))
  """

  def propose(self):
    return self.space.random_tokens(self.rng)

  def update(self, tokens, reward):
    del tokens, reward
    return True
