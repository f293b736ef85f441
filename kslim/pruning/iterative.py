"""Pruning over time: iterative prune/fine-tune to a MACs target, and a `fit` callback.

`iterative_prune` repeats *sensitivity scan -> prune a step -> fine-tune* until the model's
MACs fall by the requested share, checkpointing every step so an interrupted run resumes.
`PruningCallback` prunes during ``fit`` the soft way (He et al., "Soft Filter Pruning",
https://arxiv.org/abs/1808.06866): at the end of each pruning epoch it zeroes the makers of the
channels the criterion ranks lowest, letting training revive them if they matter; after the
last pruning epoch the zeroed channels are dead and `pruned_model` removes them exactly.
"""

import pathlib

from absl import logging

from kslim._keras import keras
from kslim.pruning import prune as prune_lib
from kslim.pruning import sensitivity as sensitivity_lib
from kslim.pruning import surgery
from kslim.pruning.graph import DependencyGraph

__all__ = ["iterative_prune", "PruningCallback"]


def iterative_prune(model, eval_fn, fine_tune, reduction, steps=3, criterion="l1",
                    ratios=sensitivity_lib.DEFAULT_RATIOS, workdir=None):
  """Prunes in `steps` rounds of sensitivity scan, prune and fine-tune to a MACs reduction.

  Round ``k`` brings the MACs to ``1 - reduction * k / steps`` of the original's, with
  sensitivity-derived per-group ratios recomputed on the current (fine-tuned) model.

  Args:
    model: the tf_keras model (not modified).
    eval_fn: ``eval_fn(model) -> float``, higher is better, for the sensitivity scans.
    fine_tune: ``fine_tune(model) -> model`` compiles and fits a freshly pruned model (it may
      return None if it trains the model in place).
    reduction: the share of MACs to remove in total, in (0, 1).
    steps: number of rounds.
    criterion: which channels go (see `kslim.prune`).
    ratios: the ratios each sensitivity scan tries.
    workdir: where each round's sensitivity cache (JSON + PNG) and fine-tuned model
      (``step{k}.keras``) go; a rerun resumes after the last finished round.

  Returns:
    The pruned, fine-tuned model.
  """
  sensitivity_lib.check_reduction(reduction)
  workdir = pathlib.Path(workdir) if workdir is not None else None
  base = DependencyGraph(model).macs()
  current = model
  for step in range(1, steps + 1):
    checkpoint = workdir / f"step{step}.keras" if workdir else None
    if checkpoint is not None and checkpoint.exists():
      logging.info("iterative pruning: step %d done, loading %s", step, checkpoint)
      current = keras.models.load_model(checkpoint)
      continue
    cache = workdir / f"step{step}_sensitivity.json" if workdir else None
    sens = sensitivity_lib.sensitivity(current, eval_fn, ratios, criterion, cache=cache)
    step_reduction = 1.0 - base * (1.0 - reduction * step / steps) / sens.graph.macs()
    if step_reduction > 0:
      current = prune_lib.prune(
          current, sensitivity_lib.ratios_for_flops(sens, step_reduction), criterion)
      current = fine_tune(current) or current
    logging.info("iterative pruning: step %d/%d, MACs %.1f%% of the original", step, steps,
                 100 * DependencyGraph(current).macs() / base)
    if checkpoint is not None:
      current.save(checkpoint)
  return current


class PruningCallback(keras.callbacks.Callback):
  """Soft channel pruning during ``fit``, towards a MACs reduction; then a real prune.

  From `start_epoch` to `end_epoch` (default: the last epoch) the removed share of MACs grows
  linearly to `reduction`; at the end of each of those epochs the lowest-ranked channels'
  filters, biases and batch-norm gamma/beta are zeroed in the training model.

  Example:
    >>> callback = kslim.pruning.PruningCallback(reduction=0.5, criterion="fpgm")
    >>> model.fit(x, y, epochs=6, callbacks=[callback])
    >>> small = callback.pruned_model()   # the same function as `model`, fewer channels

  Args:
    reduction: the share of MACs to remove, in (0, 1).
    criterion: see `kslim.prune`.
    start_epoch: first epoch (0-based) at whose end channels are zeroed.
    end_epoch: last such epoch; None for the last epoch of the ``fit`` call.
    align: see `kslim.prune`.
  """

  def __init__(self, reduction, criterion="l1", start_epoch=0, end_epoch=None, align=1):
    super().__init__()
    sensitivity_lib.check_reduction(reduction)
    self.reduction, self.criterion, self.align = reduction, criterion, align
    self.start_epoch, self.end_epoch = start_epoch, end_epoch
    self.graph = None
    self.plan = None

  def on_train_begin(self, logs=None):
    self.graph = DependencyGraph(self.model)

  def on_epoch_end(self, epoch, logs=None):
    end = self.end_epoch if self.end_epoch is not None else self.params["epochs"] - 1
    if not self.start_epoch <= epoch <= end:
      return
    share = self.reduction * (epoch - self.start_epoch + 1) / (end - self.start_epoch + 1)
    ratio = sensitivity_lib.uniform_ratio_for_flops(self.graph, share, self.criterion,
                                                    self.align)
    self.plan = prune_lib.plan(self.graph, ratio, self.criterion, self.align)
    self.graph.zero_channels(self.plan.roots())
    if logs is not None:
      logs["pruned_macs_share"] = 1.0 - self.graph.macs(self.plan.roots()) / self.graph.macs()

  def pruned_model(self):
    """The trained model without the channels zeroed at the last pruning epoch."""
    if self.plan is None:
      raise ValueError("PruningCallback has not pruned yet: fit past start_epoch first")
    return surgery.rebuild(self.graph, self.plan.roots())
