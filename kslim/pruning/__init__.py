"""Structured pruning: coupled channel groups, criteria, and rebuilt smaller models.

Example:
  >>> graph = kslim.pruning.DependencyGraph(model); print(graph)
  >>> small = kslim.prune(model, 0.3, criterion="l1")
  >>> sens = kslim.pruning.sensitivity(model, evaluate, cache="sens.json")
  >>> small = kslim.prune(model, kslim.pruning.ratios_for_flops(sens, reduction=0.5))
  >>> small = kslim.prune(model, 0.5, reconstruction_images=x_train[:2000])  # refit consumers
"""

from kslim.pruning.criteria import Criterion
from kslim.pruning.graph import DependencyGraph
from kslim.pruning.graph import Group
from kslim.pruning.prune import Plan
from kslim.pruning.prune import plan
from kslim.pruning.iterative import PruningCallback
from kslim.pruning.iterative import iterative_prune
from kslim.pruning.prune import prune
from kslim.pruning.reconstruction import reconstruct
from kslim.pruning.sensitivity import Sensitivity
from kslim.pruning.sensitivity import plot_sensitivity
from kslim.pruning.sensitivity import ratios_for_flops
from kslim.pruning.sensitivity import ratios_for_loss
from kslim.pruning.sensitivity import sensitivity
from kslim.pruning.sensitivity import uniform_ratio_for_flops
from kslim.pruning.slimming import add_slimming_penalty

__all__ = ["Criterion", "DependencyGraph", "Group", "Plan", "PruningCallback", "Sensitivity",
           "add_slimming_penalty", "iterative_prune", "plan", "plot_sensitivity", "prune",
           "ratios_for_flops", "ratios_for_loss", "reconstruct", "sensitivity",
           "uniform_ratio_for_flops"]
