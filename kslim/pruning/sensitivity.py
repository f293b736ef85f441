"""Sensitivity analysis: how much each group's pruning costs, and ratios derived from it.

`sensitivity` prunes each group alone at each ratio and evaluates the model; the curves say
which layers tolerate pruning. `ratios_for_loss` picks, per group, the largest ratio whose
loss stays within a budget (linear interpolation between measured ratios, as PaddleSlim's
``get_ratios_by_loss``); `ratios_for_flops` searches that budget until the model's MACs fall
by the requested share.

Example:
  >>> sens = kslim.pruning.sensitivity(model, lambda m: evaluate(m), cache="sens.json")
  >>> ratios = kslim.pruning.ratios_for_flops(sens, reduction=0.5)
  >>> small = kslim.prune(model, ratios)
"""

import dataclasses
import json
import os
import pathlib

from absl import logging
import numpy as np
import tqdm

from kslim import _plot
from kslim.pruning import criteria
from kslim.pruning import prune as prune_lib
from kslim.pruning import reconstruction
from kslim.pruning import surgery
from kslim.pruning.graph import DependencyGraph

__all__ = ["DEFAULT_RATIOS", "Sensitivity", "sensitivity", "check_reduction",
           "ratios_for_loss", "ratios_for_flops", "uniform_ratio_for_flops", "plot_sensitivity"]

DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclasses.dataclass
class Sensitivity:
  """Metric of the model with each group pruned alone at each ratio.

  Attributes:
    model_name: the analysed model's name.
    criterion: the criterion that chose the channels.
    reconstruction_images: how many images refitted each pruned model before it was evaluated
      (0: none).
    baseline: the metric of the unpruned model.
    metrics: group name -> {ratio: metric}.
    graph: the `DependencyGraph` of the analysed model (not saved; `ratios_for_flops` needs it).
  """
  model_name: str
  criterion: str
  baseline: float
  metrics: dict
  graph: DependencyGraph = None
  reconstruction_images: int = 0

  def losses(self, group):
    """(ratios, metric losses) of `group`, sorted by ratio; loss = baseline - metric."""
    ratios = sorted(self.metrics[group])
    return np.array(ratios), np.array([self.baseline - self.metrics[group][r] for r in ratios])

  def to_json(self):
    return {"model": self.model_name, "criterion": self.criterion,
            "reconstruction_images": self.reconstruction_images, "baseline": self.baseline,
            "metrics": {g: {str(r): m for r, m in v.items()} for g, v in self.metrics.items()}}

  @classmethod
  def from_json(cls, data, graph=None):
    return cls(data["model"], data["criterion"], data["baseline"],
               {g: {float(r): m for r, m in v.items()} for g, v in data["metrics"].items()},
               graph, data.get("reconstruction_images", 0))

  @classmethod
  def load(cls, path, model=None):
    """Reads a sensitivity cache; pass the model to derive MACs-targeted ratios from it."""
    data = json.loads(pathlib.Path(path).read_text())
    return cls.from_json(data, DependencyGraph(model) if model is not None else None)


def sensitivity(model, eval_fn, ratios=DEFAULT_RATIOS, criterion="l1", groups=None,
                cache=None, plot=None, reconstruction_images=None):
  """Prunes each group alone at each ratio and evaluates; resumable.

  With `reconstruction_images`, each pruned model is first refitted by least squares
  (`reconstruct`), so the curves measure what a prune followed by the refit loses: layers
  whose removed channels the kept ones can stand in for then take larger ratios.

  Args:
    model: the tf_keras model to analyse (not modified).
    eval_fn: ``eval_fn(model) -> float``, higher is better (e.g. accuracy on a held-out set).
    ratios: pruning ratios to try per group.
    criterion: which channels each ratio removes (see `kslim.prune`).
    groups: names of layers whose groups to analyse (default: every prunable group).
    cache: a JSON path. Every result is written as soon as it is measured; a rerun with the
      same cache skips what is there, so an interrupted scan resumes without losing work.
    plot: a PNG path for the curves (default: the cache path with ``.png``, if a cache is set).
    reconstruction_images: calibration images for the refit (e.g. 2,000 training images), or
      None for plain pruning.

  Returns:
    A `Sensitivity`.

  Raises:
    ValueError: the cache belongs to another model, criterion or refit, or a bad group name.
  """
  graph = DependencyGraph(model)
  refit = 0 if reconstruction_images is None else len(reconstruction_images)
  names = ([graph.group(n).name for n in groups] if groups is not None
           else [g.name for g in graph.groups if g.prunable])
  sens = _resume(cache, model.name, criterion, refit)
  if sens is None:
    sens = Sensitivity(model.name, criterion, float(eval_fn(model)), {},
                       reconstruction_images=refit)
    _save(sens, cache)
  sens.graph = graph
  todo = [(name, float(r)) for name in names for r in ratios
          if float(r) not in sens.metrics.get(name, {})]
  for name, ratio in tqdm.tqdm(todo, desc="sensitivity", unit="eval", disable=not todo):
    chosen = prune_lib.plan(graph, {name: ratio}, criterion)
    pruned = surgery.rebuild(graph, chosen.roots())
    if refit:
      reconstruction.reconstruct(graph, chosen.roots(), pruned, reconstruction_images,
                                 progress=False)
    metric = float(eval_fn(pruned))
    sens.metrics.setdefault(name, {})[ratio] = metric
    logging.info("sensitivity %s @ %.2f: %.4f (baseline %.4f)", name, ratio, metric,
                 sens.baseline)
    _save(sens, cache)
  if plot is None and cache is not None:
    plot = pathlib.Path(cache).with_suffix(".png")
  if plot is not None:
    plot_sensitivity(sens, plot)
  return sens


def _resume(cache, model_name, criterion, refit):
  if cache is None or not pathlib.Path(cache).exists():
    return None
  sens = Sensitivity.from_json(json.loads(pathlib.Path(cache).read_text()))
  if (sens.model_name, sens.criterion, sens.reconstruction_images) != (model_name, criterion,
                                                                       refit):
    raise ValueError(f"sensitivity cache {str(cache)!r} holds model {sens.model_name!r} with "
                     f"criterion {sens.criterion!r} and {sens.reconstruction_images} "
                     f"reconstruction images, not {model_name!r} with {criterion!r} and "
                     f"{refit}; use another cache path")
  logging.info("resuming sensitivity from %s", cache)
  return sens


def _save(sens, cache):
  if cache is None:
    return
  path = pathlib.Path(cache)
  path.parent.mkdir(parents=True, exist_ok=True)
  partial = path.with_name(path.name + ".partial")
  partial.write_text(json.dumps(sens.to_json(), indent=1))
  os.replace(partial, path)  # atomic: an interruption never leaves a truncated cache


def ratios_for_loss(sens, max_loss):
  """Per group, the largest ratio whose metric loss stays within `max_loss`.

  The loss curve is interpolated linearly between measured ratios (starting from no loss at
  ratio 0); a group whose every measured ratio is within budget gets the largest measured one.

  Returns:
    group name -> ratio (groups with ratio 0 left out).
  """
  out = {}
  for group in sens.metrics:
    ratios, losses = sens.losses(group)
    ratios, losses = np.concatenate([[0.0], ratios]), np.concatenate([[0.0], losses])
    over = np.flatnonzero(losses > max_loss)
    if not len(over):
      ratio = ratios[-1]
    else:
      i = over[0]
      r0, r1, l0, l1 = ratios[i - 1], ratios[i], losses[i - 1], losses[i]
      ratio = r0 + (max_loss - l0) * (r1 - r0) / (l1 - l0) if l1 > l0 else r0
    if ratio > 0:
      out[group] = float(min(ratio, 0.99))
  return out


def check_reduction(reduction):
  """Raises a ValueError unless `reduction` (a share of MACs to remove) is in (0, 1)."""
  if not 0.0 < reduction < 1.0:
    raise ValueError(f"reduction must be in (0, 1), got {reduction!r}")


def _search(macs_of, target, low, high, steps=40):
  """Bisection on a knob whose MACs fall as it grows: the smallest value reaching `target`."""
  if macs_of(high) > target:
    return high
  for _ in range(steps):
    middle = (low + high) / 2
    if macs_of(middle) <= target:
      high = middle
    else:
      low = middle
  return high


def ratios_for_flops(sens, reduction=0.5, criterion=None, align=1):
  """Per-group ratios from a sensitivity scan that remove `reduction` of the model's MACs.

  The loss budget of `ratios_for_loss` is bisected until the pruned model's MACs (counted on
  the dependency graph, no rebuild) are at most ``(1 - reduction)`` of the original's. The
  bisection's last step can overshoot by a whole step of every group (with `align`, coarse:
  the reference CNN's 16-channel steps land at 0.43x MACs for a 0.5x target), so channels are
  then given back, one `align` step of one group at a time, while the target still holds:
  first to the group that loses most at its ratio in the scan.

  Args:
    sens: a `Sensitivity` with its graph (from `sensitivity`, or `Sensitivity.load(path,
      model)`).
    reduction: the share of MACs to remove, in (0, 1).
    criterion: the criterion of the final prune (default: the scan's).
    align: the final prune's `align`; the MACs are counted with the channel counts it rounds
      to, so the aligned model still reaches the target.

  Returns:
    group name -> ratio. If even the largest measured ratios fall short, those, with a warning.
  """
  if sens.graph is None:
    raise ValueError("this Sensitivity has no model: load it with Sensitivity.load(path, model)")
  check_reduction(reduction)
  graph, criterion = sens.graph, criterion or sens.criterion
  base, scores = graph.macs(), {}
  target = (1.0 - reduction) * base

  def macs_of(budget):
    chosen = prune_lib.plan(graph, ratios_for_loss(sens, budget), criterion, align,
                            scores=scores)
    return graph.macs(chosen.roots())

  top = max([float(np.max(sens.losses(g)[1])) for g in sens.metrics] + [0.0]) + 1e-6
  budget = _search(macs_of, target, min(0.0, -top), top)
  reached = macs_of(budget)
  if reached > target:
    logging.warning("the measured ratios reach only %.0f%% fewer MACs, not %.0f%%",
                    100 * (1 - reached / base), 100 * reduction)
    return ratios_for_loss(sens, budget)
  return _give_back(sens, ratios_for_loss(sens, budget), criterion, align, target, scores)


def _give_back(sens, ratios, criterion, align, target, scores):
  """`ratios` with channels returned, one align step at a time, while the MACs stay within
  `target`: each round to the group with the largest scanned loss at its ratio among those
  whose step still fits. OptSlim ratios are gamma-energy shares, not channel shares, so they
  are returned as they are."""
  if criteria.Criterion.parse(criterion, "pruning criterion") is criteria.Criterion.OPT_SLIM:
    return ratios
  graph, ratios = sens.graph, dict(ratios)
  sizes = {group.name: group.size for group in graph.groups}

  def loss_at(group, ratio):
    measured, losses = sens.losses(group)
    return float(np.interp(ratio, np.concatenate([[0.0], measured]),
                           np.concatenate([[0.0], losses])))

  removed = prune_lib.plan(graph, ratios, criterion, align, scores=scores).removed
  while True:
    fits = []
    for group, ratio in ratios.items():
      n = sizes[group]
      kept = n - len(removed.get(group, ()))
      step = align if n >= align else 1
      trial = dict(ratios)
      trial[group] = max(n - kept - step, 0) / n
      chosen = prune_lib.plan(graph, trial, criterion, align, scores=scores)
      if (len(chosen.removed.get(group, ())) < n - kept
          and graph.macs(chosen.roots()) <= target):
        fits.append((loss_at(group, ratio), group, trial[group], chosen.removed))
    if not fits:
      return {group: ratio for group, ratio in ratios.items() if ratio > 0}
    _, group, ratios[group], removed = max(fits, key=lambda fit: fit[:2])


def uniform_ratio_for_flops(graph, reduction, criterion="l1", align=1):
  """The smallest uniform ratio that removes `reduction` of the MACs of `graph`'s model."""
  check_reduction(reduction)
  target, scores = (1.0 - reduction) * graph.macs(), {}
  return _search(
      lambda r: graph.macs(prune_lib.plan(graph, r, criterion, align, scores=scores).roots()),
      target, 0.0, 0.95)


def plot_sensitivity(sens, path):
  """Writes a PNG: metric loss against ratio, one curve per group."""
  figure, axes = _plot.subplots(figsize=(7, 4.5))
  for group in sens.metrics:
    ratios, losses = sens.losses(group)
    axes.plot(ratios, losses, marker="o", label=group)
  axes.set(xlabel="pruning ratio", ylabel=f"metric loss (baseline {sens.baseline:.4f})",
           title=f"Pruning sensitivity of {sens.model_name} ({sens.criterion})")
  axes.axhline(0.0, color="gray", linewidth=0.5)
  axes.legend(fontsize="small", ncol=2)
  _plot.save(figure, path)
