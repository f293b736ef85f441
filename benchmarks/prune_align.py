"""Benchmark: does float32 TFLite latency fall with MACs when channel counts are aligned?

For each model (its 5-epoch float baseline, cached by the pipeline), prunes --reduction of the
MACs with --criterion, by a uniform ratio and by sensitivity-derived ratios (the plain scan
benchmarks/prune.py caches), at every --aligns channel multiple (`kslim.prune(..., align=k)`;
the ratios are searched with the same align, so every model reaches the target). No
fine-tuning: this measures the architectures' latency only. Every file (and the unpruned one)
is timed in --passes passes over all of them (LiteRT, 1 thread, median of --runs single-image
runs each), keeping each file's smallest median, so a slow spell of the machine does not land
on one model. Prints a table and writes benchmarks/results/prune_align.json.

Usage: .venv/bin/python benchmarks/prune_align.py [--models=reference_cnn] [--aligns=1,8,16]
"""

import pathlib

from absl import app, flags
import numpy as np
import tqdm

from _results import rows_for, write_results
import _sensitivity

import kslim
from kslim import pipeline
from kslim._keras import keras
from kslim._table import format_table
from kslim.cli._common import quiet_tensorflow
from kslim.conversion import convert
from kslim.models import REFERENCE_MODELS
from kslim.pruning.criteria import Criterion
from tflite_tools.benchmark_lib import measure_latency

_WORKDIR = flags.DEFINE_string("workdir", "runs/bench", "Cache and TFLite files.")
_OUTPUT = flags.DEFINE_string("output", "benchmarks/results/prune_align.json", "JSON results.")
_MODELS = flags.DEFINE_list("models", ["reference_cnn", "mini_mobilenet_v2"],
                            f"Reference models, of {sorted(REFERENCE_MODELS)}.")
_CRITERION = flags.DEFINE_enum("criterion", "bn_gamma", [c.value for c in Criterion],
                               "Pruning criterion.")
_REDUCTION = flags.DEFINE_float("reduction", 0.5, "Share of MACs to remove.")
_ALIGNS = flags.DEFINE_list("aligns", ["1", "4", "8", "16"], "Channel multiples to compare.")
_PASSES = flags.DEFINE_integer("passes", 3, "Timing passes over all files.", lower_bound=1)
_RUNS = flags.DEFINE_integer("runs", 200, "Timed runs per file and pass.", lower_bound=1)


def _benchmark_model(name):
  workdir = pathlib.Path(_WORKDIR.value) / name
  settings = pipeline.Settings(model=name, threads=(1,), latency_runs=_RUNS.value)
  ctx = pipeline.run_stages(["baseline"], settings, workdir)
  (x_train, y_train), _ = ctx.data
  baseline, criterion = ctx.model, _CRITERION.value
  sens = _sensitivity.scan(baseline, x_train, y_train, workdir, criterion)
  graph = kslim.pruning.DependencyGraph(baseline)
  models = [("unpruned", 1, baseline)]
  for align in map(int, _ALIGNS.value):
    for how, ratios in (
        ("uniform", kslim.pruning.uniform_ratio_for_flops(graph, _REDUCTION.value, criterion,
                                                          align)),
        ("sensitivity", kslim.pruning.ratios_for_flops(sens, _REDUCTION.value, align=align))):
      models.append((how, align, kslim.prune(baseline, ratios, criterion, align)))
  rows, base = [], kslim.profile(baseline)
  for how, align, model in models:
    path = workdir / f"prune_align_{how}_{align}.tflite"
    content = convert(model, "float32", output_path=path)
    prof = kslim.profile(model)
    rows.append({"model": name, "ratios": how, "align": align, "params": prof.total_params,
                 "macs_ratio": prof.total_macs / base.total_macs,
                 "tflite_kb": len(content) / 1024, "path": str(path),
                 "channels": [layer.filters for layer in model.layers
                              if isinstance(layer, keras.layers.Conv2D)
                              and not isinstance(layer, keras.layers.DepthwiseConv2D)]})
  measure_latency(rows[0]["path"], threads=1, runs=50)  # warm-up: the first one runs slow
  medians = np.full((_PASSES.value, len(rows)), np.inf)
  for p in tqdm.trange(_PASSES.value, desc=f"{name} timing passes"):
    for i, row in enumerate(rows):
      medians[p, i] = measure_latency(row["path"], threads=1, runs=_RUNS.value).median_ms
  best = medians.min(axis=0)
  for row, ms in zip(rows, best):
    row["latency_ms"] = float(ms)
    row["latency_ratio"] = float(ms / best[0])
    row["latency_vs_macs"] = row["latency_ratio"] / row["macs_ratio"]
  return rows


def main(argv):
  del argv
  quiet_tensorflow()
  rows = rows_for(_MODELS.value, _benchmark_model)
  print(format_table(
      ["model", "ratios", "align", "conv channels", "params", "MACs", "KB", "ms @1",
       "latency", "latency / MACs"],
      [[r["model"], r["ratios"], str(r["align"]), ",".join(map(str, r["channels"][:8])),
        f"{r['params']:,}", f"{r['macs_ratio']:.2f}x", f"{r['tflite_kb']:.1f}",
        f"{r['latency_ms']:.4f}", f"{r['latency_ratio']:.2f}x", f"{r['latency_vs_macs']:.2f}"]
       for r in rows]))
  write_results(_OUTPUT.value, "prune_align",
                f"5-epoch float baseline pruned by {_REDUCTION.value:.0%} of its MACs with "
                f"{_CRITERION.value}, uniform and sensitivity-derived ratios, at each channel "
                "alignment; no fine-tuning; float32 TFLite, 1 thread, smallest of "
                f"{_PASSES.value} passes' medians of {_RUNS.value} single-image runs", rows)


if __name__ == "__main__":
  app.run(main)
