"""tflite-analyze: what a .tflite file contains: its ops and the dtype each runs in, which ops
are quantized and which stayed float, its tensors' dtypes and quantization parameters, and how
its size splits into weights and graph.

  python -m tflite_tools.analyze model.tflite [--json=analysis.json]

Example:
  >>> print(analyze("model_int8.tflite"))
"""

import collections
import dataclasses
import json

import numpy as np
from absl import app, flags
from ai_edge_litert import interpreter as litert
from ai_edge_litert import schema_py_generated as schema

from tflite_tools import runner

__all__ = ["OpInfo", "ops", "ops_by_dtype", "float_ops", "Analysis", "analyze"]

# Ops that only move data between dtypes; they do not "run in" either dtype.
CONVERSIONS = ("QUANTIZE", "DEQUANTIZE")
# TFLite tensor type enum -> lower-case dtype name ("float32", "int8", ...).
TENSOR_TYPE_NAMES = {v: k.lower() for k, v in vars(schema.TensorType).items()
                     if not k.startswith("_")}


@dataclasses.dataclass(frozen=True)
class OpInfo:
  """One op of the model: its TFLite name, index, and the dtype of its main input/output.

  `weight_dtypes` lists the dtypes of its constant inputs (kernels, biases, tables).
  """
  index: int
  name: str
  input_dtype: str
  output_dtype: str
  weight_dtypes: tuple = ()

  @property
  def dtype(self):
    """The dtype the op computes in: its first input's for conversions, else its output's."""
    return self.input_dtype if self.name in CONVERSIONS else self.output_dtype


def ops(model):
  """The ops of `model` (a path or bytes) in execution order, delegates excluded."""
  interpreter = litert.Interpreter(
      model_content=runner.load_model_bytes(model),
      experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
  interpreter.allocate_tensors()
  tensors = {t["index"]: t for t in interpreter.get_tensor_details()}

  def dtype_of(indices):
    indices = [i for i in indices if i >= 0 and i in tensors]
    return np.dtype(tensors[indices[0]]["dtype"]).name if indices else "none"

  details = interpreter._get_ops_details()  # pylint: disable=protected-access
  # Tensors computed at run time: op outputs and model inputs; the rest are constants.
  computed = {i for op in details for i in op["outputs"]}
  computed |= {t["index"] for t in interpreter.get_input_details()}

  def constants(indices):
    return tuple(dtype_of([i]) for i in indices if i >= 0 and i not in computed)

  return [OpInfo(op["index"], op["op_name"], dtype_of(op["inputs"]), dtype_of(op["outputs"]),
                 constants(op["inputs"]))
          for op in details]


def ops_by_dtype(model_ops):
  """``{dtype: {op name: count}}`` for `model_ops` (from `ops`)."""
  table = collections.defaultdict(collections.Counter)
  for op in model_ops:
    table[op.dtype][op.name] += 1
  return {dtype: dict(counts) for dtype, counts in sorted(table.items())}


def float_ops(model_ops):
  """The ops of `model_ops` (from `ops`) computing in float32 (QUANTIZE/DEQUANTIZE excluded)."""
  return [op for op in model_ops if op.dtype == "float32" and op.name not in CONVERSIONS]



@dataclasses.dataclass(frozen=True)
class Analysis:
  """What `analyze` found in one .tflite file.

  Attributes:
    size_bytes: the file's size.
    weights_bytes: bytes of constant tensor data (kernels, biases, tables).
    graph_bytes: the rest: the graph, tensor metadata, quantization parameters, signatures.
    op_histogram: ``{op: count}``.
    ops_by_dtype: ``{dtype: {op: count}}`` by the dtype each op computes in.
    quantized_ops: ops computing in an integer dtype, ``{op: count}``.
    float_ops: ops computing in float32 (QUANTIZE/DEQUANTIZE excluded), ``{op: count}``.
    hybrid_ops: the float ops whose weights are stored as integers (dynamic-range
      quantization: int8 weights, float compute), ``{op: count}``.
    tensor_dtypes: ``{dtype: {"constant": n, "activation": n}}`` over every tensor.
    weights_bytes_by_dtype: ``{dtype: bytes}`` of constant data.
    quantization: ``{"weights"|"activations": {"tensors", "per_channel", "per_tensor",
      "dtypes", "scale_min", "scale_max", "zero_points"}}`` over quantized tensors.
  """
  size_bytes: int
  weights_bytes: int
  graph_bytes: int
  op_histogram: dict
  ops_by_dtype: dict
  quantized_ops: dict
  float_ops: dict
  hybrid_ops: dict
  tensor_dtypes: dict
  weights_bytes_by_dtype: dict
  quantization: dict

  def to_dict(self):
    return dataclasses.asdict(self)

  def __str__(self):
    def counts(table):
      return ", ".join(f"{name} x{n}" for name, n in sorted(table.items())) or "none"

    lines = [f"size {self.size_bytes / 1024:.1f} KB = weights {self.weights_bytes / 1024:.1f} KB "
             f"({self.weights_bytes / self.size_bytes:.0%}) + graph "
             f"{self.graph_bytes / 1024:.1f} KB",
             "weights by dtype: " + ", ".join(f"{d} {b / 1024:.1f} KB" for d, b in
                                              self.weights_bytes_by_dtype.items()),
             f"ops ({sum(self.op_histogram.values())}): {counts(self.op_histogram)}",
             f"quantized ops: {counts(self.quantized_ops)}",
             f"float ops: {counts(self.float_ops)}",
             f"  of which hybrid (integer weights, float compute): {counts(self.hybrid_ops)}"]
    lines += [f"  computing in {dtype}: {counts(table)}" for dtype, table in
              self.ops_by_dtype.items()]
    lines.append("tensors: " + ", ".join(f"{d} {c['constant']} constant + {c['activation']} "
                                         "activation" for d, c in self.tensor_dtypes.items()))
    for kind, q in self.quantization.items():
      if q["tensors"]:
        lines.append(f"quantized {kind}: {q['tensors']} tensors ({q['per_channel']} per-channel, "
                     f"{q['per_tensor']} per-tensor; {counts(q['dtypes'])}), scales "
                     f"{q['scale_min']:.3g}..{q['scale_max']:.3g}, zero points "
                     f"{q['zero_points']}")
    return "\n".join(lines)


def _buffer_bytes(buffer):
  if buffer.data is not None:
    return len(buffer.data)
  return int(getattr(buffer, "size", 0) or 0)  # models over 2 GB keep data after the flatbuffer


def _quantization_summary(tensors):
  """Per-channel/per-tensor counts, dtypes, scale range and zero points of quantized `tensors`."""
  scales, zero_points, per_channel, dtypes = [], set(), 0, collections.Counter()
  for t in tensors:
    q = t.quantization
    per_channel += len(q.scale) > 1
    scales.extend(np.asarray(q.scale, np.float64).tolist())
    zero_points.update(int(z) for z in np.asarray(q.zeroPoint).ravel())
    dtypes[TENSOR_TYPE_NAMES[t.type]] += 1
  zero_text = (sorted(zero_points) if len(zero_points) <= 4 else
               f"{len(zero_points)} distinct in [{min(zero_points)}, {max(zero_points)}]")
  return {"tensors": len(tensors), "per_channel": per_channel,
          "per_tensor": len(tensors) - per_channel, "dtypes": dict(dtypes),
          "scale_min": min(scales) if scales else None,
          "scale_max": max(scales) if scales else None,
          "zero_points": zero_text if tensors else []}


def analyze(model):
  """Analyzes a .tflite file (a path or its bytes) from its flatbuffer and its ops.

  Raises:
    FileNotFoundError / ValueError: the file is missing or not a TFLite flatbuffer.
  """
  content = runner.load_model_bytes(model)
  fb = schema.ModelT.InitFromPackedBuf(content, 0)
  model_ops = ops(content)
  dtype_table = collections.defaultdict(lambda: {"constant": 0, "activation": 0})
  weights_by_dtype = collections.Counter()
  quantized = {"weights": [], "activations": []}
  for graph in fb.subgraphs:
    for tensor in graph.tensors:
      dtype = TENSOR_TYPE_NAMES[tensor.type]
      data = _buffer_bytes(fb.buffers[tensor.buffer]) if tensor.buffer < len(fb.buffers) else 0
      kind = "constant" if data else "activation"
      dtype_table[dtype][kind] += 1
      weights_by_dtype[dtype] += data
      q = tensor.quantization
      if q is not None and q.scale is not None and len(q.scale):
        quantized["weights" if data else "activations"].append(tensor)
  weights = sum(_buffer_bytes(b) for b in fb.buffers)
  by_dtype = ops_by_dtype(model_ops)
  floats = collections.Counter(op.name for op in float_ops(model_ops))
  hybrid = collections.Counter(op.name for op in float_ops(model_ops)
                               if any(d.startswith("int8") for d in op.weight_dtypes))
  integer = collections.Counter(op.name for op in model_ops if op.name not in CONVERSIONS
                                and op.dtype.startswith(("int", "uint")))
  return Analysis(
      size_bytes=len(content), weights_bytes=weights, graph_bytes=len(content) - weights,
      op_histogram=dict(collections.Counter(op.name for op in model_ops)),
      ops_by_dtype=by_dtype, quantized_ops=dict(integer), float_ops=dict(floats),
      hybrid_ops=dict(hybrid),
      tensor_dtypes=dict(sorted(dtype_table.items())),
      weights_bytes_by_dtype={d: b for d, b in sorted(weights_by_dtype.items()) if b},
      quantization={kind: _quantization_summary(ts) for kind, ts in quantized.items()})


def main(argv):
  if len(argv) != 2:
    raise app.UsageError("name one .tflite file")
  try:
    result = analyze(argv[1])
  except (FileNotFoundError, ValueError) as e:
    raise app.UsageError(str(e)) from e
  print(result)
  if flags.FLAGS.json:
    with open(flags.FLAGS.json, "w") as f:
      json.dump(result.to_dict(), f, indent=2)


def run():
  """Console-script entry point; the flags exist only here, so importing the library defines
  none."""
  flags.DEFINE_string("json", None, "Also write the analysis as JSON here.")
  app.run(main)


if __name__ == "__main__":
  run()
