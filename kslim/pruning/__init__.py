"""Structured pruning: coupled channel groups, criteria, and rebuilt smaller models.

Example:
  >>> graph = kslim.pruning.DependencyGraph(model); print(graph)
  >>> small = kslim.prune(model, 0.3, criterion="l1")
"""

from kslim.pruning.criteria import Criterion
from kslim.pruning.graph import DependencyGraph
from kslim.pruning.graph import Group
from kslim.pruning.prune import Plan
from kslim.pruning.prune import plan
from kslim.pruning.prune import prune

__all__ = ["Criterion", "DependencyGraph", "Group", "Plan", "plan", "prune"]
