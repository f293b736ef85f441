"""Renders the README's results table from the benchmarks' JSON, so no number is hand-typed.

Accuracy, params and MACs come from each benchmark's JSON; the size and latency columns come
from tflite_tools' benchmark JSON (benchmarks/results/tflite_benchmark.json, written by
benchmarks/tflite_benchmark.py), matched by each row's ``tflite_file``.
`python benchmarks/readme_table.py` rewrites the block between the README's results markers;
tests/benchmarks/readme_table_test.py fails when the README and the JSON disagree.
"""

import collections
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MEASUREMENTS = "tflite_benchmark.json"
_UNRECORDED = "the first benchmark machine (x86_64; its CPU was not recorded)"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _measurements(results_dir):
  """``{tflite file: {threads: benchmark record}}`` from tflite_tools' benchmark JSON."""
  table = collections.defaultdict(dict)
  for record in json.loads((results_dir / MEASUREMENTS).read_text())["results"]:
    if record["xnnpack"]:
      table[record["path"]][record["threads"]] = record
  return table


def render(results_dir=RESULTS):
  """The Markdown table of every benchmark JSON in `results_dir`, one row per model/stage.

  Raises:
    KeyError: a row's .tflite file was not measured (run benchmarks/tflite_benchmark.py).
  """
  measured = _measurements(results_dir)
  threads = sorted({t for by_threads in measured.values() for t in by_threads})
  lines = [f"Size and latency: `tflite_tools.benchmark` (`benchmarks/results/{MEASUREMENTS}`), "
           "median of 200 runs (best of 3 fresh processes), batch 1, XNNPACK, every file of a "
           "table measured in one run; each table names its CPU (latencies, int8 ones above "
           "all, compare only within a table).", ""]
  for path in sorted(results_dir.glob("*.json")):
    data = json.loads(path.read_text())
    if not all("tflite_accuracy" in r and "tflite_file" in r for r in data["results"]):
      continue  # a check without accuracy rows (prune_applications.json, latency tables)
    for r in data["results"]:
      if r["tflite_file"] not in measured:
        raise KeyError(f"{r['tflite_file']} (of {path.name}) is not in {MEASUREMENTS}: run "
                       "benchmarks/tflite_benchmark.py")
    cpus = sorted({record.get("cpu") or _UNRECORDED for r in data["results"]
                   for record in measured[r["tflite_file"]].values()})
    lines += [f"**{data['benchmark']}** (`benchmarks/results/{path.name}`; {data['recipe']}; "
              f"measured on {' and '.join(cpus)})", "",
              "| Model | TFLite accuracy | Params | MACs | TFLite KB | " +
              " | ".join(f"ms @{t} thread{'s' if t > 1 else ''}" for t in threads) + " |",
              "|---|---:|---:|---:|---:|" + "---:|" * len(threads)]
    for r in data["results"]:
      by_threads = measured[r["tflite_file"]]
      latency = " | ".join(f"{by_threads[t]['median_ms']:.3f}" for t in threads)
      size_kb = by_threads[threads[0]]["size_bytes"] / 1024
      lines.append(f"| {r['stage']} | {r['tflite_accuracy']:.2%} | {r['params']:,} | "
                   f"{r['macs']:,} | {size_kb:.1f} | {latency} |")
    lines.append("")
  return "\n".join(lines).rstrip() + "\n"


def readme_block(readme_text):
  """The text between the results markers of `readme_text`."""
  start, end = readme_text.index(BEGIN) + len(BEGIN), readme_text.index(END)
  return readme_text[start:end].strip("\n") + "\n"


def main():
  readme = ROOT / "README.md"
  text = readme.read_text()
  start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
  readme.write_text(text[:start] + "\n" + render() + text[end:])
  print(f"updated {readme}")


if __name__ == "__main__":
  sys.exit(main())
