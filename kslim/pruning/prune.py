"""kslim.prune: plan which channels go, then rebuild a smaller model.

Example:
  >>> small = kslim.prune(model, 0.3, criterion="fpgm", align=8)
  >>> small = kslim.prune(model, {"block2_conv": 0.5, "block3_conv": 0.2})
  >>> small.compile(...); small.fit(...)        # fine-tune
"""

import dataclasses
import numbers

from absl import logging

from kslim._keras import check_model
from kslim._table import format_table
from kslim.pruning import criteria
from kslim.pruning import reconstruction
from kslim.pruning import surgery
from kslim.pruning.graph import DependencyGraph

__all__ = ["Plan", "plan", "prune", "resolve_ratios"]


@dataclasses.dataclass(frozen=True)
class Plan:
  """Which classes of which groups go.

  Attributes:
    graph: the `DependencyGraph` the plan is for.
    removed: group name -> sorted class indices (into ``group.classes``) to remove.
    skipped: group name -> why the group was left whole (e.g. a criterion not applicable).
  """
  graph: DependencyGraph
  removed: dict
  skipped: dict

  def roots(self):
    """The union-find roots of every removed class."""
    return [int(self.graph.group(name).classes[i])
            for name, idx in self.removed.items() for i in idx]

  def kept(self, name):
    """Channels the group `name` keeps."""
    return self.graph.group(name).size - len(self.removed.get(name, ()))

  def __str__(self):
    rows = [[g.name, str(g.size), str(self.kept(g.name)), self.skipped.get(g.name, "")]
            for g in self.graph.groups]
    return format_table(["Group", "Channels", "Kept", "Note"], rows, left_columns=1)


def resolve_ratios(graph, ratios, skip=()):
  """Group name -> ratio, from a float (every group) or a dict of layer name -> ratio.

  A dict may name any channel-creating layer of a group; groups it does not name keep all
  channels. Layers in `skip` keep their groups whole.

  Raises:
    ValueError: a ratio outside [0, 1), a name that is no prunable layer, or two different
      ratios for layers of one group.
  """
  for name in skip:
    graph.group(name)  # raises on an unknown name
  skipped = {graph.group(name).name for name in skip}
  if isinstance(ratios, numbers.Real):
    _check_ratio(ratios, "ratio")
    return {g.name: float(ratios) for g in graph.groups if g.name not in skipped}
  if not isinstance(ratios, dict):
    raise TypeError(f"ratios must be a float or a dict of layer name -> ratio, got "
                    f"{type(ratios).__name__}")
  resolved, named_by = {}, {}
  for name, ratio in ratios.items():
    _check_ratio(ratio, f"ratio for {name!r}")
    group = graph.group(name).name
    if group in resolved and resolved[group] != ratio:
      raise ValueError(
          f"layers {named_by[group]!r} and {name!r} are coupled (group {group!r}: their "
          f"channels are pruned together) but were given ratios {resolved[group]} and {ratio}")
    resolved[group], named_by[group] = float(ratio), name
  return {g: r for g, r in resolved.items() if g not in skipped}


def _check_ratio(ratio, what):
  if not isinstance(ratio, numbers.Real) or not 0.0 <= ratio < 1.0:
    raise ValueError(f"{what} must be a number in [0, 1), got {ratio!r}")


def plan(graph, ratios, criterion="l1", align=1, skip=(), scores=None):
  """Chooses the classes to remove in each group.

  Args:
    graph: a `DependencyGraph`.
    ratios, align, skip: as for `prune`.
    criterion: a `criteria.Criterion` value.
    scores: optional dict that caches each group's class scores (or why the criterion cannot
      rank it) across calls on unchanged weights, e.g. while a search tries many ratios.

  Returns:
    A `Plan`.
  """
  criterion = criteria.Criterion.parse(criterion, "pruning criterion")
  if not isinstance(align, int) or align < 1:
    raise ValueError(f"align must be a positive integer, got {align!r}")
  removed, skipped = {}, {}
  scores = {} if scores is None else scores
  by_group = resolve_ratios(graph, ratios, skip)
  for group in graph.groups:
    ratio = by_group.get(group.name, 0.0)
    if ratio == 0.0:
      continue
    if group.prunable == 0:
      skipped[group.name] = "all channels pinned: " + "; ".join(group.reasons)
      continue
    if group.name not in scores:
      try:
        scores[group.name] = criteria.scores(criterion, graph, group)
      except criteria.NotApplicable as reason:
        scores[group.name] = f"{criterion.value}: {reason}"
        logging.info("pruning leaves group %s whole: %s", group.name, scores[group.name])
    if isinstance(scores[group.name], str):
      skipped[group.name] = scores[group.name]
      continue
    chosen = criteria.select(criterion, scores[group.name], group.pinned, ratio, align)
    if len(chosen):
      removed[group.name] = chosen
  return Plan(graph, removed, skipped)


def prune(model, ratios, criterion="l1", align=1, skip=(), reconstruction_images=None):
  """Removes whole channels and rebuilds a smaller functional model with the surviving weights.

  Channels coupled by the model's structure (residual adds, depthwise chains, concatenations,
  squeeze-excite gates, Flatten -> Dense) go together; the model's input and output channels
  and anything next to a layer kslim cannot prune through stay.

  Args:
    model: a Sequential, functional or nested tf_keras model (not modified).
    ratios: the fraction of channels to remove: a float for every group, or a dict of layer
      name -> ratio (other groups stay whole). For ``opt_slim`` the ratio is the share of the
      squared BN-gamma energy that may be discarded.
    criterion: ``"l1"``, ``"l2"``, ``"fpgm"``, ``"bn_gamma"`` or ``"opt_slim"``.
    align: keep every pruned group's channel count a multiple of this (e.g. 8 for SIMD).
    skip: names of layers whose groups stay whole.
    reconstruction_images: optional calibration inputs (e.g. 2,000 training images). The
      Conv/Dense layers that lose input channels are then refitted by least squares so that
      their outputs on these images stay as close as the kept channels allow to the
      original's (see `kslim.pruning.reconstruct`): a much better start for fine-tuning.

  Returns:
    The pruned tf_keras functional model, ready to compile and fine-tune.

  Raises:
    TypeError: `model` is not a tf_keras model.
    ValueError: a bad ratio, criterion, align or layer name (the message names it).
  """
  check_model(model, "kslim.prune")
  graph = DependencyGraph(model)
  chosen = plan(graph, ratios, criterion, align, skip)
  pruned = surgery.rebuild(graph, chosen.roots())
  if reconstruction_images is not None:
    reconstruction.reconstruct(graph, chosen.roots(), pruned, reconstruction_images)
  return pruned
