"""The results tables, report files and plots of pipeline runs."""

import dataclasses
import json
import pathlib

from kslim import _plot
from kslim import _table

__all__ = ["format_table", "job_table", "plot_rows", "write"]

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


def _ratio_columns(rows):
  """Per row: accuracy change (points), size and latency ratios against the first row."""
  base = rows[0]
  threads = sorted({t for r in rows for t in r.latency_ms}, key=int)
  out = []
  for r in rows:
    cells = {"delta_points": None if r.accuracy is None or base.accuracy is None
             else 100 * (r.accuracy - base.accuracy),
             "smaller": None if not r.tflite_kb or not base.tflite_kb
             else base.tflite_kb / r.tflite_kb,
             "speedup": {t: base.latency_ms[t] / r.latency_ms[t] for t in threads
                         if t in r.latency_ms and t in base.latency_ms}}
    out.append(cells)
  return threads, out


def job_table(rows, markdown=False):
  """The job's final table: per stage accuracy (TFLite where there is a file), params, MACs,
  size and latency, with ratios against the baseline (first row)."""
  threads, ratios = _ratio_columns(rows)
  header = (["stage", "accuracy", "vs base", "params", "MACs", "TFLite KB", "smaller"]
            + [f"ms @{t} thr" for t in threads] + [f"faster @{t}" for t in threads])
  lines = []
  for r, x in zip(rows, ratios):
    line = [r.stage, "-" if r.accuracy is None else f"{r.accuracy:.2%}",
            "-" if x["delta_points"] is None else f"{x['delta_points']:+.2f} pt",
            f"{r.params:,}", f"{r.macs:,}", "-" if r.tflite_kb is None else f"{r.tflite_kb:.1f}",
            "-" if x["smaller"] is None else f"{x['smaller']:.2f}x"]
    line += [f"{r.latency_ms[t]:.3f}" if t in r.latency_ms else "-" for t in threads]
    line += [f"{x['speedup'][t]:.2f}x" if t in x["speedup"] else "-" for t in threads]
    lines.append(line)
  if not markdown:
    return _table.format_table(header, lines)
  return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                   + ["| " + " | ".join(line) + " |" for line in lines])


def plot_rows(rows, path):
  """Accuracy against TFLite size and against latency (fewest threads), one point per row."""
  figure, axes = _plot.subplots(1, 2, figsize=(11, 4))
  threads = sorted({t for r in rows for t in r.latency_ms}, key=int)
  for ax, (label, value) in zip(axes, (
      ("TFLite size (KB)", lambda r: r.tflite_kb),
      (f"latency (ms, {threads[0] if threads else 1} thread)",
       lambda r: r.latency_ms.get(threads[0]) if threads else None))):
    points = [(value(r), r.accuracy, r.stage) for r in rows
              if value(r) is not None and r.accuracy is not None]
    if not points:
      ax.text(0.5, 0.5, "not measured (add a benchmark strategy)", ha="center",
              transform=ax.transAxes)
    for x, y, stage in points:
      ax.scatter(x, y)
      ax.annotate(stage, (x, y), fontsize=8, xytext=(3, 3), textcoords="offset points")
    ax.set(xlabel=label, ylabel="accuracy")
  _plot.save(figure, path)


def write(config, rows, plots, workdir):
  """Writes report.json, report.md and accuracy.png (accuracy vs size and vs latency per
  stage) into `workdir`; returns the report dict."""
  workdir = pathlib.Path(workdir)
  threads, ratios = _ratio_columns(rows)
  plot_rows(rows, workdir / "accuracy.png")
  report = {"config": config,
            "rows": [{**dataclasses.asdict(r), "accuracy": r.accuracy, **x}
                     for r, x in zip(rows, ratios)],
            "baseline": rows[0].stage, "final": rows[-1].stage,
            "plots": ["accuracy.png"] + [str(pathlib.Path(p).relative_to(workdir)) for p in plots]}
  (workdir / "report.json").write_text(json.dumps(report, indent=1) + "\n")
  markdown = ["# kslim compression report", "",
              f"Strategies: {' -> '.join(next(iter(s)) for s in config['strategies'])}", "",
              job_table(rows, markdown=True), "",
              "Accuracy is the TFLite file's on the test set; ratios are against the first row"
              + (f"; latency is the median over timed runs per thread count ({', '.join(threads)})."
                 if threads else "."), ""]
  markdown += [f"![{pathlib.Path(p).stem}]({p})" for p in report["plots"]]
  (workdir / "report.md").write_text("\n".join(markdown) + "\n")
  return report
