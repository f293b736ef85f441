"""The results table every pipeline run prints and saves."""

from kslim import _table

__all__ = ["format_table"]

_COLUMNS = (
    ("stage", "Stage", "{}"),
    ("keras_accuracy", "Keras acc", "{:.2%}"),
    ("tflite_accuracy", "TFLite acc", "{:.2%}"),
    ("params", "Params", "{:,}"),
    ("macs", "MACs", "{:,}"),
    ("tflite_kb", "TFLite KB", "{:.1f}"),
)


def format_table(results):
  """A plain-text table of `StageResult`s, with one latency column per measured thread count."""
  rows = [r.to_dict() for r in results]
  threads = sorted({int(t) for r in rows for t in r["latency_ms"]})
  header = [title for _, title, _ in _COLUMNS] + [f"ms @{t} thr" for t in threads]
  lines = []
  for r in rows:
    cells = ["-" if r[key] is None else fmt.format(r[key]) for key, _, fmt in _COLUMNS]
    cells += [f"{r['latency_ms'][t]:.3f}" if t in r["latency_ms"] else "-" for t in threads]
    lines.append(cells)
  return _table.format_table(header, lines)
