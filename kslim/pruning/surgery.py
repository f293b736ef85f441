"""Rebuilds a smaller functional model from a `DependencyGraph` and the classes to remove."""

import numpy as np
import tensorflow as tf

from kslim import _graph

__all__ = ["rebuild"]


def rebuild(graph, removed, name=None):
  """A new functional model without the channels of the classes in `removed`.

  Every layer is a fresh copy built from its (shrunk) config, holding its surviving weights,
  so the original model is never touched.

  Args:
    graph: a `DependencyGraph`.
    removed: union-find roots (class ids) to remove, as in `Group.classes`.
    name: the new model's name (default: the original's).

  Returns:
    A tf_keras functional model.
  """
  removed = np.asarray(sorted(int(r) for r in removed), dtype=np.int64)
  kept = {}   # ref id -> kept positions
  refs = {}   # ref id -> the Ref of the new graph (same shape, fewer channels)

  def new_ref(ref):
    if ref.id not in refs:
      kept[ref.id] = graph.kept_positions(ref, removed)
      refs[ref.id] = _graph.Ref(tuple(ref.shape[:-1]) + (len(kept[ref.id]),), ref.dtype)
    return refs[ref.id]

  def remap(structure):
    return tf.nest.map_structure(lambda x: new_ref(x) if isinstance(x, _graph.Ref) else x,
                                 structure)

  inputs = [_graph.InputSpec(spec.name, new_ref(spec.ref)) for spec in graph.graph.inputs]
  layers, weights, ops = {}, {}, []
  for op in graph.graph.ops:
    args, kwargs, outputs = remap((op.args, op.kwargs, op.outputs))
    layer = op.layer
    if id(layer) not in layers:
      rule = graph.rule(layer)
      config, layer_weights = layer.get_config(), layer.get_weights()
      if rule is not None:
        config, layer_weights = rule.prune(
            layer, layer_weights, [kept[r.id] for r in op.inputs], kept[op.output_refs[0].id])
      layers[id(layer)] = type(layer).from_config(config)
      weights[layers[id(layer)]] = layer_weights
    ops.append(_graph.Op(layers[id(layer)], args, kwargs, outputs))
  new_graph = _graph.Graph(inputs, remap(graph.graph.outputs), ops, name or graph.graph.name)
  new_graph.initial_weights = weights
  return new_graph.build()
