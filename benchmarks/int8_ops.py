"""Benchmark: where int8 TFLite gains or loses time against float32, op by op, on this CPU.

For each model (its 5-epoch float baseline, cached by the pipeline) and the same model pruned
by --reduction of its MACs (bn_gamma, uniform ratio, channel counts multiples of --align, no
fine-tuning: the architecture the compression recipe ships): the float32 file and the int8
file (calibrated on 256 training images; a QAT model exports the same int8 kernels). Every op
of every file is cut out and timed with `tflite_tools.latency_table` (LiteRT with XNNPACK, 1
thread, in context, the smallest of --repeats passes), and each whole file end to end (the
smallest of --repeats medians of --runs single-image runs). The int8 and float32 files of one
model have the same ops in the same order, so each op's int8 / float32 time pairs up. A sweep
times a pair of 1x1 convolutions (14x14; the second reads --sweep_channels channels and writes
64) in both dtypes: the channel count from which int8 pays on this CPU.
Prints the per-op-kind totals and the slowest int8 ops against their float32 twins; writes
benchmarks/results/int8_ops.json and a plot of both files' per-op times
(benchmarks/results/int8_ops.png).

Usage: .venv/bin/python benchmarks/int8_ops.py [--models=mini_mobilenet_v2] [--align=16]
"""

import pathlib

from absl import app, flags
from ai_edge_litert import schema_py_generated as schema
import numpy as np

from _results import rows_for, write_results

import kslim
from kslim import _plot
from kslim import pipeline
from kslim._keras import keras
from kslim._table import format_table
from kslim.cli._common import quiet_tensorflow
from kslim.conversion import convert
from kslim.models import REFERENCE_MODELS
from tflite_tools import latency_table
from tflite_tools.benchmark_lib import measure_latency

_WORKDIR = flags.DEFINE_string("workdir", "runs/bench", "Cache and TFLite files.")
_OUTPUT = flags.DEFINE_string("output", "benchmarks/results/int8_ops.json", "JSON results.")
_MODELS = flags.DEFINE_list("models", ["reference_cnn", "mini_mobilenet_v2"],
                            f"Reference models, of {sorted(REFERENCE_MODELS)}.")
_REDUCTION = flags.DEFINE_float("reduction", 0.5, "Share of MACs the pruned variant removes.")
_ALIGN = flags.DEFINE_integer("align", 16, "Channel multiple of the pruned variant.",
                              lower_bound=1)
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timing passes; each time keeps its smallest.",
                                lower_bound=1)
_RUNS = flags.DEFINE_integer("runs", 200, "Timed runs per whole-file median.", lower_bound=1)
_SWEEP = flags.DEFINE_list("sweep_channels", ["8", "16", "32", "64", "128", "256"],
                           "Input channels of the 1x1-convolution sweep (empty: no sweep).")
_DTYPES = ("float32", "int8")


def _shapes(path):
  """Per op of a .tflite file's main graph: its input tensors' shapes and its output's shape."""
  fb = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
  graph = fb.subgraphs[0]
  def shape(i):
    return [int(d) for d in graph.tensors[i].shape]
  return [([shape(i) if i >= 0 else None for i in op.inputs], shape(op.outputs[0]))
          for op in graph.operators]


def _kind(op, inputs):
  """An op's kind for the totals: conv-like ops by kernel window (a 1-channel input, the stem
  of a grayscale model, apart), others by name."""
  if op not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
    return op
  kernel = inputs[1]  # CONV_2D: [out, h, w, in]; DEPTHWISE_CONV_2D: [1, h, w, channels]
  kind = f"{op} {kernel[1]}x{kernel[2]}"
  return kind + " (1-channel input)" if op == "CONV_2D" and inputs[0][-1] == 1 else kind


def _files(name):
  workdir = pathlib.Path(_WORKDIR.value) / name
  ctx = pipeline.run_stages(["baseline"], pipeline.Settings(model=name), workdir)
  (x_train, _), _ = ctx.data
  graph = kslim.pruning.DependencyGraph(ctx.model)
  ratio = kslim.pruning.uniform_ratio_for_flops(graph, _REDUCTION.value, "bn_gamma",
                                                _ALIGN.value)
  variants = [("unpruned", "unpruned", ctx.model),
              (f"-{_REDUCTION.value:.0%} MACs, align {_ALIGN.value}", "pruned",
               kslim.prune(ctx.model, ratio, "bn_gamma", _ALIGN.value))]
  files = {}
  for variant, stem, model in variants:
    for dtype in _DTYPES:
      path = workdir / f"int8_ops_{stem}_{dtype}.tflite"
      convert(model, dtype, representative_data=x_train[:256] if dtype == "int8" else None,
              output_path=path)
      files[(variant, dtype)] = path
  return files


def _benchmark_model(name):
  files = _files(name)
  op_models = [m for path in files.values() for m in latency_table.single_op_models(path)]
  table = latency_table.LatencyTable.measure(op_models, repeats=_REPEATS.value, cold=False)
  measure_latency(next(iter(files.values())), threads=1, runs=50)  # the first one runs slow
  whole = {key: min(measure_latency(path, threads=1, runs=_RUNS.value).median_ms
                    for _ in range(_REPEATS.value)) for key, path in files.items()}
  rows = []
  for variant in dict.fromkeys(v for v, _ in files):
    ops = {dtype: latency_table.op_signatures(files[(variant, dtype)]) for dtype in _DTYPES}
    if [o[1] for o in ops["float32"]] != [o[1] for o in ops["int8"]]:
      raise ValueError(f"{name} {variant}: the float32 and int8 files have different ops")
    shapes = _shapes(files[(variant, "float32")])
    for index, (f32, i8, (inputs, output)) in enumerate(zip(ops["float32"], ops["int8"],
                                                            shapes)):
      rows.append({"model": name, "variant": variant, "index": index, "op": f32[1],
                   "kind": _kind(f32[1], inputs), "output_shape": output,
                   "float32_us": 1e3 * table.entries[f32[0]]["ms"],
                   "int8_us": 1e3 * table.entries[i8[0]]["ms"]})
    estimate = {dtype: table.estimate(files[(variant, dtype)]).total_ms for dtype in _DTYPES}
    rows.append({"model": name, "variant": variant, "op": "whole file",
                 **{f"{dtype}_us": 1e3 * whole[(variant, dtype)] for dtype in _DTYPES},
                 **{f"{dtype}_estimate_us": 1e3 * estimate[dtype] for dtype in _DTYPES},
                 "overhead_us": 1e3 * table.overhead_ms})
  return rows


def _channel_sweep():
  """int8 against float32 time of a 1x1 convolution (14x14, 64 filters) per input channel
  count, behind a 1x1 convolution to that count: where int8 starts to pay on this CPU."""
  rows = []
  rng = np.random.default_rng(0)
  for channels in map(int, _SWEEP.value):
    inputs = keras.Input((14, 14, channels))
    hidden = keras.layers.Conv2D(channels, 1)(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(64, 1)(hidden))
    x = rng.random((64, 14, 14, channels), dtype=np.float32)
    files = {dtype: convert(model, dtype, representative_data=x if dtype == "int8" else None)
             for dtype in _DTYPES}
    rows.append({"model": "1x1 conv sweep", "input_channels": channels,
                 **{f"{dtype}_us": 1e3 * min(
                     measure_latency(bytes(content), threads=1, runs=_RUNS.value).median_ms
                     for _ in range(_REPEATS.value)) for dtype, content in files.items()}})
  return rows


def _kind_totals(rows):
  totals = {}
  for r in rows:
    if "kind" in r:
      key = (r["model"], r["variant"], r["kind"])
      f32, i8, count = totals.get(key, (0.0, 0.0, 0))
      totals[key] = (f32 + r["float32_us"], i8 + r["int8_us"], count + 1)
  return [{"model": m, "variant": v, "kind": k, "ops": n, "float32_us": f, "int8_us": i}
          for (m, v, k), (f, i, n) in totals.items()]


def _ratio(row):
  """int8 / float32 time, or "-" where the float32 op's time is within the overhead (0)."""
  return f"{row['int8_us'] / row['float32_us']:.2f}" if row["float32_us"] > 0 else "-"


def _figure(rows, path):
  groups = list(dict.fromkeys((r["model"], r["variant"]) for r in rows))
  figure, axes = _plot.subplots(len(groups), 1, figsize=(11, 3.2 * len(groups)), squeeze=False)
  for ax, (model, variant) in zip(axes[:, 0], groups):
    ops = [r for r in rows if (r["model"], r["variant"]) == (model, variant) and "kind" in r]
    x = np.arange(len(ops))
    for offset, dtype in ((-0.2, "float32"), (0.2, "int8")):
      ax.bar(x + offset, [r[f"{dtype}_us"] for r in ops], width=0.4, label=dtype)
    ax.set_xticks(x, [r["op"].replace("DEPTHWISE_CONV_2D", "DW").replace("CONV_2D", "CONV")
                      .replace("FULLY_CONNECTED", "FC") for r in ops],
                  rotation=60, fontsize="x-small")
    ax.set(title=f"{model}, {variant}", ylabel="us per op (1 thread)")
    ax.legend(fontsize="small")
  _plot.save(figure, path)
  print(f"wrote {path}")


def main(argv):
  del argv
  quiet_tensorflow()
  rows = rows_for(_MODELS.value, _benchmark_model)
  totals = _kind_totals(rows)
  print(format_table(
      ["model", "variant", "op kind", "ops", "float32 us", "int8 us", "int8 / float32"],
      [[t["model"], t["variant"], t["kind"], str(t["ops"]), f"{t['float32_us']:.1f}",
        f"{t['int8_us']:.1f}", _ratio(t)] for t in totals]
      + [[r["model"], r["variant"], "whole file (measured)", "", f"{r['float32_us']:.1f}",
          f"{r['int8_us']:.1f}", _ratio(r)]
         for r in rows if "kind" not in r]))
  slowest = sorted((r for r in rows if "kind" in r), key=lambda r: r["float32_us"] - r["int8_us"])
  print(format_table(
      ["model", "variant", "op", "kind", "output", "float32 us", "int8 us"],
      [[r["model"], r["variant"], str(r["index"]), r["kind"], str(r["output_shape"]),
        f"{r['float32_us']:.1f}", f"{r['int8_us']:.1f}"] for r in slowest[:8]]))
  sweep = _channel_sweep()
  if sweep:
    print(format_table(["1x1 conv, 14x14 -> 64 filters: input channels", "float32 us",
                        "int8 us", "int8 / float32"],
                       [[str(r["input_channels"]), f"{r['float32_us']:.1f}",
                         f"{r['int8_us']:.1f}", _ratio(r)] for r in sweep]))
  _figure(rows, pathlib.Path(_OUTPUT.value).with_suffix(".png"))
  write_results(_OUTPUT.value, "int8_ops",
                "5-epoch float baseline and the same pruned by "
                f"{_REDUCTION.value:.0%} of its MACs (bn_gamma, uniform, align {_ALIGN.value}, "
                "no fine-tuning); float32 and int8 (256 calibration images) TFLite; each op "
                "timed in context by tflite_tools.latency_table, whole files end to end; LiteRT "
                f"with XNNPACK, 1 thread, smallest of {_REPEATS.value} passes", rows,
                kind_totals=totals, channel_sweep=sweep)


if __name__ == "__main__":
  app.run(main)
