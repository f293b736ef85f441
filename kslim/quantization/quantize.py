"""kslim.quantize: a float tf_keras model to its quantization-aware-training twin.

The returned model computes in float what the int8 TFLite file will compute: BatchNorm is
folded and SeparableConv2D split first (`folding`), kernels are fake-quantized by tfmot
`QuantizeWrapperV2`s, and every tensor TFLite stores passes through an `ActivationQuantize`
layer holding its range. Tensors TFLite requires to share a scale (Concatenate inputs,
pooling input/output, reshapes) share one `ActivationQuantize` layer, so conversion never
fails on the same-scale rule and the int8 file agrees with the Keras model.
"""

import contextlib
import warnings

import tensorflow as tf
import tensorflow_model_optimization as tfmot

from kslim import _graph
from kslim._keras import check_model
from kslim._keras import keras
from kslim.quantization import folding
from kslim.quantization import quantizers as quantizers_lib
from kslim.quantization import recurrent
from kslim.quantization import registry
from kslim.quantization import wrapper
from kslim.quantization.config import QuantConfig
from kslim.quantization.config import BatchNorm
from kslim.quantization.config import Unsupported
from kslim.quantization.config import class_name_of
from kslim.quantization.attention import Einsum
from kslim.quantization.folded_batch_norm import FoldedBatchNorm

__all__ = ["quantize", "scope", "custom_objects", "activation_quantizers", "input_quantizer",
           "is_quantized"]

_Kind = registry.Kind
# Ops whose output is not negative when all their inputs are not.
_MONOTONE = (_Kind.PASSTHROUGH, _Kind.SAME_SCALE)
_MONOTONE_COMPUTE = (keras.layers.Add, keras.layers.Average, keras.layers.GlobalAveragePooling1D,
                     keras.layers.GlobalAveragePooling2D)
# Ops TFLite fuses a following ReLU/ReLU6 into.
_FUSING = (keras.layers.Add, keras.layers.Subtract, keras.layers.Multiply)


def quantize(model, config=None):
  """Returns a quantization-aware copy of `model`, ready to `compile` and `fit`.

  Args:
    model: a tf_keras Sequential or functional model; models used as layers inside it are
      inlined. It is not modified.
    config: a `QuantConfig` (or a dict of its fields); default 8-bit per-channel weights and
      moving-average activation ranges.

  Returns:
    A functional tf_keras model. Convert it with ``kslim.convert(qat_model, mode="int8")``;
    load a saved copy inside ``kslim.quantization.scope()``.

  Raises:
    TypeError: `model` is not a tf_keras model.
    ValueError: `model` is subclassed, or has a layer kslim cannot quantize and
      ``config.unsupported == "error"``.

  Example:
    >>> qat = kslim.quantize(model, kslim.QuantConfig(activation_quantizer="pact"))
    >>> qat.compile("adam", loss); qat.fit(x, y, epochs=1)
  """
  check_model(model, "kslim.quantize")
  if isinstance(config, dict):
    config = QuantConfig(**config)
  config = config or QuantConfig()
  if not isinstance(config, QuantConfig):
    raise TypeError(f"kslim.quantize: config must be a QuantConfig or a dict, got "
                    f"{type(config).__name__}")
  graph = _graph.Graph.from_model(model)
  graph.clone_layers()
  train_batch_norm = config.batch_norm == BatchNorm.TRAIN.value
  folding.canonicalize(graph, lambda layer: train_batch_norm and not config.is_skipped(layer))
  rules = _rules(graph, config)
  lstms = [op.layer.name for op in graph.ops if isinstance(op.layer, keras.layers.LSTM)]
  _check_recurrent_bits(graph, config, lstms)
  config = config.with_edges(*_edges(graph, rules))
  _insert_activation_quantizers(graph, rules, config)
  # A model with an LSTM converts without fake-quant ops (`kslim.conversion.pinned`), where
  # nothing stops Dense and Conv1D kernels from keeping per-channel ranges.
  any_channel = bool(lstms)
  for op in graph.ops:
    rule = rules.get(op)
    if rule is not None and rule.kind is _Kind.RECURRENT and not config.is_skipped(op.layer):
      op.layer = recurrent.QuantizedLSTM(
          op.layer, config.activation_quantizer_for(op.layer.name, class_name_of(op.layer),
                                                    signed=True),
          name=op.layer.name)
      continue
    if rule is None or rule.kind is not _Kind.WEIGHTED or config.is_skipped(op.layer):
      continue
    quantizer = config.weight_quantizer_for(op.layer, rule.depthwise,
                                            rule.per_channel or any_channel)
    if isinstance(op.layer, FoldedBatchNorm):
      op.layer.quantizer = quantizer  # quantizes the folded kernel itself; not built yet
    else:
      op.layer = wrapper.QuantizeWrapper(
          op.layer, wrapper.WeightQuantizeConfig(rule.weights, quantizer))
  return graph.build()


def custom_objects():
  """Every class a saved kslim QAT model refers to, for `keras.models.load_model`."""
  objects = {cls.__name__: cls for cls in (
      quantizers_lib.AbsMax, quantizers_lib.ChannelWiseAbsMax, quantizers_lib.RunningAbsMax,
      quantizers_lib.MovingAverageAbsMax, quantizers_lib.MovingAverageMinMax,
      quantizers_lib.PACT, quantizers_lib.FixedRange,
      wrapper.WeightQuantizeConfig, wrapper.ActivationQuantize, wrapper.QuantizeWrapper,
      FoldedBatchNorm, Einsum, recurrent.QuantizedLSTM)}
  return objects


@contextlib.contextmanager
def scope():
  """Scope in which `keras.models.load_model` loads kslim QAT models (.keras, SavedModel, h5).

  Example:
    >>> with kslim.quantization.scope():
    ...   qat = tf_keras.models.load_model("qat.keras")
  """
  with tfmot.quantization.keras.quantize_scope(), keras.utils.custom_object_scope(
      custom_objects()):
    yield


def activation_quantizers(model):
  """The model's `ActivationQuantize` layers, in graph order."""
  return [layer for layer in model.layers if isinstance(layer, wrapper.ActivationQuantize)]


def input_quantizer(model, tensor):
  """The `ActivationQuantize` layer applied to `tensor` (an input of `model`), or None when
  that input is left in float."""
  return next((layer for layer in activation_quantizers(model)
               for node in range(len(layer.inbound_nodes))
               if layer.get_input_at(node) is tensor), None)


def is_quantized(model):
  """Whether `model` was made by kslim.quantize (it holds kslim activation quantizers)."""
  return bool(activation_quantizers(model))


def _rules(graph, config):
  """The registry rule of every op; handles layers without one as `config.unsupported` says."""
  rules, unsupported = {}, []
  for op in graph.ops:
    rule = registry.rule_for(op.layer)
    if rule is not None and rule.kind is _Kind.WEIGHTED and registry.activation_name(
        op.layer) not in ("linear",) + registry.FUSABLE_ACTIVATIONS:
      rule = None  # a custom activation function TFLite would run as separate ops
    if rule is None:
      unsupported.append(op.layer)
    rules[op] = rule
  if unsupported:
    names = ", ".join(f"{layer.name} ({type(layer).__name__})"
                      for layer in dict.fromkeys(unsupported))
    if config.unsupported == Unsupported.ERROR.value:
      raise ValueError(f"kslim.quantize: no quantization rule for layer(s) {names}. Use "
                       "QuantConfig(unsupported='float') to keep them in float.")
    warnings.warn(f"kslim.quantize: keeping layer(s) in float (no quantization rule): {names}. "
                  "Their outputs are quantized so the rest of the model stays int8.",
                  stacklevel=3)
  return rules


def _check_recurrent_bits(graph, config, lstms):
  """An LSTM (`lstms`: their names) reaches TFLite's int8 kernel only through its calibrating
  quantizer (`kslim.conversion.pinned`), which stores 8-bit grids: refuse fewer bits before
  training."""
  if not lstms:
    return
  low = sorted({op.layer.name for op in graph.ops
                for settings in (config.for_layer(op.layer.name, class_name_of(op.layer)),)
                if min(settings.weight_bits, settings.activation_bits) < 8})
  if low or (config.edge_bits is not None and config.edge_bits < 8):
    raise ValueError(f"kslim.quantize: model with LSTM layer(s) {lstms} needs 8-bit weights "
                     f"and activations (TFLite's int8 LSTM is reached through its 8-bit "
                     f"calibrating quantizer); fewer bits are set for {low or 'the edges'}")


def _links(graph):
  """Tensor id -> the ops consuming it, and tensor id -> the op producing it."""
  consumers, producers = {}, {}
  for op in graph.ops:
    producers.update((ref.id, op) for ref in op.output_refs)
    for ref in op.inputs:
      consumers.setdefault(ref.id, []).append(op)
  return consumers, producers


def _edges(graph, rules):
  """Names of the first and last weighted layers and of the input and output tensors' ranges.

  A first layer is a weighted op that a model input reaches through unweighted ops only; a
  last layer reaches a model output that way. Output ranges are named by the op producing them.
  """
  consumers, producers = _links(graph)

  def reach(refs, ops_of, refs_of):
    """Weighted ops reached from `refs` through unweighted ones, walking one way."""
    found, seen, frontier = [], set(), list(refs)
    while frontier:
      for op in ops_of(frontier.pop()):
        if op in seen:
          continue
        seen.add(op)
        if rules[op] is not None and rules[op].kind is _Kind.WEIGHTED:
          found.append(op.layer.name)
        else:
          frontier += refs_of(op)
    return found

  outputs = graph.output_refs()
  tensors = [spec.name for spec in graph.inputs]
  tensors += [producers[ref.id].layer.name for ref in outputs if ref.id in producers]
  first = reach([spec.ref for spec in graph.inputs], lambda ref: consumers.get(ref.id, []),
                lambda op: op.output_refs)
  last = reach(outputs, lambda ref: [producers[ref.id]] if ref.id in producers else [],
               lambda op: op.inputs)
  return first, last, tensors


class _Groups:
  """Union-find over tensors that must share one range."""

  def __init__(self):
    self._parent = {}

  def find(self, ref):
    self._parent.setdefault(ref.id, ref.id)
    root = ref.id
    while self._parent[root] != root:
      root = self._parent[root]
    self._parent[ref.id] = root
    return root

  def union(self, refs):
    roots = [self.find(r) for r in refs]
    for root in roots[1:]:
      self._parent[root] = roots[0]


def _is_float(ref):
  return tf.as_dtype(ref.dtype).is_floating


def _insert_activation_quantizers(graph, rules, config):
  """Adds an `ActivationQuantize` op after every tensor the int8 model stores."""
  groups = _Groups()
  consumers, producers = _links(graph)
  for op in graph.ops:
    rule = rules[op]
    if rule is not None and rule.kind in _MONOTONE:
      groups.union([r for r in op.inputs + op.output_refs if _is_float(r)])
  outputs = {r.id for r in graph.output_refs()}
  non_negative = _non_negative(graph, rules)
  edges = outputs | {spec.ref.id for spec in graph.inputs}

  def needs_range(op, ref):
    rule = rules[op]
    if not _is_float(ref) or config.is_skipped(op.layer):
      return False
    if rule is not None and rule.kind is _Kind.PASSTHROUGH:
      return False  # already on its inputs' grid
    if rule is not None and rule.kind is _Kind.RECURRENT:
      return False  # the QuantizedLSTM holds its output range
    users = consumers.get(ref.id, [])
    fused = (len(users) == 1 and ref.id not in outputs and rules[users[0]] is not None
             and rules[users[0]].kind is _Kind.ACTIVATION
             and registry.activation_name(users[0].layer) in registry.FUSABLE_ACTIVATIONS
             and (rule is not None and rule.kind is _Kind.WEIGHTED
                  or isinstance(op.layer, _FUSING)))
    return not fused

  # Tensors that get a fake-quant op, with the layer (name, class) that names their range.
  applied = [(spec.ref, spec.name, "InputLayer") for spec in graph.inputs if _is_float(spec.ref)]
  for op in graph.ops:
    applied += [(ref, op.layer.name, class_name_of(op.layer)) for ref in op.output_refs
                if needs_range(op, ref)]
  members = {}
  for ref, _, _ in applied:
    members.setdefault(groups.find(ref), []).append(ref)

  layers, used_names = {}, {layer.name for layer in (op.layer for op in graph.ops)}

  def quantizer_layer(ref, name, class_name):
    root = groups.find(ref)
    if root not in layers:
      member_rules = [rules.get(producers.get(r.id)) for r in members[root]]
      fixed = [rule.fixed_range for rule in member_rules
               if rule is not None and rule.kind is _Kind.FIXED]
      settings = config.for_layer(name, class_name)
      if fixed:
        quantizer = quantizers_lib.FixedRange(settings.activation_bits, *fixed[0])
      else:
        signed = not all(r.id in non_negative for r in members[root])
        edge = any(r.id in edges for r in members[root])
        quantizer = config.activation_quantizer_for(name, class_name, signed, edge)
      layer_name = _unique(f"{name}_quant", used_names)
      layers[root] = wrapper.ActivationQuantize(quantizer, name=layer_name)
    return layers[root]

  renamed = {}
  def substitute(structure):
    return tf.nest.map_structure(
        lambda x: renamed.get(x.id, x) if isinstance(x, _graph.Ref) else x, structure)

  def quantize_op(ref, name, class_name):
    quantized = _graph.Ref(ref.shape, ref.dtype)
    renamed[ref.id] = quantized
    return _graph.Op(quantizer_layer(ref, name, class_name), (ref,), {}, quantized)

  applied_ids = {ref.id: (name, class_name) for ref, name, class_name in applied}
  ops = [quantize_op(spec.ref, *applied_ids[spec.ref.id]) for spec in graph.inputs
         if spec.ref.id in applied_ids]
  for op in graph.ops:
    op.args, op.kwargs = substitute((op.args, op.kwargs))
    ops.append(op)
    ops += [quantize_op(ref, *applied_ids[ref.id]) for ref in op.output_refs
            if ref.id in applied_ids]
  graph.ops = ops
  graph.outputs = substitute(graph.outputs)


def _non_negative(graph, rules):
  """Ids of tensors that can never be negative (after ReLU, softmax, ...)."""
  result = set()
  for op in graph.ops:
    rule, inputs = rules[op], [r for r in op.inputs if _is_float(r)]
    all_inputs = bool(inputs) and all(r.id in result for r in inputs)
    activation = registry.activation_name(op.layer)
    if rule is None:
      positive = False
    elif rule.kind in (_Kind.ACTIVATION, _Kind.FIXED, _Kind.WEIGHTED):
      positive = activation in registry.NON_NEGATIVE_ACTIVATIONS
    elif rule.kind in _MONOTONE or isinstance(op.layer, _MONOTONE_COMPUTE):
      positive = all_inputs
    else:
      positive = False
    if positive:
      result.update(r.id for r in op.output_refs)
  return result


def _unique(name, used):
  candidate, index = name, 1
  while candidate in used:
    candidate, index = f"{name}_{index}", index + 1
  used.add(candidate)
  return candidate
