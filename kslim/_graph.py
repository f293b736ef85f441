"""A flat, editable view of a tf_keras model's layer graph, and the rebuild back to a model.

Model transforms (quantization, pruning) need to see every layer call in topological order,
including the calls inside nested models, replace some layers and insert others, and build a
new functional model without touching the original. `Graph.from_model` inlines nested
functional and Sequential models; `Graph.build` calls the (possibly replaced) layers on fresh
`keras.Input`s.

Each `Op` keeps its call's arguments with the tensors replaced by `Ref`s, so calls with extra
arguments (``TFOpLambda`` slicing, ``training=False``, keyword tensors) rebuild faithfully.
"""

import dataclasses
import itertools

import tensorflow as tf

from kslim._keras import check_model
from kslim._keras import keras

__all__ = ["Ref", "Op", "Graph"]

_ids = itertools.count()


@dataclasses.dataclass(frozen=True, eq=False)
class Ref:
  """A tensor of the graph: its shape (batch axis first) and dtype."""
  shape: tuple
  dtype: str
  id: int = dataclasses.field(default_factory=lambda: next(_ids))

  def __hash__(self):
    return self.id

  def __eq__(self, other):
    return isinstance(other, Ref) and other.id == self.id


@dataclasses.dataclass(eq=False)
class Op:
  """One layer call: ``outputs = layer(*args, **kwargs)`` with `Ref`s standing for tensors."""
  layer: keras.layers.Layer
  args: tuple
  kwargs: dict
  outputs: object  # a Ref or a nested structure of Refs, as the layer returns them

  @property
  def inputs(self):
    """The input `Ref`s, flattened in argument order."""
    return [x for x in tf.nest.flatten((self.args, self.kwargs)) if isinstance(x, Ref)]

  @property
  def output_refs(self):
    return tf.nest.flatten(self.outputs)


@dataclasses.dataclass(eq=False)
class InputSpec:
  """A model input: its name, shape (batch axis first) and dtype."""
  name: str
  ref: Ref


class Graph:
  """Ops in topological order between the model's inputs and outputs."""

  def __init__(self, inputs, outputs, ops, name):
    self.inputs = list(inputs)    # InputSpecs
    self.outputs = outputs        # a nested structure of Refs
    self.ops = list(ops)
    self.name = name
    # layer -> the weights `build` gives it once the new model exists
    self.initial_weights = {}

  @classmethod
  def from_model(cls, model):
    """Flattens `model` (Sequential or functional; nested models inlined).

    Raises:
      TypeError: `model` is not a tf_keras model.
      ValueError: `model` (or a model inside it) is subclassed, so it has no layer graph.
    """
    check_model(model, "kslim")
    _require_graph(model)
    refs = {}  # id of a KerasTensor -> Ref
    inputs = []
    for tensor in model.inputs:
      ref = _ref_for(tensor)
      refs[id(tensor)] = ref
      inputs.append(InputSpec(tensor.node.layer.name, ref))
    ops = []
    _inline(model, refs, ops)
    outputs = tf.nest.map_structure(lambda t: refs[id(t)], model._nested_outputs)  # pylint: disable=protected-access
    return cls(inputs, outputs, ops, model.name)

  def clone_layers(self):
    """Replaces every layer by a fresh copy (one per shared layer) holding the same weights.

    Transforms call this first, so that building the graph never touches the original model.
    """
    clones = {}
    for op in self.ops:
      if id(op.layer) not in clones:
        clone = type(op.layer).from_config(op.layer.get_config())
        clones[id(op.layer)] = clone
        self.initial_weights[clone] = op.layer.get_weights()
      op.layer = clones[id(op.layer)]

  def replace(self, old_ops, new_ops):
    """Puts `new_ops` where the first of `old_ops` was, and removes `old_ops`."""
    position = min(self.ops.index(op) for op in old_ops)
    kept = [op for op in self.ops if op not in old_ops]
    kept[position:position] = new_ops
    self.ops = kept

  def calls_of(self, layer):
    """How many ops call `layer` (more than one: a shared layer)."""
    return sum(op.layer is layer for op in self.ops)

  def require_single_call(self, layer):
    """Raises a ValueError naming `layer` if it is shared (a rewrite cannot split it)."""
    if self.calls_of(layer) != 1:
      raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) is called "
                       f"{self.calls_of(layer)} times; kslim cannot split a shared layer")

  def producer(self, ref):
    """The op that outputs `ref`, or None for a model input."""
    return self._producers().get(ref.id)

  def consumers(self, ref):
    """The ops that take `ref` as an input, in graph order."""
    return [op for op in self.ops if any(x.id == ref.id for x in op.inputs)]

  def _producers(self):
    return {ref.id: op for op in self.ops for ref in op.output_refs}

  def output_refs(self):
    return tf.nest.flatten(self.outputs)

  def build(self, name=None):
    """Builds a functional model by calling every op's layer on new inputs."""
    tensors = {}
    model_inputs = []
    for spec in self.inputs:
      tensor = keras.Input(batch_size=spec.ref.shape[0], shape=spec.ref.shape[1:],
                           dtype=spec.ref.dtype, name=spec.name)
      tensors[spec.ref.id] = tensor
      model_inputs.append(tensor)
    for op in self.ops:
      self._load_weights(op)
      args, kwargs = tf.nest.map_structure(
          lambda x: tensors[x.id] if isinstance(x, Ref) else x, (op.args, op.kwargs))
      outputs = op.layer(*args, **kwargs)
      for ref, tensor in zip(op.output_refs, tf.nest.flatten(outputs)):
        tensors[ref.id] = tensor
    outputs = tf.nest.map_structure(lambda r: tensors[r.id], self.outputs)
    return keras.Model(model_inputs, outputs, name=name or self.name)

  def _load_weights(self, op):
    """Builds the op's layer (or the layer a wrapper holds) and gives it its initial weights.

    Done before the call, because a wrapper may replace the inner layer's kernels by
    quantized tensors during it, after which the inner layer no longer lists them.
    """
    inner = getattr(op.layer, "layer", None)
    for layer, scope in ((op.layer, op.layer.name),
                         (inner, f"{op.layer.name}/{getattr(inner, 'name', '')}")):
      weights = self.initial_weights.get(layer) if layer is not None else None
      if weights is None or layer.built:
        continue
      first = op.args[0] if op.args else op.inputs[0]
      with tf.name_scope(scope):  # the variable names a call would give (h5 needs them unique)
        layer.build(tf.nest.map_structure(lambda r: tf.TensorShape(r.shape), first))
      # A layer that adds state of its own (a quantizer's stored ranges) loads the source
      # layers' weights through `load_source_weights`.
      getattr(layer, "load_source_weights", layer.set_weights)(weights)


def _require_graph(model):
  if not getattr(model, "_is_graph_network", False):
    raise ValueError(
        f"model {model.name!r} ({type(model).__name__}) has no layer graph: kslim transforms "
        "Sequential and functional models. Rebuild a subclassed model functionally, or give a "
        "Sequential model its input shape (keras.Input as its first layer).")


def _ref_for(tensor):
  return Ref(tuple(tensor.shape), tensor.dtype.name)


def _inline(model, refs, ops):
  """Appends `model`'s ops to `ops`, resolving tensors through `refs` and recursing into models."""
  depths = sorted(model._nodes_by_depth, reverse=True)  # pylint: disable=protected-access
  for depth in depths:
    for node in model._nodes_by_depth[depth]:  # pylint: disable=protected-access
      if node.is_input:
        continue
      args, kwargs = tf.nest.map_structure(
          lambda x: refs[id(x)] if _is_keras_tensor(x) else x, (node.call_args, node.call_kwargs))
      layer = node.layer
      if isinstance(layer, keras.Model):
        _require_graph(layer)
        outer = [x for x in tf.nest.flatten(args) if isinstance(x, Ref)]
        for inner, ref in zip(layer.inputs, outer):
          refs[id(inner)] = ref
        _inline(layer, refs, ops)
        for tensor, inner in zip(tf.nest.flatten(node.outputs), layer.outputs):
          refs[id(tensor)] = refs[id(inner)]
        continue
      outputs = tf.nest.map_structure(_ref_for, node.outputs)
      for tensor, ref in zip(tf.nest.flatten(node.outputs), tf.nest.flatten(outputs)):
        refs[id(tensor)] = ref
      ops.append(Op(layer, args, kwargs, outputs))


def _is_keras_tensor(value):
  return hasattr(value, "_keras_history")
