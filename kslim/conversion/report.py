"""What a conversion produced: size, ops by dtype, float ops, and (for QAT) per-layer parity."""

import collections
import dataclasses

from kslim._table import format_table
from kslim.conversion import parity as parity_lib
from tflite_tools import analyze

__all__ = ["ConversionReport", "TFLiteModel", "build_report"]


@dataclasses.dataclass(frozen=True)
class ConversionReport:
  """Attributes:
    mode: the conversion mode.
    size_bytes: the flatbuffer's size.
    ops_by_dtype: ``{dtype: {op: count}}`` (see `tflite_tools.analyze.ops_by_dtype`).
    float_ops: names of ops computing in float32 (in an int8 model: what stayed float).
    float_reasons: ``{op name: why it computes in float32}`` for the quantized modes.
    parity: per-layer `LayerParity` list, when asked for.
  """
  mode: str
  size_bytes: int
  ops_by_dtype: dict
  float_ops: tuple
  float_reasons: dict = dataclasses.field(default_factory=dict)
  parity: tuple = None

  def to_dict(self):
    result = dataclasses.asdict(self)
    result["parity"] = None if self.parity is None else [p.to_dict() for p in self.parity]
    return result

  def __str__(self):
    rows = [[dtype, ", ".join(f"{name} x{count}" for name, count in sorted(ops.items()))]
            for dtype, ops in self.ops_by_dtype.items()]
    lines = [f"TFLite {self.mode}: {self.size_bytes / 1024:.1f} KB",
             format_table(["dtype", "ops"], rows, left_columns=2)]
    if self.mode != "float32":
      by_reason = collections.defaultdict(collections.Counter)
      for name in self.float_ops:
        by_reason[self.float_reasons[name]][name] += 1
      lines.append("ops left in float32:" + ("" if by_reason else " none"))
      lines += [f"  {', '.join(f'{name} x{count}' for name, count in counts.items())}: {reason}"
                for reason, counts in by_reason.items()]
    if self.parity is not None:
      lines += ["per-layer parity (Keras fake-quant vs TFLite, in grid steps):",
                parity_lib.format_parity(self.parity)]
    return "\n".join(lines)


class TFLiteModel(bytes):
  """The flatbuffer bytes, carrying the `ConversionReport` of the conversion as `.report`."""

  report = None


def build_report(mode, content, qat_model=None, parity_inputs=None):
  """Analyzes `content`; with a QAT model and inputs, adds the per-layer parity."""
  parity = None
  if qat_model is not None and parity_inputs is not None:
    parity = tuple(parity_lib.parity(qat_model, content, parity_inputs))
  model_ops = analyze.ops(content)
  float_ops = analyze.float_ops(model_ops)
  reasons = {op.name: _float_reason(mode, op) for op in float_ops}
  return ConversionReport(mode, len(content), analyze.ops_by_dtype(model_ops),
                          tuple(op.name for op in float_ops), reasons, parity)


def _float_reason(mode, op):
  """Why `op` computes in float32 in a `mode` file."""
  if mode == "float32":
    return "float32 model"
  if mode == "float16":
    return "float16 mode: weights stored as float16, computed in float32"
  if mode == "dynamic":
    if "int8" in op.weight_dtypes:
      return "dynamic range: int8 weights, activations quantized on the fly"
    if "float32" in op.weight_dtypes:
      return "dynamic range: weights kept float (TFLite quantizes tensors of 1024+ values)"
    return "dynamic range: activations stay float32"
  return ("no calibrated range reached it, or TFLite has no integer kernel for it "
          "(kept float)")
