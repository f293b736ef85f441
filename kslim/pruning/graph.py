"""DependencyGraph: which channels of a functional model must be pruned together.

Every channel of every tensor's last axis is an *atom* (an integer id). Layers that create
channels (convolutions, Dense) make new atoms; the rules in `layer_pruners` carry atoms through
batch norm, activations, pooling, depthwise convolutions, Concatenate and Flatten, and *couple*
the atoms that elementwise merges (Add, Multiply, ...) combine. Coupled atoms form a *class* (a
union-find root): one channel that must be removed everywhere at once. A `Group` is the set of
classes created by layers that are coupled to each other — a residual stage, or one plain conv
— and gets one pruning ratio.

Model inputs, model outputs, and the channels around layers no rule covers are *pinned*: never
removed. That is how the graph stays safe: anything it cannot prove it leaves alone, and
`DependencyGraph.barriers` lists why.

Example:
  >>> graph = kslim.pruning.DependencyGraph(model)
  >>> print(graph)            # one row per group: layers, channels, pinned channels
"""

import dataclasses

from absl import logging
import numpy as np

from kslim import _graph
from kslim import profiling
from kslim._table import format_table
from kslim.pruning import layer_pruners

__all__ = ["Group", "DependencyGraph"]


@dataclasses.dataclass(frozen=True)
class Group:
  """Coupled output channels of one or more layers, pruned with one ratio.

  Attributes:
    name: the name of the group's first channel-creating layer.
    layers: the names of every layer whose output channels belong to the group.
    classes: one union-find root per channel of the group (a removable unit).
    pinned: per class, whether it must stay (it reaches a model output or a barrier).
    reasons: why classes are pinned.
  """
  name: str
  layers: tuple
  classes: np.ndarray
  pinned: np.ndarray
  reasons: tuple

  @property
  def size(self):
    return len(self.classes)

  @property
  def prunable(self):
    return int((~self.pinned).sum())


class DependencyGraph:
  """The coupled channel groups of a Sequential, functional or nested tf_keras model.

  Args:
    model: the model (not modified). Nested models are inlined.

  Attributes:
    graph: the flattened `kslim._graph.Graph` of the model.
    groups: the `Group`s in graph order.
    barriers: one line per layer call pruning cannot pass through, with the reason.

  Raises:
    TypeError, ValueError: `model` is not a tf_keras graph model.
  """

  def __init__(self, model):
    self.model = model
    self.graph = _graph.Graph.from_model(model)
    self.barriers = []
    self._parent = []             # union-find over atoms
    self._pins = {}               # atom -> reason
    self._created = {}            # id(layer) -> (layer, its output atoms)
    self._first_inputs = {}       # id(layer) -> input atom arrays of its first call
    self._rules = {}              # id(layer) -> LayerPruner, or None for a barrier
    self.atoms = {}               # ref id -> atom array of its last axis
    for spec in self.graph.inputs:
      self.atoms[spec.ref.id] = self.pin(self._fresh(spec.ref.shape[-1]), "model input")
    for op in self.graph.ops:
      self._propagate(op)
    for ref in self.graph.output_refs():
      self.pin(self.atoms[ref.id], "model output")
    self._root = np.array([self._find(a) for a in range(len(self._parent))], dtype=np.int64)
    self.groups = self._make_groups()

  # -- construction (called by the rules through `ctx`) --

  def new(self, layer, n):
    """The output atoms of channel-creating `layer` (the same at every call of it)."""
    if id(layer) not in self._created:
      self._created[id(layer)] = (layer, self._fresh(n))
    return self._created[id(layer)][1]

  def couple(self, a, b):
    """Makes atoms ``a[i]`` and ``b[i]`` one class (they are removed together)."""
    for x, y in zip(a, b):
      x, y = self._find(x), self._find(y)
      if x != y:
        self._parent[max(x, y)] = min(x, y)

  def pin(self, atoms, reason):
    """Marks `atoms` as never removed; returns them."""
    for a in atoms:
      self._pins.setdefault(int(a), reason)
    return atoms

  def _fresh(self, n):
    start = len(self._parent)
    self._parent.extend(range(start, start + n))
    return np.arange(start, start + n, dtype=np.int64)

  def _find(self, a):
    while self._parent[a] != a:
      self._parent[a] = self._parent[self._parent[a]]
      a = self._parent[a]
    return a

  def _propagate(self, op):
    layer = op.layer
    inputs = [self.atoms[ref.id] for ref in op.inputs]
    rule = layer_pruners.rule_for(layer)
    try:
      if rule is None:
        raise layer_pruners.Barrier("no pruning rule for this layer type")
      if any(len(ref.shape) < 2 or ref.shape[-1] is None for ref in op.inputs + op.output_refs):
        raise layer_pruners.Barrier("a tensor without a known channel axis")
      rule.check(op)
      outputs = rule.propagate(self, op, inputs)
    except layer_pruners.Barrier as barrier:
      reason = f"{layer.name} ({type(layer).__name__}): {barrier}"
      self.barriers.append(reason)
      logging.info("pruning leaves channels around %s", reason)
      for atoms in inputs:
        self.pin(atoms, reason)
      if id(layer) in self._created:
        self.pin(self._created.pop(id(layer))[1], reason)
      outputs = [self.pin(self._fresh(ref.shape[-1] or 0), reason) for ref in op.output_refs]
      rule = None
    if id(layer) in self._first_inputs:  # a shared layer: every call slices the same weights
      for first, atoms in zip(self._first_inputs[id(layer)], inputs):
        if len(first) == len(atoms):
          self.couple(first, atoms)
      if self._rules[id(layer)] is None or rule is None:
        self._rules[id(layer)] = None
        for atoms in self._first_inputs[id(layer)] + inputs:
          self.pin(atoms, f"{layer.name}: a shared layer one of whose calls is a barrier")
    else:
      self._first_inputs[id(layer)] = inputs
      self._rules[id(layer)] = rule
    for ref, atoms in zip(op.output_refs, outputs):
      self.atoms[ref.id] = atoms

  def _make_groups(self):
    pinned_roots = {}
    for atom, reason in self._pins.items():
      pinned_roots.setdefault(int(self._root[atom]), reason)
    # Layers that share a class are in one group (a small union-find over layers).
    owner = {}        # root -> index into creators
    parent = list(range(len(self._created)))

    def find(i):
      while parent[i] != i:
        i = parent[i]
      return i

    creators = list(self._created.values())
    for i, (_, atoms) in enumerate(creators):
      for root in self._root[atoms]:
        j = owner.setdefault(int(root), i)
        if find(j) != find(i):
          parent[max(find(i), find(j))] = min(find(i), find(j))
    members = {}
    for i in range(len(creators)):
      members.setdefault(find(i), []).append(i)
    groups = []
    for indices in members.values():
      layers = [creators[i][0] for i in indices]
      roots = np.concatenate([self._root[creators[i][1]] for i in indices])
      _, first = np.unique(roots, return_index=True)
      classes = roots[np.sort(first)]
      reasons = sorted({pinned_roots[int(r)] for r in classes if int(r) in pinned_roots})
      groups.append(Group(layers[0].name, tuple(l.name for l in layers), classes,
                          np.array([int(r) in pinned_roots for r in classes], dtype=bool),
                          tuple(reasons)))
    return groups

  # -- queries --

  def group(self, name):
    """The group that contains the layer called `name` (a clear error names the groups)."""
    for group in self.groups:
      if name in group.layers:
        return group
    raise ValueError(f"no prunable layer named {name!r} in model {self.graph.name!r}; the "
                     f"groups are {[g.name for g in self.groups]}")

  def rule(self, layer):
    """The `LayerPruner` of `layer`, or None where it is a barrier."""
    return self._rules.get(id(layer))

  def roots(self, ref):
    """The class (union-find root) of each channel of `ref`'s last axis."""
    return self._root[self.atoms[ref.id]]

  def kept_positions(self, ref, removed):
    """Positions of `ref`'s last axis that survive removing the classes in `removed`."""
    return np.flatnonzero(~np.isin(self.roots(ref), removed))

  def filters(self, group):
    """Per creating layer of `group`: (its output filters, the class index of each filter)."""
    index = _class_index(group)
    out = []
    for layer, atoms in self._created.values():
      if layer.name in group.layers:
        out.append((self._rules[id(layer)].filters(layer),
                    np.array([index[int(r)] for r in self._root[atoms]])))
    return out

  def channel_scales(self, group):
    """Per batch norm (or other scaled layer) fed by `group`: (scales, class index of each)."""
    index = _class_index(group)
    out, seen = [], set()
    for op in self.graph.ops:
      rule = self.rule(op.layer)
      if rule is None or id(op.layer) in seen:
        continue
      scales = rule.channel_scales(op.layer)
      if scales is None:
        continue
      seen.add(id(op.layer))
      roots = self.roots(op.inputs[0])
      mask = np.isin(roots, group.classes)
      if mask.any():
        out.append((scales[mask], np.array([index[int(r)] for r in roots[mask]])))
    return out

  def macs(self, removed=()):
    """Total MACs of the model once the classes in `removed` are gone (no rebuild needed).

    Each layer's MACs (`kslim.profile`'s count) scale with the kept fractions of its input and
    output channels, as its `LayerPruner.mac_fraction` says.
    """
    removed = np.asarray(list(removed), dtype=np.int64)
    total = 0.0
    for op in self.graph.ops:
      count = profiling.mac_rule(op.layer)
      if count is None:
        continue
      source, result = op.inputs[0], op.output_refs[0]
      macs = count(op.layer, source.shape, result.shape)
      rule = self.rule(op.layer)
      if rule is not None and len(removed):
        kept_in = len(self.kept_positions(source, removed)) / source.shape[-1]
        kept_out = len(self.kept_positions(result, removed)) / result.shape[-1]
        macs *= rule.mac_fraction(op.layer, kept_in, kept_out)
      total += macs
    return int(round(total))

  def zero_channels(self, removed):
    """Zeroes, in the model itself, the weights that make the channels of `removed`.

    The channels then carry zeros, and a model pruned of them computes the same function.
    """
    for op in self.graph.ops:
      rule = self.rule(op.layer)
      dead = np.isin(self.roots(op.output_refs[0]), np.asarray(list(removed), dtype=np.int64))
      if rule is not None and dead.any():
        rule.zero(op.layer, dead)

  def __str__(self):
    rows = [[g.name, ", ".join(g.layers[:4]) + (" ..." if len(g.layers) > 4 else ""),
             str(g.size), str(g.size - g.prunable)] for g in self.groups]
    table = format_table(["Group", "Layers", "Channels", "Pinned"], rows, left_columns=2)
    lines = [f"Dependency groups of {self.graph.name}", table]
    lines += [f"Barrier: {b}" for b in self.barriers]
    return "\n".join(lines)


def _class_index(group):
  """Class root -> its position in ``group.classes``."""
  return {int(r): i for i, r in enumerate(group.classes)}
