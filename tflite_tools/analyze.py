"""What a .tflite file contains: its ops, the dtype each runs in, and its quantized tensors."""

import collections
import dataclasses

import numpy as np
from ai_edge_litert import interpreter as litert

from tflite_tools import runner

__all__ = ["OpInfo", "ops", "ops_by_dtype", "float_ops"]

# Ops that only move data between dtypes; they do not "run in" either dtype.
_CONVERSIONS = ("QUANTIZE", "DEQUANTIZE")


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
    return self.input_dtype if self.name in _CONVERSIONS else self.output_dtype


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
  return [op for op in model_ops if op.dtype == "float32" and op.name not in _CONVERSIONS]
