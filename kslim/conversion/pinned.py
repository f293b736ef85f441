"""int8 conversion through TFLite's calibrating quantizer, with the QAT ranges pinned.

TFLite reaches its int8 LSTM kernel only from post-training calibration: the kernel needs the
ranges of its internal state, which no fake-quant op records (the fake-quant path stops with
"Failed to duplicate values for the stateful op"). A QAT model holding an LSTM is therefore
converted in three steps:

1. Traced in `quant_ops.weights_only()`, the model is a float model whose kernels hold their
   quantized values; TFLite calibrates it on the representative data
   (``_experimental_calibrate_only``) and records a [min, max] for every tensor, the LSTM's
   internal ones included.
2. Every range the QAT model learned replaces the calibrated one of its tensor. Tensors are
   matched by value: the float TFLite model and the Keras model (traced the same way) run
   the same examples, and a TFLite tensor takes the range of the `ActivationQuantize` (or
   `QuantizedLSTM`) whose output it equals. A pinned range is the QAT grid written as the
   [min, max] TFLite turns back into that exact scale and zero point. Ops that keep their
   input's scale (slices, reshapes, reversals) pass a pinned range on to their output or back
   to their input, and an LSTM's hidden state (its state input and its last intermediate)
   takes its output's range.
3. TFLite's quantizer quantizes the edited model. The kernels are already on their 8-bit
   grids, which the quantizer finds again (abs max / 127), so the file holds the QAT weights.

Only 8-bit grids survive step 3 exactly, so models converted this way use 8 bits throughout
(`kslim.quantize` refuses fewer bits for a model with an LSTM).
"""

import contextlib
import warnings

import flatbuffers
import numpy as np
import tensorflow as tf
from ai_edge_litert import schema_py_generated as schema

from kslim._keras import call_sites
from kslim._keras import keras
from kslim.quantization import quant_ops
from kslim.quantization import quantizers
from kslim.quantization.quantize import activation_quantizers
from tflite_tools.harness import make_interpreter
from tflite_tools.harness import pad_batch

__all__ = ["needs_calibration", "convert"]

# Examples both models run to match tensors; a few tell apart tensors equal on one input.
_MATCH_EXAMPLES = 8
# A TFLite tensor matches a range holder's output when all but a few of its values lie within
# a quarter of the holder's grid step. Float kernels differ a little, and TFLite's float LSTM
# now and then more: on a trained row LSTM one output value of 512 came out 0.43 steps off,
# the rest within 0.08. Distinct tensors differ in most values.
_MATCH_STEPS = 0.25
_MATCH_OUTLIERS = 0.01
# Ops whose output keeps its input's scale (TFLite's same-scale rule).
_SAME_SCALE = frozenset(("STRIDED_SLICE", "SLICE", "RESHAPE", "SQUEEZE", "EXPAND_DIMS",
                         "TRANSPOSE", "GATHER", "REVERSE_V2"))
_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
# UNIDIRECTIONAL_SEQUENCE_LSTM: the hidden-state input, and the intermediate holding h_t.
_LSTM_STATE_INPUT = 18
_LSTM_HIDDEN_INTERMEDIATE = 4


def needs_calibration(model):
  """Whether `model` holds an LSTM, which only TFLite's calibrating quantizer makes int8."""
  return any(isinstance(layer, keras.layers.LSTM) for layer in model.submodules)


def convert(model, examples, input_type=tf.float32, output_type=tf.float32):
  """Converts the QAT `model` to int8 through TFLite's calibration, its ranges pinned.

  Args:
    model: a model from kslim.quantize (8-bit), over a fixed batch (TFLite fuses an LSTM
      only over one).
    examples: float32 input examples, ``(n,) + input shape``: calibration data for the ranges
      the QAT model does not hold (an LSTM's internal state).
    input_type: the file's input dtype (tf.int8 or tf.float32).
    output_type: the file's output dtype.

  Returns:
    The int8 flatbuffer bytes.

  Raises:
    ValueError: an activation range below 8 bits.
  """
  holders = activation_quantizers(model)
  low = [layer.name for layer in holders if layer.quantizer.num_bits < 8]
  if low:
    raise ValueError(f"kslim.convert: layers {low} quantize below 8 bits; a model with an LSTM "
                     "converts through TFLite's 8-bit calibration (use 8 bits)")
  per_channel = _per_channel(model)
  batch = model.inputs[0].shape[0]
  probes = [(layer, layer.get_output_at(index)) for layer in holders
            for index in call_sites(model, layer)]
  with quant_ops.weights_only():
    calibrated = _calibrate(model, examples, batch)
    probe = keras.Model(model.inputs, [tensor for _, tensor in probes])
    keras_values = _run_keras(probe, examples[:_MATCH_EXAMPLES], batch)
  tflite_values = _run_tflite(calibrated, examples[:_MATCH_EXAMPLES], batch)
  fb = schema.ModelT.InitFromPackedBuf(calibrated, 0)
  graph = fb.subgraphs[0]
  pins = _match(fb, graph, tflite_values, [layer for layer, _ in probes], keras_values)
  _propagate(fb, graph, pins)
  for index, (low_value, high_value) in pins.items():
    quantization = graph.tensors[index].quantization or schema.QuantizationParametersT()
    quantization.min = np.array([low_value], np.float32)
    quantization.max = np.array([high_value], np.float32)
    graph.tensors[index].quantization = quantization
  builder = flatbuffers.Builder(1024)
  builder.Finish(fb.Pack(builder), file_identifier=b"TFL3")
  # TFLite's own post-calibration step (what TFLiteConverter runs after calibrating, and what
  # tf.lite.experimental.QuantizationDebugger calls); it has no public name.
  from tensorflow.lite.python import convert as tflite_convert  # pylint: disable=import-outside-toplevel
  return tflite_convert.mlir_quantize(bytes(builder.Output()),
                                      disable_per_channel=not per_channel,
                                      input_data_type=input_type, output_data_type=output_type)


def _per_channel(model):
  """Whether the kernels are on per-channel grids (else per-tensor ones): TFLite's quantizer
  applies one or the other to every kernel, and re-rounds a kernel on the wrong kind."""
  kinds = {}
  for layer in model.layers:
    config = getattr(layer, "quantize_config", None)
    quantizer = getattr(config, "quantizer", None) or getattr(layer, "quantizer", None)
    if quantizer is not None and quantizer.role is quantizers.Role.WEIGHTS:
      kinds.setdefault(isinstance(quantizer, quantizers.ChannelWiseAbsMax), []).append(layer.name)
  if len(kinds) > 1:
    raise ValueError(f"kslim.convert: a model with an LSTM converts through TFLite's "
                     f"calibrating quantizer, which gives every kernel per-channel ranges or "
                     f"none; per-channel kernels {kinds[True]}, per-tensor kernels "
                     f"{kinds[False]}: use one weight quantizer")
  return False not in kinds


def _batches(examples, batch):
  """`examples` in batches of the model's fixed `batch`, the last one padded with zeros."""
  for start in range(0, len(examples), batch):
    yield pad_batch(examples[start:start + batch], batch)


@contextlib.contextmanager
def _quiet():
  """Silences the converter's warning that no input statistics were given: the calibrate-only
  conversion asks for them, though calibration records the input's range itself."""
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "Statistics for quantized inputs were expected")
    yield


def _calibrate(model, examples, batch):
  converter = tf.lite.TFLiteConverter.from_keras_model(model)
  converter.optimizations = [tf.lite.Optimize.DEFAULT]
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
  converter.representative_dataset = lambda: ([chunk] for chunk in _batches(examples, batch))
  converter._experimental_calibrate_only = True  # pylint: disable=protected-access
  with _quiet():
    return converter.convert()


def _run_keras(probe, examples, batch):
  values = [probe(chunk, training=False) for chunk in _batches(examples, batch)]
  values = [v if isinstance(v, (list, tuple)) else [v] for v in values]
  return [np.concatenate([np.asarray(v[i]) for v in values]) for i in range(len(values[0]))]


def _run_tflite(content, examples, batch):
  """Every float tensor's values over `examples`: tensor index -> array."""
  interpreter = make_interpreter(content, preserve_all_tensors=True)
  tensors = [d for d in interpreter.get_tensor_details()
              if d["dtype"] == np.float32 and len(d["shape"])]  # activations have a batch axis
  values = {}
  for chunk in _batches(examples, batch):
    interpreter.reset_all_variables()  # each call starts from zero state, as Keras's LSTM
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], chunk)
    interpreter.invoke()
    for detail in tensors:
      try:
        values.setdefault(detail["index"], []).append(interpreter.get_tensor(detail["index"]))
      except ValueError:  # a tensor without data
        continue
  return {index: np.concatenate(parts) for index, parts in values.items()}


def _is_activation(fb, tensor):
  buffer = fb.buffers[tensor.buffer] if tensor.buffer < len(fb.buffers) else None
  has_data = buffer is not None and buffer.data is not None and len(buffer.data) > 0
  return not has_data and not tensor.isVariable


def _int8_range(layer):
  """The [min, max] from which TFLite derives exactly the layer's fake-quant grid."""
  low, high = layer.range()
  narrow = layer.quantizer.narrow_range
  scale, nudged_low, nudged_high = (float(v) for v in quant_ops.nudged_grid(
      np.float32(low), np.float32(high), layer.quantizer.num_bits, narrow))
  # int8 -128 is the grid's level 0; a narrow grid starts one step above it.
  return nudged_low - (scale if narrow else 0.0), nudged_high


def _match(fb, graph, tflite_values, layers, keras_values):
  """Tensor index -> pinned range, for each TFLite tensor equal to a range holder's output."""
  pins, matched = {}, set()
  for index, value in tflite_values.items():
    if index >= len(graph.tensors) or not _is_activation(fb, graph.tensors[index]):
      continue
    best = None
    for layer, keras_value in zip(layers, keras_values):
      if keras_value.shape != value.shape:
        continue
      steps = np.abs(keras_value - value) / layer.scale()
      error = steps.mean()
      if np.mean(steps > _MATCH_STEPS) <= _MATCH_OUTLIERS and (best is None or error < best[0]):
        best = (error, layer)
    if best is not None:
      pins[index] = _int8_range(best[1])
      matched.add(best[1].name)
  missing = sorted({layer.name for layer in layers} - matched)
  if missing:
    warnings.warn(f"kslim.convert: no TFLite tensor matched the output of {missing}; their "
                  "tensors keep TFLite's calibrated ranges", stacklevel=3)
  return pins


def _propagate(fb, graph, pins):
  """Pinned ranges flow through same-scale ops (forwards, then backwards), and into an LSTM's
  hidden state. These ops move int8 values without requantizing, so TFLite's file is wrong
  when their input and output ranges differ (a REVERSE_V2 before a backwards LSTM was)."""
  for op in graph.operators:
    name = _OP_NAMES.get(fb.operatorCodes[op.opcodeIndex].builtinCode)
    if (name in _SAME_SCALE and op.inputs[0] in pins and op.outputs[0] not in pins
        and _is_activation(fb, graph.tensors[op.outputs[0]])):
      pins[op.outputs[0]] = pins[op.inputs[0]]
  for op in reversed(graph.operators):
    name = _OP_NAMES.get(fb.operatorCodes[op.opcodeIndex].builtinCode)
    output = op.outputs[0]
    if output not in pins:
      continue
    if name in _SAME_SCALE and op.inputs[0] not in pins and _is_activation(
        fb, graph.tensors[op.inputs[0]]):
      pins[op.inputs[0]] = pins[output]
    if name == "UNIDIRECTIONAL_SEQUENCE_LSTM":
      pins[op.inputs[_LSTM_STATE_INPUT]] = pins[output]
      if op.intermediates is not None and len(op.intermediates) > _LSTM_HIDDEN_INTERMEDIATE:
        pins[op.intermediates[_LSTM_HIDDEN_INTERMEDIATE]] = pins[output]
