"""tflite-latency-table: per-op latency measured on the target, and model latency estimated by
summing it (the cost model of hardware-aware architecture search).

Every op of a TFLite model is identified by its *signature*: the op, the shapes and dtypes of
its inputs and outputs, and its options (stride, padding, fused activation). A table maps
signatures to milliseconds, measured by timing a model holding just that op on the target:
either a Keras layer from a grid of Conv2D / DepthwiseConv2D / Dense / pooling configurations,
or the op cut out of a real .tflite file (`single_op_models`), so every op type is covered.
Each measurement has the target's fixed per-invoke overhead (timed on a one-op model of a
single element) subtracted; an estimate adds it back once.

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
from absl import app, flags, logging
from ai_edge_litert import schema_py_generated as schema

from tflite_tools import analyze, targets
from tflite_tools.runner import load_model_bytes

__all__ = ["LayerConfig", "OpModel", "LatencyTable", "Estimate", "grid", "grid_models",
           "single_op_models", "op_signatures"]

_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
# Ops whose cost grows with MACs (output elements x kernel elements); the rest with elements.
_MAC_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D",
            "BATCH_MATMUL")
_INTEGER = ("int8", "uint8", "int16")


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
  """
  total_ms: float
  ops: int
  exact: int
  interpolated: int
  missing: tuple


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


def _time(op_models, target, threads, runs, warmup, min_ms):
  request = {"models": [{"name": str(i), "content": base64.b64encode(m.content).decode()}
                        for i, m in enumerate(op_models)],
             "threads": [threads], "xnnpack": [True], "warmup": warmup, "runs": runs,
             "min_ms": min_ms, "skip_errors": True}
  reply = target.run(request)
  for row, model in zip(reply["results"], op_models):
    if "error" in row:
      logging.warning("latency table: cannot time %s alone (%s); it stays out of the table",
                      model.signature, row["error"])
  return reply["machine"], [row.get("median_ms", np.nan) for row in reply["results"]]


def _overhead_op():
  """A model of one ABS on a single float: what invoking any model costs, whatever it does."""
  model_t = schema.ModelT()
  model_t.version = 3
  code = schema.OperatorCodeT()
  code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.ABS
  model_t.operatorCodes = [code]
  empty = schema.BufferT()
  model_t.buffers = [empty, schema.BufferT(), schema.BufferT()]
  tensors = []
  for i, name in enumerate((b"x", b"y")):
    tensor = schema.TensorT()
    tensor.shape, tensor.type, tensor.buffer, tensor.name = [1, 1], schema.TensorType.FLOAT32, \
        i + 1, name
    tensors.append(tensor)
  op = schema.OperatorT()
  op.opcodeIndex, op.inputs, op.outputs = 0, [0], [1]
  graph = schema.SubGraphT()
  graph.tensors, graph.operators, graph.inputs, graph.outputs = tensors, [op], [0], [1]
  model_t.subgraphs = [graph]
  return OpModel("overhead", "ABS", "float32", 1.0, _pack(model_t))


class LatencyTable:
  """Per-op latency on one target at one thread count (XNNPACK on), in milliseconds.

  Attributes:
    entries: ``{signature: {"op", "dtype", "work", "ms"}}``; ``ms`` excludes the overhead.
    overhead_ms: the per-invoke overhead, added once per estimate.
    target, machine, threads: where and how it was measured.
  """

  def __init__(self, entries, overhead_ms, target="local", machine="", threads=1):
    self.entries = dict(entries)
    self.overhead_ms = overhead_ms
    self.target, self.machine, self.threads = target, machine, threads

  @classmethod
  def measure(cls, op_models, target=None, threads=1, runs=50, warmup=10, min_ms=20.0,
              repeats=1):
    """Times every `OpModel` (duplicates once) on `target` (default: this machine).

    Each op runs at least `warmup` times and `min_ms` before timing, then at least `runs`
    times and `min_ms`; its entry is the median. With `repeats` > 1 the whole set is timed
    that many times and each entry keeps its smallest median, which discounts moments when
    another process held the CPU (time the models the same way for a fair comparison).
    """
    target = target or targets.Local()
    unique = list({m.signature: m for m in op_models}.values())
    machine, times = None, None
    for _ in range(repeats):
      machine, repeat = _time([_overhead_op()] + unique, target, threads, runs, warmup, min_ms)
      times = repeat if times is None else np.minimum(times, repeat).tolist()
    overhead, times = times[0], times[1:]
    entries = {m.signature: {"op": m.op, "dtype": m.dtype, "work": m.work,
                             "ms": max(t - overhead, 0.0)}
               for m, t in zip(unique, times) if not np.isnan(t)}
    return cls(entries, overhead, target.name, machine, threads)

  def merge(self, other):
    """This table with `other`'s entries added (same target and thread count)."""
    if (other.machine, other.threads) != (self.machine, self.threads):
      raise ValueError(f"cannot merge a table of {other.machine} at {other.threads} thread(s) "
                       f"into one of {self.machine} at {self.threads}")
    return LatencyTable({**self.entries, **other.entries}, self.overhead_ms, self.target,
                        self.machine, self.threads)

  def to_dict(self):
    return {"target": self.target, "machine": self.machine, "threads": self.threads,
            "overhead_ms": self.overhead_ms, "entries": self.entries}

  def save(self, path):
    pathlib.Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

  @classmethod
  def load(cls, path):
    """Reads a table written by `save`; a clear error names a file that is not one."""
    try:
      data = json.loads(pathlib.Path(path).read_text())
      return cls(data["entries"], data["overhead_ms"], data["target"], data["machine"],
                 data["threads"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
      raise ValueError(f"{path} is not a latency table: {e}") from e

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
    total, exact, interpolated, missing = self.overhead_ms, 0, 0, []
    signatures = op_signatures(model)
    for signature, name, dtype, work in signatures:
      if signature in self.entries:
        total += self.entries[signature]["ms"]
        exact += 1
        continue
      value = self._interpolate(signature, name, dtype, work)
      if value is None:
        missing.append(name)
      else:
        total += value
        interpolated += 1
    return Estimate(total, len(signatures), exact, interpolated, tuple(missing))


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
            f"{', missing ' + ', '.join(e.missing) if e.missing else ''})")
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
                               runs=options.runs)
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
