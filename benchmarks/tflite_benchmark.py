"""Measures every .tflite file the benchmark results name with tflite_tools' benchmark, so the
README's latency and size columns come from one tool, one schema and one run.

Reads the ``tflite_file`` of every row in benchmarks/results/*.json, benchmarks them all side by
side (fresh process per model and thread count, XNNPACK on, median of --runs), and writes
benchmarks/results/tflite_benchmark.json in `tflite_tools.benchmark_lib.write_json`'s schema.
Then `python benchmarks/readme_table.py` renders the README from it.

With --only, it re-measures just the files that match those globs (e.g. one benchmark's files
after rerunning it, whose latency ratios compare files of that same rerun) and keeps every other
entry of --output as it was.

Usage: .venv/bin/python benchmarks/tflite_benchmark.py [--threads=1,2] [--runs=200]
           [--only='runs/bench/*/qat_*']
"""

import fnmatch
import json
import pathlib

from absl import app, flags

from tflite_tools import benchmark_lib

_RESULTS = pathlib.Path(__file__).resolve().parent / "results"
_THREADS = flags.DEFINE_list("threads", ["1", "2"], "Thread counts.")
_RUNS = flags.DEFINE_integer("runs", 200, "Timed runs per model and thread count.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Benchmark every file this many times (fresh "
                                "processes) and keep each setting's smallest median: a fresh "
                                "process sometimes lands in a slower memory layout.")
_OUTPUT = flags.DEFINE_string("output", str(_RESULTS / "tflite_benchmark.json"), "JSON output.")
_ONLY = flags.DEFINE_list("only", None, "Re-measure only the files matching these globs; keep "
                          "the other entries of --output.")


def tflite_files(results_dir=_RESULTS):
  """The distinct ``tflite_file`` values of every result row, in file order."""
  files = {}
  for path in sorted(results_dir.glob("*.json")):
    for row in json.loads(path.read_text()).get("results", []):
      if row.get("tflite_file"):
        files[row["tflite_file"]] = None
  return list(files)


def main(argv):
  del argv
  files = tflite_files()
  kept = []
  if _ONLY.value:
    files = [f for f in files if any(fnmatch.fnmatch(f, g) for g in _ONLY.value)]
    if not files:
      raise app.UsageError(f"--only={','.join(_ONLY.value)} matches no tflite_file of the results")
    kept = [benchmark_lib.BenchmarkResult(**r)
            for r in json.loads(pathlib.Path(_OUTPUT.value).read_text())["results"]
            if r["path"] not in files]
  best = {}
  for _ in range(_REPEATS.value):
    for r in benchmark_lib.benchmark(files, threads=[int(t) for t in _THREADS.value],
                                     runs=_RUNS.value):
      key = (r.path, r.threads, r.xnnpack)
      if key not in best or r.median_ms < best[key].median_ms:
        best[key] = r
  results = list(best.values())
  print(benchmark_lib.format_table(results))
  benchmark_lib.write_json(kept + results, _OUTPUT.value)
  print(f"wrote {_OUTPUT.value} ({len(files)} files)")


if __name__ == "__main__":
  app.run(main)
