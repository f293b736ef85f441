"""tflite-latency-table: per-op latency measured on the target, and model latency estimated by
summing it (the cost model of hardware-aware architecture search).

Every op of a TFLite model is identified by its *signature*: the op, the shapes and dtypes of
its inputs and outputs, and its options (stride, padding, fused activation). A table maps
signatures to milliseconds, measured by timing a model holding just that op on the target:
either a Keras layer from a grid of Conv2D / DepthwiseConv2D / Dense / pooling configurations,
or the op cut out of a real .tflite file (`single_op_models`), so every op type is covered.
Each measurement has the target's fixed per-invoke overhead (timed on a one-op model of a
single element) subtracted; an estimate adds it back once.

Each op is timed *in context*: inside a model, an op's input has just been written by the
op before it, split across the thread pool, so at 2+ threads part of it sits in another core's
cache; timed alone, every thread finds its share of the input in its own cache on every run
(MobileNetV2 float32 at 2 threads runs 20-25% slower than the sum of its ops timed alone). So
each float32/int8 input of an op is written by an ``ADD(x, x)`` run on the same threads just
before the op, and the time of those writers alone is subtracted. The writers start with a
*waker*, a float32 ADD big enough for XNNPACK to split over its thread pool: inside a model the
pool's workers keep spinning between ops, and a spinning worker slows whatever runs on the
main thread meanwhile, such as an op XNNPACK does not take (int8 HARD_SWISH: 52 us alone, 65-69
us beside a spinning worker at 2 threads on this VM). The op's time alone is kept too
(``alone_ms``).

An op timed alone keeps its weights in cache between runs; inside a model whose weights
outgrow the cache, they stream from memory on every run (ResNet50 float32 at 128x128 runs
20-35% slower than the sum of its ops timed alone). So an op with sizeable weights is also timed
*cold*: K copies of it, sharing one input and one weight buffer but each packing its own
weights, together touch 256 MiB per run. A cache probe (copies of a 1 MiB 1x1 convolution at
footprints of 1-256 MiB) measures how much of that cold penalty a given weight footprint pays
on the target, and an estimate adds that share of each op's cold-minus-warm time, read at the
model's own weight footprint.

  python -m tflite_tools.latency_table --output=table.json --grid --models=a.tflite,b.tflite
  python -m tflite_tools.latency_table --table=table.json --estimate=c.tflite

Example:
  >>> table = LatencyTable.measure(grid_models(grid()) + single_op_models("m.tflite"))
  >>> table.estimate("m.tflite").total_ms
"""

import base64
import copy
import dataclasses
import itertools
import json
import math
import pathlib

import flatbuffers
import numpy as np
import tqdm
from absl import app, flags, logging
from ai_edge_litert import schema_py_generated as schema

from tflite_tools import analyze, targets
from tflite_tools.runner import load_model_bytes

__all__ = ["LayerConfig", "OpModel", "LatencyTable", "Estimate", "grid", "grid_models",
           "single_op_models", "op_signatures", "weight_bytes"]

_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
# Ops whose cost grows with MACs (output elements x kernel elements); the rest with elements.
_MAC_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D",
            "BATCH_MATMUL")
_INTEGER = ("int8", "uint8", "int16")
_MIB = 2**20
#: An op's cold copies together touch this many weight bytes per run: more than any cache.
_COLD_BYTES = 256 * _MIB
_COLD_MAX_COPIES = 256
#: Ops with fewer weight bytes are not timed cold (streaming them costs a few microseconds).
_COLD_MIN_BYTES = 64 * 2**10
#: Weight footprints (MiB) at which the cache probe runs.
PROBE_MIB = (1, 4, 16, 64, 128, 256)
#: Models timed per harness process (the progress bar advances a chunk at a time).
_CHUNK = 32
#: Floats the in-context waker adds: enough for XNNPACK to use every thread (4,096 is not).
_WAKER_ELEMENTS = 65536


@dataclasses.dataclass(frozen=True)
class LayerConfig:
  """One grid point: a Keras layer on a (batch 1) input, converted alone.

  Attributes:
    op: ``conv2d``, ``depthwise_conv2d``, ``dense``, ``max_pool`` or ``avg_pool``.
    input_shape: (H, W, C), or (C,) for dense.
    filters: output channels (conv2d) or units (dense).
    kernel: kernel / pool size.
    stride: stride.
    dtype: ``float32`` or ``int8`` (full-integer, int8 in and out, as inside an int8 model).
  """
  op: str
  input_shape: tuple
  filters: int = 0
  kernel: int = 1
  stride: int = 1
  dtype: str = "float32"


@dataclasses.dataclass(frozen=True)
class OpModel:
  """A model holding one op to time, with the op's signature and work (for interpolation)."""
  signature: str
  op: str
  dtype: str
  work: float
  content: bytes


@dataclasses.dataclass(frozen=True)
class Estimate:
  """A model's estimated latency: the sum of its ops' table entries plus the invoke overhead.

  `interpolated` ops had no exact entry and were scaled from the nearest entry of the same op,
  dtype and options by work (MACs or elements); `missing` ops had none at all (counted 0).
  `streamed_ms` is the part of `total_ms` added because the model's `weights_mib` of weights do
  not all stay in cache between runs (see `LatencyTable.streamed_share`).
  """
  total_ms: float
  ops: int
  exact: int
  interpolated: int
  missing: tuple
  weights_mib: float = 0.0
  streamed_ms: float = 0.0


def _tensor_signature(tensor):
  return f"{analyze.TENSOR_TYPE_NAMES[tensor.type]}{list(int(d) for d in tensor.shape)}"


def _options_signature(op):
  options = op.builtinOptions
  if options is None:
    return ""
  return ",".join(f"{k}={v}" for k, v in sorted(vars(options).items())
                  if isinstance(v, (int, float)))


def _work(op_name, graph, op):
  """MACs for conv-like ops, else the largest of the input/output element counts."""
  tensors = [graph.tensors[i] for i in list(op.inputs) + list(op.outputs) if i >= 0]
  out_elements = math.prod(int(d) for d in graph.tensors[op.outputs[0]].shape)
  if op_name in _MAC_OPS and len(op.inputs) > 1:
    kernel = [int(d) for d in graph.tensors[op.inputs[1]].shape]
    if op_name == "DEPTHWISE_CONV_2D":
      per_output = math.prod(kernel[1:3])
    elif op_name == "FULLY_CONNECTED":
      per_output = kernel[-1]
    else:
      per_output = math.prod(kernel[1:])
    return float(out_elements * per_output)
  return float(max(math.prod(int(d) for d in t.shape) for t in tensors))


def _compute_dtype(graph, op, op_name):
  inputs = [graph.tensors[i] for i in op.inputs if i >= 0]
  source = inputs[0] if op_name in analyze.CONVERSIONS and inputs else (
      graph.tensors[op.outputs[0]])
  return analyze.TENSOR_TYPE_NAMES[source.type]


def op_signatures(model):
  """``[(signature, op name, dtype, work)]`` for every op of a .tflite model (path or bytes)."""
  fb = schema.ModelT.InitFromPackedBuf(load_model_bytes(model), 0)
  rows = []
  for graph in fb.subgraphs[:1]:  # the main graph; control-flow bodies are not costed
    for op in graph.operators or []:
      code = fb.operatorCodes[op.opcodeIndex]
      name = _OP_NAMES.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")
      if name == "CUSTOM":
        name = f"CUSTOM:{code.customCode.decode() if code.customCode else '?'}"
      inputs = ";".join(_tensor_signature(graph.tensors[i]) if i >= 0 else "-"
                        for i in op.inputs)
      outputs = ";".join(_tensor_signature(graph.tensors[i]) for i in op.outputs)
      rows.append((f"{name}({inputs})->({outputs}){{{_options_signature(op)}}}", name,
                   _compute_dtype(graph, op, name), _work(name, graph, op)))
  return rows


def weight_bytes(model):
  """Bytes of constant data (weights, biases) the ops of a .tflite model's main graph read,
  each buffer counted once."""
  fb = schema.Model.GetRootAs(load_model_bytes(model), 0)
  graph, used = fb.Subgraphs(0), set()
  for o in range(graph.OperatorsLength()):
    for i in graph.Operators(o).InputsAsNumpy().tolist():
      if i >= 0:
        used.add(graph.Tensors(i).Buffer())
  return sum(fb.Buffers(b).DataLength() for b in used)


def _pack(model_t):
  builder = flatbuffers.Builder(1024)
  builder.Finish(model_t.Pack(builder), file_identifier=b"TFL3")
  return bytes(builder.Output())


def single_op_models(model):
  """One model per distinct op of `model` (path or bytes), cut out of its flatbuffer.

  Each keeps the op, its constant inputs (weights, with their values; no other buffer) and
  its quantization; its non-constant inputs become the model's inputs. Ops reading a subgraph
  (WHILE, IF) or a variable are skipped.
  """
  content = load_model_bytes(model)
  fb = schema.ModelT.InitFromPackedBuf(content, 0)
  graph = fb.subgraphs[0]
  result, seen = [], set()
  for op, (signature, name, dtype, work) in zip(graph.operators or [], op_signatures(content)):
    if signature in seen or name in ("WHILE", "IF", "CALL_ONCE", "VAR_HANDLE", "READ_VARIABLE",
                                     "ASSIGN_VARIABLE"):
      continue
    seen.add(signature)
    used = list(dict.fromkeys(i for i in list(op.inputs) + list(op.outputs) if i >= 0))
    remap = {old: new for new, old in enumerate(used)}
    buffers = [schema.BufferT()]  # buffer 0 is the empty sentinel
    data = {i: fb.buffers[graph.tensors[i].buffer].data for i in used}
    if name == "RESHAPE" and len(op.inputs) > 1 and data[op.inputs[1]] is None:
      # A shape computed at run time (e.g. by PACK): it can only be the output's shape.
      data[op.inputs[1]] = np.frombuffer(np.asarray(
          graph.tensors[op.outputs[0]].shape, np.int32).tobytes(), np.uint8)
    tensors = []
    for old in used:
      tensor = copy.copy(graph.tensors[old])
      buffer = schema.BufferT()  # an activation gets its own empty buffer
      buffer.data = data[old]
      buffers.append(buffer)
      tensor.buffer = len(buffers) - 1
      tensors.append(tensor)
    sub = schema.SubGraphT()
    sub.tensors = tensors
    sub.inputs = [remap[i] for i in dict.fromkeys(op.inputs) if i >= 0 and data[i] is None]
    sub.outputs = [remap[i] for i in op.outputs]
    single = copy.copy(op)
    single.inputs = [remap[i] if i >= 0 else -1 for i in op.inputs]
    single.outputs = list(sub.outputs)
    sub.operators = [single]
    one = schema.ModelT()
    one.version, one.operatorCodes, one.subgraphs, one.buffers = fb.version, fb.operatorCodes, \
        [sub], buffers
    result.append(OpModel(signature, name, dtype, work, _pack(one)))
  return result


def _operator_code(builtin):
  code = schema.OperatorCodeT()
  code.builtinCode = code.deprecatedBuiltinCode = builtin
  return code


def _append_tensor(fb, tensor):
  """Appends `tensor` to `fb`'s graph as an activation with its own empty buffer; its index."""
  fb.buffers.append(schema.BufferT())
  tensor.buffer = len(fb.buffers) - 1
  fb.subgraphs[0].tensors.append(tensor)
  return len(fb.subgraphs[0].tensors) - 1


def _new_tensor(fb, shape, dtype, name):
  """Appends a new activation tensor to `fb`'s graph; its index."""
  tensor = schema.TensorT()
  tensor.shape, tensor.type, tensor.name = list(shape), dtype, name
  return _append_tensor(fb, tensor)


def _add_op(fb, source, output):
  """An ``ADD(source, source) -> output`` operator of `fb` (whose last operator code is ADD)."""
  op = schema.OperatorT()
  op.opcodeIndex = len(fb.operatorCodes) - 1
  op.inputs, op.outputs = [source, source], [output]
  op.builtinOptionsType = schema.BuiltinOptions.AddOptions
  op.builtinOptions = schema.AddOptionsT()
  return op


def _in_context(content):
  """``(writers, writers + op)`` for a single-op model.

  The writers are a *waker*, an ``ADD`` of `_WAKER_ELEMENTS` floats that XNNPACK splits over
  its thread pool, so that the pool's workers spin as they do inside a model (a spinning
  worker slows an op the delegate does not run on the main thread, e.g. int8 HARD_SWISH by
  about 30% at 2 threads on this VM), then an ``ADD(x, x)`` producing each float32/int8 input
  of the op from a new model input, on the op's threads. `writers` computes only those. The
  waker's input and output come last among the models' inputs and outputs.
  """
  fb = schema.ModelT.InitFromPackedBuf(content, 0)
  graph = fb.subgraphs[0]
  fb.operatorCodes = list(fb.operatorCodes) + [_operator_code(schema.BuiltinOperator.ADD)]
  wake_in = _new_tensor(fb, (1, _WAKER_ELEMENTS), schema.TensorType.FLOAT32, b"waker_in")
  wake_out = _new_tensor(fb, (1, _WAKER_ELEMENTS), schema.TensorType.FLOAT32, b"waker_out")
  writers, inputs, written = [_add_op(fb, wake_in, wake_out)], [], []
  for i in graph.inputs:
    tensor = graph.tensors[i]
    if tensor.type not in (schema.TensorType.FLOAT32, schema.TensorType.INT8):
      inputs.append(i)
      continue
    source = copy.copy(tensor)
    source.name = (tensor.name or b"") + b"_source"
    inputs.append(_append_tensor(fb, source))
    writers.append(_add_op(fb, inputs[-1], i))
    written.append(i)
  graph.inputs = inputs + [wake_in]
  operators, outputs = writers + list(graph.operators), list(graph.outputs) + [wake_out]
  written.append(wake_out)
  graph.operators, graph.outputs = writers, written
  alone = _pack(fb)
  graph.operators, graph.outputs = operators, outputs
  return alone, _pack(fb)


def _copies(content, count):
  """`count` copies of a single-op model's op, reading the same inputs and weight buffers and
  each writing its own outputs. XNNPACK packs every copy's weights separately, so one run
  reads `count` times the op's weight bytes."""
  fb = schema.ModelT.InitFromPackedBuf(content, 0)
  graph = fb.subgraphs[0]
  (op,) = graph.operators
  for copy_index in range(1, count):
    outputs = []
    for i in op.outputs:
      tensor = copy.copy(graph.tensors[i])
      tensor.name = (tensor.name or b"") + f"_copy{copy_index}".encode()
      outputs.append(_append_tensor(fb, tensor))
    twin = copy.copy(op)
    twin.outputs = outputs
    graph.operators.append(twin)
    graph.outputs = list(graph.outputs) + outputs
  return _pack(fb)


def grid(ops=("conv2d", "depthwise_conv2d", "dense", "max_pool", "avg_pool"),
         sizes=(8, 16, 32), channels=(8, 16, 32, 64), kernels=(1, 3, 5), strides=(1, 2),
         dtypes=("float32", "int8")):
  """The Cartesian grid of `LayerConfig` (conv2d: input channels = output channels / 1 or the
  previous width; dense: channels x channels)."""
  configs = []
  for op, dtype in itertools.product(ops, dtypes):
    if op == "dense":
      configs += [LayerConfig(op, (c_in,), c_out, dtype=dtype)
                  for c_in, c_out in itertools.product(channels, channels)]
      continue
    for size, c, k, s in itertools.product(sizes, channels, kernels, strides):
      if op == "conv2d":
        configs += [LayerConfig(op, (size, size, c), f, k, s, dtype) for f in channels
                    if f in (c, 2 * c)]
      elif op == "depthwise_conv2d":
        configs.append(LayerConfig(op, (size, size, c), c, k, s, dtype))
      elif k > 1 and k >= s:  # pooling
        configs.append(LayerConfig(op, (size, size, c), c, k, s, dtype))
  return configs


def _layer(config):
  from kslim._keras import keras  # pylint: disable=import-outside-toplevel  # TF only here
  layers = keras.layers
  k, s = config.kernel, config.stride
  return {
      "conv2d": lambda: layers.Conv2D(config.filters, k, s, padding="same", activation="relu"),
      "depthwise_conv2d": lambda: layers.DepthwiseConv2D(k, s, padding="same",
                                                         activation="relu"),
      "dense": lambda: layers.Dense(config.filters),
      "max_pool": lambda: layers.MaxPooling2D(k, s, padding="same"),
      "avg_pool": lambda: layers.AveragePooling2D(k, s, padding="same"),
  }[config.op]()


def grid_models(configs, seed=0):
  """Converts each `LayerConfig` alone into a single-op `OpModel` (needs TensorFlow)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from kslim._keras import keras  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  result = []
  for config in configs:
    keras.backend.clear_session()  # hundreds of one-layer models: keep the graph small
    inputs = keras.Input(config.input_shape, batch_size=1)
    model = keras.Model(inputs, _layer(config)(inputs))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if config.dtype == "int8":
      samples = rng.random((8, *config.input_shape), dtype=np.float32)
      converter.optimizations = [tf.lite.Optimize.DEFAULT]
      converter.representative_dataset = lambda s=samples: ([x[None]] for x in s)
      converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
      converter.inference_input_type = converter.inference_output_type = tf.int8
    content = converter.convert()
    result += [m for m in single_op_models(content) if m.op not in ("QUANTIZE", "DEQUANTIZE")]
  return result


def _time(models, target, threads, runs, warmup, min_ms, desc):
  """Median ms of each ``(label, content)`` in `models` on `target` (nan where it fails).

  The models go to the target `_CHUNK` at a time (a fresh harness process each; every model
  warms up on its own anyway), so a progress bar named `desc` shows how far a table of
  hundreds of ops has come.
  """
  machine, times = None, []
  with tqdm.tqdm(total=len(models), desc=desc, unit="op", leave=False) as bar:
    for start in range(0, len(models), _CHUNK):
      chunk = models[start:start + _CHUNK]
      request = {"models": [{"name": str(i), "content": base64.b64encode(content).decode()}
                            for i, (_, content) in enumerate(chunk)],
                 "threads": [threads], "xnnpack": [True], "warmup": warmup, "runs": runs,
                 "min_ms": min_ms, "skip_errors": True}
      reply = target.run(request)
      for row, (label, _) in zip(reply["results"], chunk):
        if "error" in row:
          logging.warning("latency table: cannot time %s (%s); it stays out of the table",
                          label, row["error"])
      machine = reply["machine"]
      times += [row.get("median_ms", np.nan) for row in reply["results"]]
      bar.update(len(chunk))
  return machine, times


def _float_op_model(builtin, inputs, output_shape, options=None):
  """A float32 model of one builtin op, built directly in the flatbuffer.

  Args:
    builtin: a `schema.BuiltinOperator` value.
    inputs: per op input, a numpy array (a constant) or a shape (a model input).
    output_shape: the op's one output.
    options: the op's builtin options object (e.g. `schema.Conv2DOptionsT()`), if any.
  """
  model_t = schema.ModelT()
  model_t.version = 3
  model_t.operatorCodes = [_operator_code(builtin)]
  model_t.buffers, tensors = [schema.BufferT()], []  # buffer 0 is the empty sentinel
  for i, item in enumerate(list(inputs) + [output_shape]):
    constant = isinstance(item, np.ndarray)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(item.astype(np.float32).tobytes(), np.uint8) if constant else None
    model_t.buffers.append(buffer)
    tensor = schema.TensorT()
    tensor.shape = list(item.shape if constant else item)
    tensor.type, tensor.buffer, tensor.name = schema.TensorType.FLOAT32, i + 1, f"t{i}".encode()
    tensors.append(tensor)
  op = schema.OperatorT()
  op.opcodeIndex, op.inputs, op.outputs = 0, list(range(len(inputs))), [len(inputs)]
  if options is not None:
    op.builtinOptionsType = getattr(schema.BuiltinOptions, type(options).__name__[:-1])
    op.builtinOptions = options
  graph = schema.SubGraphT()
  graph.tensors, graph.operators, graph.outputs = tensors, [op], [len(inputs)]
  graph.inputs = [i for i, item in enumerate(inputs) if not isinstance(item, np.ndarray)]
  model_t.subgraphs = [graph]
  return _pack(model_t)


def _overhead_op():
  """A model of one ABS on a single float: what invoking any model costs, whatever it does."""
  return OpModel("overhead", "ABS", "float32", 1.0,
                 _float_op_model(schema.BuiltinOperator.ABS, [(1, 1)], (1, 1)))


def _probe_op(channels=512, size=4, seed=0):
  """A float32 1x1 CONV_2D on a size x size x channels input with channels^2 weights (1 MiB at
  512): the cache probe's unit of weights."""
  weights = np.random.default_rng(seed).normal(0, 0.05, (channels, 1, 1, channels))
  options = schema.Conv2DOptionsT()
  options.strideH = options.strideW = 1
  shape = (1, size, size, channels)
  return _float_op_model(schema.BuiltinOperator.CONV_2D,
                         [shape, weights, np.zeros(channels)], shape, options)


class LatencyTable:
  """Per-op latency on one target at one thread count (XNNPACK on), in milliseconds.

  Attributes:
    entries: ``{signature: {"op", "dtype", "work", "ms", "alone_ms"[, "cold_ms"]}}``: ``ms``
      is the op's time in context (see the module docstring), ``alone_ms`` its time alone (both
      without the overhead); ``cold_ms``, for ops with sizeable weights, is its time alone
      with its weights read from memory instead of cache.
    overhead_ms: the per-invoke overhead, added once per estimate.
    cache_curve: ``[[footprint MiB, share]]``: the share of a cold penalty paid on the target
      by a model with that many MiB of weights (0: they stay in cache; 1: every run streams
      them from memory), from the cache probe; empty for no streaming correction.
    target, machine, threads: where and how it was measured.
  """

  def __init__(self, entries, overhead_ms, target="local", machine="", threads=1,
               cache_curve=()):
    self.entries = dict(entries)
    self.overhead_ms = overhead_ms
    self.cache_curve = [list(point) for point in cache_curve]
    self.target, self.machine, self.threads = target, machine, threads

  @classmethod
  def measure(cls, op_models, target=None, threads=1, runs=50, warmup=10, min_ms=20.0,
              repeats=1, probe_mib=PROBE_MIB, cold=True):
    """Times every `OpModel` (duplicates once) on `target` (default: this machine).

    Each op runs at least `warmup` times and `min_ms` before timing, then at least `runs`
    times and `min_ms`; its entry is the median. With `repeats` > 1 the whole set is timed
    that many times and each entry keeps its smallest median, which discounts moments when
    another process held the CPU (time the models the same way for a fair comparison).

    Each op is timed alone and in context (see the module docstring); an op whose model
    fails in context gets its time alone as ``ms``. Ops with at least 64 KiB of weights are
    also timed cold, and the cache probe runs at the footprints `probe_mib` (empty: no probe,
    no correction).
    `cold=False` skips both, e.g. on an emulated target whose timings are not latency anyway.
    """
    target = target or targets.Local()
    unique = list({m.signature: m for m in op_models}.values())
    cold_models = []  # (signature, copies, model)
    for m in unique:
      size = weight_bytes(m.content)
      if cold and size >= _COLD_MIN_BYTES:
        count = min(_COLD_MAX_COPIES, math.ceil(_COLD_BYTES / size))
        cold_models.append((m.signature, count, _copies(m.content, count)))
    contexts = [_in_context(m.content) for m in unique]
    writers = list(dict.fromkeys(pair[0] for pair in contexts))  # shared by many ops
    probe = _probe_op()
    timed = ([("the overhead op", _overhead_op().content)] +
             [(f"{m.signature} alone", m.content) for m in unique] +
             [(f"{m.signature} in context", pair[1]) for m, pair in zip(unique, contexts)] +
             [(f"input writers {k}", content) for k, content in enumerate(writers)] +
             [(f"{signature} cold", content) for signature, _, content in cold_models] +
             [(f"the cache probe at {mib} MiB", _copies(probe, mib))
              for mib in (probe_mib if cold else ())])
    machine, times = None, None
    for k in range(repeats):
      machine, repeat = _time(timed, target, threads, runs, warmup, min_ms,
                              f"latency table at {threads} thread(s), pass {k + 1}/{repeats}")
      times = repeat if times is None else np.minimum(times, repeat).tolist()
    overhead, times = times[0], iter(times[1:])
    alone = [next(times) for _ in unique]
    in_context = [next(times) for _ in contexts]
    writer_ms = dict(zip(writers, [next(times) for _ in writers]))
    entries = {}
    for m, t, pair, c in zip(unique, alone, contexts, in_context):
      if not np.isnan(t):
        ms = max(t - overhead, 0.0)
        context = c - writer_ms[pair[0]]
        entries[m.signature] = {"op": m.op, "dtype": m.dtype, "work": m.work,
                                "ms": ms if np.isnan(context) else max(context, 0.0),
                                "alone_ms": ms}
    for (signature, count, _), t in zip(cold_models, times):
      if signature in entries and not np.isnan(t):
        entries[signature]["cold_ms"] = max((t - overhead) / count,
                                            entries[signature]["alone_ms"])
    per_mib = [(t - overhead) / mib for mib, t in zip(probe_mib, times)]  # empty if not cold
    return cls(entries, overhead, target.name, machine, threads,
               _cache_curve(probe_mib, per_mib))

  def merge(self, other):
    """This table with `other`'s entries added (same target and thread count; this table's
    cache curve, or `other`'s where this one has none)."""
    if (other.machine, other.threads) != (self.machine, self.threads):
      raise ValueError(f"cannot merge a table of {other.machine} at {other.threads} thread(s) "
                       f"into one of {self.machine} at {self.threads}")
    return LatencyTable({**self.entries, **other.entries}, self.overhead_ms, self.target,
                        self.machine, self.threads, self.cache_curve or other.cache_curve)

  def to_dict(self):
    return {"target": self.target, "machine": self.machine, "threads": self.threads,
            "overhead_ms": self.overhead_ms, "cache_curve": self.cache_curve,
            "entries": self.entries}

  def save(self, path):
    pathlib.Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

  @classmethod
  def load(cls, path):
    """Reads a table written by `save`; a clear error names a file that is not one."""
    try:
      data = json.loads(pathlib.Path(path).read_text())
      return cls(data["entries"], data["overhead_ms"], data["target"], data["machine"],
                 data["threads"], data.get("cache_curve", ()))
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
      raise ValueError(f"{path} is not a latency table: {e}") from e

  def streamed_share(self, weights_mib):
    """The share of the cold penalty a model with `weights_mib` of weights pays: the cache
    curve interpolated in log footprint, held flat past its ends."""
    if not self.cache_curve or weights_mib <= 0:
      return 0.0
    mib, share = zip(*self.cache_curve)
    return float(np.interp(math.log(weights_mib), np.log(mib), share))

  def _interpolate(self, signature, name, dtype, work):
    options = signature[signature.index("{"):]
    kernel = signature.split(";")[1] if name in _MAC_OPS and ";" in signature else ""
    # Same op, dtype and options; for conv-like ops also the same kernel window.
    candidates = [e for s, e in self.entries.items()
                  if e["op"] == name and e["dtype"] == dtype and s.endswith(options)
                  and (not kernel or _window(s) == _window(signature))]
    if not candidates:
      candidates = [e for e in self.entries.values() if e["op"] == name and e["dtype"] == dtype]
    if not candidates:
      return None
    nearest = min(candidates, key=lambda e: abs(math.log(e["work"] / work)))
    return nearest["ms"] * work / nearest["work"]

  def estimate(self, model):
    """The `Estimate` of a .tflite model (path or bytes) from this table."""
    total, exact, interpolated, missing, penalty = self.overhead_ms, 0, 0, [], 0.0
    signatures = op_signatures(model)
    for signature, name, dtype, work in signatures:
      if signature in self.entries:
        entry = self.entries[signature]
        total += entry["ms"]
        alone = entry.get("alone_ms", entry["ms"])  # tables before in-context timing
        penalty += entry.get("cold_ms", alone) - alone
        exact += 1
        continue
      value = self._interpolate(signature, name, dtype, work)
      if value is None:
        missing.append(name)
      else:
        total += value
        interpolated += 1
    weights_mib = weight_bytes(model) / _MIB
    streamed = self.streamed_share(weights_mib) * penalty
    return Estimate(total + streamed, len(signatures), exact, interpolated, tuple(missing),
                    weights_mib, streamed)


def _cache_curve(footprints_mib, per_mib_ms):
  """``[[MiB, share]]`` from the probe's time per MiB of weights at each footprint: 0 at the
  smallest footprint, 1 at the largest, non-decreasing (empty when the probe saw no rise)."""
  if len(per_mib_ms) < 2 or any(np.isnan(per_mib_ms)):
    return []
  rise = np.maximum.accumulate(np.asarray(per_mib_ms) - per_mib_ms[0])
  if rise[-1] <= 0:
    return []
  return [[float(m), float(r / rise[-1])] for m, r in zip(footprints_mib, rise)]


def _window(signature):
  """The spatial kernel window of a conv-like signature (its second input's inner dims)."""
  try:
    kernel = signature.split("(", 1)[1].split(";")[1]
    dims = json.loads(kernel[kernel.index("["):])
    return tuple(dims[1:3]) if len(dims) == 4 else ()
  except (IndexError, ValueError):
    return ()


def _main(options):
  if options.estimate:
    table = LatencyTable.load(options.table)
    for path in options.estimate:
      e = table.estimate(path)
      print(f"{path}: estimated {e.total_ms:.3f} ms on {table.machine} at {table.threads} "
            f"thread(s) ({e.exact}/{e.ops} ops exact, {e.interpolated} interpolated"
            f"{', missing ' + ', '.join(e.missing) if e.missing else ''}); "
            f"{e.streamed_ms:.3f} ms of it for {e.weights_mib:.1f} MiB of weights read from "
            f"memory")
    return
  op_models = []
  if options.grid:
    op_models += grid_models(grid(dtypes=tuple(options.dtypes)))
  for path in options.models or []:
    op_models += single_op_models(path)
  if not op_models:
    raise app.UsageError("nothing to measure: pass --grid and/or --models")
  target = targets.from_options(options.remote, options.remote_python, options.arch)
  table = LatencyTable.measure(op_models, target, threads=options.table_threads,
                               runs=options.runs, cold=options.cold)
  table.save(options.output)
  print(f"wrote {len(table.entries)} entries to {options.output} ({table.machine}, "
        f"{table.threads} thread(s), overhead {table.overhead_ms * 1e3:.1f} us)")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    _main(flags.FLAGS)
  except (FileNotFoundError, ValueError) as e:
    raise app.UsageError(str(e)) from e
  except targets.TargetError as e:
    raise SystemExit(f"tflite-latency-table: {e}") from e


def run():
  """Console-script entry point; the flags exist only here."""
  flags.DEFINE_string("output", None, "Write the measured table here (JSON).")
  flags.DEFINE_bool("grid", False, "Measure the default Conv2D/DepthwiseConv2D/Dense/pooling "
                    "grid.")
  flags.DEFINE_list("dtypes", ["float32", "int8"], "Grid dtypes.")
  flags.DEFINE_list("models", None, "Also measure every distinct op of these .tflite files.")
  flags.DEFINE_integer("table_threads", 1, "Thread count to measure at.", lower_bound=1)
  flags.DEFINE_integer("runs", 50, "Timed runs per op.", lower_bound=1)
  flags.DEFINE_bool("cold", True, "Also time ops with >= 64 KiB of weights with their weights "
                    "read from memory, and probe the target's cache (the streamed-weights term "
                    "of estimates); --nocold skips both, e.g. on an emulated target.")
  flags.DEFINE_string("table", None, "With --estimate: the table to read.")
  flags.DEFINE_list("estimate", None, "Estimate these .tflite files' latency from --table.")
  targets.define_flags()
  flags.register_validator("dtypes", lambda v: bool(v) and set(v) <= {"float32", "int8"},
                           message="--dtypes takes float32 and/or int8")
  flags.register_multi_flags_validator(
      ["estimate", "table", "output"],
      lambda v: bool(v["table"]) if v["estimate"] else bool(v["output"]),
      message="--estimate needs --table; measuring needs --output")
  app.run(main)


if __name__ == "__main__":
  run()
