"""Benchmark: the float32 reference models on Fashion-MNIST, Keras and TFLite side by side.

Trains each reference model 5 epochs (Adam 2e-3, batch 128) — the baseline every kslim
technique is compared against — exports float32 TFLite, and measures accuracy on the full
10,000-image test set, size and latency per thread count. Prints a table and writes
benchmarks/results/baseline.json (the README's results table is generated from it).

Usage: .venv/bin/python benchmarks/baseline.py [--workdir=runs/bench] [--threads=1,2]
"""

import pathlib

from absl import app, flags

from _results import write_results

from kslim import pipeline
from kslim.cli._common import quiet_tensorflow
from kslim.models import REFERENCE_MODELS

_WORKDIR = flags.DEFINE_string("workdir", "runs/bench", "Cache and TFLite files.")
_OUTPUT = flags.DEFINE_string("output", "benchmarks/results/baseline.json", "JSON results.")
_THREADS = flags.DEFINE_list("threads", ["1", "2"], "TFLite thread counts.")
_MODELS = flags.DEFINE_list("models", sorted(REFERENCE_MODELS), "Reference models.")


def main(argv):
  del argv
  quiet_tensorflow()
  rows = []
  for name in _MODELS.value:
    settings = pipeline.Settings(model=name, threads=tuple(int(t) for t in _THREADS.value),
                                 latency_runs=200)
    ctx = pipeline.run_stages(["baseline", "export_float32", "evaluate"], settings,
                                 pathlib.Path(_WORKDIR.value) / name)
    rows.extend(ctx.results)
  print(pipeline.format_table(rows))
  write_results(_OUTPUT.value, "baseline",
                "5 epochs, Adam 2e-3, batch 128; full 10,000-image test set; median latency "
                "of 200 single-image runs after warm-up (XNNPACK on)",
                [r.to_dict() for r in rows])

if __name__ == "__main__":
  app.run(main)
