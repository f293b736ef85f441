"""Benchmark: post-training quantization, every TFLite mode and every calibrator, side by side.

For each model (its 5-epoch float baseline, cached by the pipeline): float32, float16,
dynamic-range, int16x8 (TFLite's min/max calibration) and int8 with TFLite's ``minmax`` and
kslim's ``percentile``, ``kl`` and ``mse`` calibrators, with and without bias correction, and
min/max ranges through kslim's path (percentile 100), which tells the converter path's
effect from the ranges'. ``standardized_cnn`` is the heavy-tailed model: a per-pixel
Normalization layer in front of the reference CNN (see `kslim.models.standardized_cnn`).
Calibration uses the first --num_samples training images. Accuracy is measured from each
TFLite file on the full 10,000-image test set; size; latency at 1 thread (median) as a ratio to
the float32 file measured in the same run. Prints a table and the issue's targets, and writes
benchmarks/results/ptq.json.

Usage: .venv/bin/python benchmarks/ptq.py [--models=reference_cnn,standardized_cnn]
           [--num_samples=512]
"""

import pathlib

from absl import app, flags, logging

from _results import rows_for, write_results

from kslim import pipeline
from kslim._table import format_table
from kslim.cli._common import quiet_tensorflow
from kslim.conversion import convert
from kslim.models import REFERENCE_MODELS
from kslim.profiling import profile
from kslim.training import accuracy
from tflite_tools.benchmark_lib import measure_latency
from tflite_tools.runner import TFLiteRunner

_WORKDIR = flags.DEFINE_string("workdir", "runs/bench", "Cache and TFLite files.")
_OUTPUT = flags.DEFINE_string("output", "benchmarks/results/ptq.json", "JSON results.")
_MODELS = flags.DEFINE_list("models", ["reference_cnn", "mini_mobilenet_v2", "plain_cnn",
                                       "standardized_cnn"],
                            f"Reference models, of {sorted(REFERENCE_MODELS)}.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 512, "Calibration examples.",
                                    lower_bound=32)
_VARIANTS = flags.DEFINE_list("variants", None, "Run only these variants (default: all).")

# name -> kslim.convert keyword arguments.
VARIANTS = {
    "float32": {"mode": "float32"},
    "float16": {"mode": "float16"},
    "dynamic": {"mode": "dynamic"},
    "int16x8 minmax": {"mode": "int16x8"},
    "int8 minmax (TFLite)": {"mode": "int8"},
    "int8 minmax via kslim": {"mode": "int8", "calibration": "percentile",
                              "percentile": 100.0},
    "int8 percentile": {"mode": "int8", "calibration": "percentile"},
    "int8 kl": {"mode": "int8", "calibration": "kl"},
    "int8 mse": {"mode": "int8", "calibration": "mse"},
    "int8 minmax + bias corr.": {"mode": "int8", "bias_correction": True},
    "int8 percentile + bias corr.": {"mode": "int8", "calibration": "percentile",
                                     "bias_correction": True},
    "int8 mse + bias corr.": {"mode": "int8", "calibration": "mse", "bias_correction": True},
}
_HEAVY_TAILED = "standardized_cnn"
_CLEARLY = 0.01  # "clearly better than minmax": at least 1 point
_KSLIM_INT8 = [name for name, kwargs in VARIANTS.items()
               if kwargs["mode"] == "int8" and name != "int8 minmax (TFLite)"]


def _benchmark_model(name):
  workdir = pathlib.Path(_WORKDIR.value) / name
  settings = pipeline.Settings(model=name, threads=(1,), latency_runs=200)
  ctx = pipeline.run_stages(["baseline"], settings, workdir)
  (x_train, _), (x_test, y_test) = ctx.data
  calibration_data = x_train[:_NUM_SAMPLES.value]
  prof = profile(ctx.model)
  rows, float_ms = [], None
  for variant, kwargs in VARIANTS.items():
    if _VARIANTS.value and variant not in _VARIANTS.value and variant != "float32":
      continue
    logging.info("%s: %s", name, variant)
    path = workdir / f"ptq_{variant.split(' (')[0].replace(' ', '_').replace('.', '')}.tflite"
    integer = kwargs["mode"] in ("int8", "int16x8")
    content = convert(ctx.model, **kwargs, output_path=path, num_samples=_NUM_SAMPLES.value,
                      representative_data=calibration_data if integer else None,
                      **({"io_dtype": "float32"} if integer else {}))
    latency = measure_latency(path, threads=1, runs=200).median_ms
    float_ms = float_ms or latency  # float32 runs first: every ratio is against it
    rows.append({"stage": f"{name} {variant}", "model": name, "variant": variant,
                 "tflite_accuracy": accuracy(TFLiteRunner(content).predict(x_test), y_test),
                 "params": prof.total_params, "macs": prof.total_macs,
                 "tflite_kb": len(content) / 1024, "tflite_file": str(path),
                 "latency_ms": {"1": latency},
                 "latency_ratio": latency / float_ms,
                 "float_ops": len(content.report.float_ops)})
  return rows


def _targets(rows):
  """The issue's targets, per model: (model, target, measured, met)."""
  checks = []
  for model in dict.fromkeys(r["model"] for r in rows):
    acc = {r["variant"]: r["tflite_accuracy"] for r in rows if r["model"] == model}
    fp32 = acc["float32"]
    kslim = {v: acc[v] for v in _KSLIM_INT8 if v in acc}
    if kslim:
      best_name = max(kslim, key=kslim.get)
      best = kslim[best_name]
      checks.append((model, "best kslim int8 within 0.3 pt of fp32",
                     f"{best_name}: {best - fp32:+.2%}", best >= fp32 - 0.003))
      if "int8 minmax (TFLite)" in acc:
        margin = _CLEARLY if model == _HEAVY_TAILED else 0.0
        checks.append((model, f"best kslim int8 >= TFLite minmax + {margin:.0%}",
                       f"{best - acc['int8 minmax (TFLite)']:+.2%}",
                       best >= acc["int8 minmax (TFLite)"] + margin))
    for variant, tolerance in (("float16", 0.0005), ("dynamic", 0.002)):
      if variant in acc:
        checks.append((model, f"{variant} within {tolerance:.2%} of fp32",
                       f"{acc[variant] - fp32:+.2%}", acc[variant] >= fp32 - tolerance))
  return checks


def main(argv):
  del argv
  quiet_tensorflow()
  rows = rows_for(_MODELS.value, _benchmark_model)
  print(format_table(
      ["variant", "TFLite acc", "KB", "ms @1", "x float32", "float ops"],
      [[r["stage"], f"{r['tflite_accuracy']:.2%}", f"{r['tflite_kb']:.1f}",
        f"{r['latency_ms']['1']:.3f}", f"{r['latency_ratio']:.2f}", str(r["float_ops"])]
       for r in rows]))
  checks = _targets(rows)
  print(format_table(["model", "target", "measured", "met"],
                     [[m, t, value, "yes" if ok else "NO"] for m, t, value, ok in checks]))
  write_results(_OUTPUT.value, "ptq",
                f"5-epoch float baselines; calibration on the first {_NUM_SAMPLES.value} "
                "training images; TFLite accuracy on the full 10,000-image test set; median "
                "latency of 200 single-image runs, 1 thread, ratio to the float32 file",
                rows, targets=[{"model": m, "target": t, "measured": value, "met": ok}
                               for m, t, value, ok in checks])


if __name__ == "__main__":
  app.run(main)
