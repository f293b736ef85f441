"""What a conversion produced: size, ops by dtype, float ops, and (for QAT) per-layer parity."""

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
    parity: per-layer `LayerParity` list, when asked for.
  """
  mode: str
  size_bytes: int
  ops_by_dtype: dict
  float_ops: tuple
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
      lines.append("ops left in float32: " + (", ".join(self.float_ops) or "none"))
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
  return ConversionReport(mode, len(content), analyze.ops_by_dtype(model_ops),
                          tuple(op.name for op in analyze.float_ops(model_ops)), parity)
