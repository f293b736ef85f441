"""Channel importance criteria: which channels of a group to remove.

Each criterion scores every class (removable channel) of a `Group`, aggregating over all the
layers coupled in it, and picks the classes to remove for a ratio. Filter-based scores are
divided by their layer's mean before they are averaged over the group's layers, so a residual
stage is not ruled by whichever of its convolutions has the largest weights.

References:
  L1: Li et al., "Pruning Filters for Efficient ConvNets", https://arxiv.org/abs/1608.08710
  FPGM: He et al., "Filter Pruning via Geometric Median", https://arxiv.org/abs/1811.00250
  Network slimming: Liu et al., "Learning Efficient Convolutional Networks through Network
  Slimming", https://arxiv.org/abs/1708.06519
  OptSlim: Ye et al., "Channel Pruning via Optimal Thresholding",
  https://arxiv.org/abs/2003.04566 (PaddleSlim's ``optimal_threshold`` selector)
"""

import numpy as np

from kslim._enum import Choice

__all__ = ["Criterion", "NotApplicable", "scores", "select"]


class Criterion(Choice):
  """How channels are ranked (the lowest are removed)."""
  L1 = "l1"              # L1 norm of the filters that make the channel
  L2 = "l2"              # L2 norm of those filters
  FPGM = "fpgm"          # distance from the layer's other filters (near the geometric median: low)
  BN_GAMMA = "bn_gamma"  # |gamma| of the batch norms on the channel (network slimming)
  OPT_SLIM = "opt_slim"  # |gamma|, cut at the optimal threshold of the squared-gamma energy


class NotApplicable(Exception):
  """The criterion cannot rank this group (e.g. BN-gamma on channels without batch norm)."""


def scores(criterion, graph, group):
  """The importance of each class of `group` (higher: keep).

  Args:
    criterion: a `Criterion` (or its string value).
    graph: the `DependencyGraph` that owns `group`.
    group: a `Group`.

  Returns:
    A float array with one score per class.

  Raises:
    NotApplicable: `bn_gamma`/`opt_slim` on a group no batch norm scales.
  """
  criterion = Criterion.parse(criterion, "pruning criterion")
  if criterion in (Criterion.BN_GAMMA, Criterion.OPT_SLIM):
    parts = graph.channel_scales(group)
    if not parts:
      raise NotApplicable("no BatchNormalization scales these channels")
    return _mean_per_class(parts, group.size, normalize=False)
  per_filter = {Criterion.L1: lambda f: np.abs(f).sum(axis=1),
                Criterion.L2: lambda f: np.sqrt((f ** 2).sum(axis=1)),
                Criterion.FPGM: _distance_sums}[criterion]
  parts = [(per_filter(filters.astype(np.float64)), index)
           for filters, index in graph.filters(group)]
  return _mean_per_class(parts, group.size, normalize=True)


def _distance_sums(filters):
  """Sum of Euclidean distances from each filter to all others (FPGM's importance).

  The filter minimizing it is the geometric median of the layer's filters; filters close to it
  are the most replaceable by the others, so they score lowest.
  """
  squares = (filters ** 2).sum(axis=1)
  d2 = squares[:, None] + squares[None, :] - 2.0 * filters @ filters.T
  return np.sqrt(np.maximum(d2, 0.0)).sum(axis=1)


def _mean_per_class(parts, n, normalize):
  total, count = np.zeros(n), np.zeros(n)
  for values, index in parts:
    if normalize:
      values = values / max(values.mean(), 1e-12)
    total += np.bincount(index, weights=values, minlength=n)
    count += np.bincount(index, minlength=n)
  return total / np.maximum(count, 1)


def select(criterion, class_scores, pinned, ratio, align=1):
  """Indices of the classes to remove.

  With `l1`, `l2`, `fpgm` and `bn_gamma`, ``round(ratio * n)`` classes go, lowest score first.
  With `opt_slim`, `ratio` is the share of the squared-gamma energy that may be discarded
  (PaddleSlim's optimal threshold): the smallest-gamma channels go while their cumulative
  ``gamma^2`` stays within ``ratio`` of the group's total.

  The kept count is then rounded to a multiple of `align` (when the group has at least `align`
  channels), at least one channel stays, and pinned classes are never removed.

  Args:
    criterion: a `Criterion`.
    class_scores: per-class importance from `scores`.
    pinned: per-class bool, True where the class must stay.
    ratio: in [0, 1).
    align: keep channel counts multiples of this.

  Returns:
    A sorted int array of class indices.
  """
  criterion = Criterion.parse(criterion, "pruning criterion")
  n = len(class_scores)
  order = np.argsort(class_scores, kind="stable")
  if criterion is Criterion.OPT_SLIM:
    energy = np.maximum(class_scores, 1e-18)[order] ** 2
    n_remove = int(np.searchsorted(np.cumsum(energy) / energy.sum(), ratio, side="right"))
  else:
    n_remove = int(round(ratio * n))
  keep = max(n - n_remove, 1)
  if align > 1 and n >= align:
    keep = min(n, max(align, align * int(round(keep / align))))
  free = [i for i in order if not pinned[i]]
  return np.sort(np.array(free[:max(n - keep, 0)], dtype=np.int64))
