"""`OFASpace`: a trained Once-for-All supernet's subnets as a token search space.

A token picks each block's kernel size and expansion ratio and each stage's depth; decoding
extracts the subnet with the supernet's weights, so `SANAS`, `RLNAS` and `RandomSearch` search
the subnets with `WeightSharingEvaluator` scores (seconds per candidate, no training) under
any `Constraint`, where `OFA.pick` only samples at random.

Example:
  >>> space = OFASpace(ofa.supernet)
  >>> sa = SANAS(space, init_temperature=0.005, constraint=Constraint("macs", 6e6))
  >>> best, score = search(sa, WeightSharingEvaluator(x_calib, x_val, y_val), steps=40)
  >>> subnet = recalibrate_batch_norm(space.decode(best), x_calib)  # the supernet's weights
"""

from kslim.nas.search_space import SearchSpace

__all__ = ["OFASpace"]


class OFASpace(SearchSpace):
  """The subnets of an `OFASupernet` as tokens: per block a kernel and an expansion token,
  then per stage a depth token (indices into the supernet's ``kernels``, ``expands`` and
  ``depths``).

  Tokens of blocks past their stage's depth change nothing; `key` ignores them, so a
  controller never scores the same subnet twice under two token lists.

  Args:
    supernet: a trained `OFASupernet` (its weights are shared, not copied, until decode).
  """

  def __init__(self, supernet):
    self.supernet = supernet
    self._blocks = len(supernet.blocks)

  @property
  def choices(self):
    net = self.supernet
    return ((len(net.kernels),) * self._blocks + (len(net.expands),) * self._blocks
            + (len(net.depths),) * len(net.stages))

  def config(self, tokens):
    """The supernet configuration (``{"kernel", "expand", "depth"}`` lists) of `tokens`."""
    tokens, n, net = self.check(tokens), self._blocks, self.supernet
    return {"kernel": [net.kernels[t] for t in tokens[:n]],
            "expand": [net.expands[t] for t in tokens[n:2 * n]],
            "depth": [net.depths[t] for t in tokens[2 * n:]]}

  def tokens(self, config):
    """The tokens of a supernet configuration (the inverse of `config`).

    Raises:
      ValueError: a configuration the supernet cannot run (names the entry).
    """
    config, net = self.supernet.check(config), self.supernet
    return ([net.kernels.index(k) for k in config["kernel"]]
            + [net.expands.index(e) for e in config["expand"]]
            + [net.depths.index(d) for d in config["depth"]])

  def key(self, tokens):
    tokens, n = list(tokens), self._blocks
    depth = self.config(tokens)["depth"]
    for i, (stage, d, *_) in enumerate(self.supernet.blocks):
      if d >= depth[stage]:  # a skipped block: its kernel and expansion are unused
        tokens[i] = tokens[n + i] = 0
    return tuple(tokens)

  def build(self, tokens):
    return self.supernet.extract(self.config(tokens))
