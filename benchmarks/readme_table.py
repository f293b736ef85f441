"""Renders the README's results table from the benchmarks' JSON, so no number is hand-typed.

`python benchmarks/readme_table.py` rewrites the block between the README's results markers;
tests/benchmarks/readme_table_test.py fails when the README and the JSON disagree.
"""

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def render(results_dir=RESULTS):
  """The Markdown table of every benchmark JSON in `results_dir`, one row per model/stage."""
  lines = []
  for path in sorted(results_dir.glob("*.json")):
    data = json.loads(path.read_text())
    if not all("tflite_accuracy" in r and "latency_ms" in r for r in data["results"]):
      continue  # a check without accuracy and latency rows (e.g. prune_applications.json)
    threads = sorted({int(t) for r in data["results"] for t in r["latency_ms"]})
    lines += [f"**{data['benchmark']}** (`benchmarks/results/{path.name}`; {data['recipe']})", "",
              "| Model | TFLite accuracy | Params | MACs | TFLite KB | " +
              " | ".join(f"ms @{t} thread{'s' if t > 1 else ''}" for t in threads) + " |",
              "|---|---:|---:|---:|---:|" + "---:|" * len(threads)]
    for r in data["results"]:
      latency = " | ".join(f"{r['latency_ms'][str(t)]:.3f}" for t in threads)
      lines.append(f"| {r['stage']} | {r['tflite_accuracy']:.2%} | {r['params']:,} | "
                   f"{r['macs']:,} | {r['tflite_kb']:.1f} | {latency} |")
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
