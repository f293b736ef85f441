"""The results table every pipeline run prints and saves."""

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
  widths = [max(len(c[i]) for c in [header] + lines) for i in range(len(header))]

  def fmt_line(cells):
    return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                     for i, (c, w) in enumerate(zip(cells, widths)))

  rule = "-" * len(fmt_line(header))
  return "\n".join([rule, fmt_line(header), rule] + [fmt_line(c) for c in lines] + [rule])
