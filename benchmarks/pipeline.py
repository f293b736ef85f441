"""Benchmark: the full compression recipe as one YAML job, against a fair float baseline.

Per reference model: its cached 5-epoch float baseline (Adam 2e-3, batch 128) is the job's
input file. The float reference is that baseline fine-tuned --prune_epochs (cosine from
--prune_lr) then --qat_epochs (cosine from 2e-4) and exported as float32 TFLite. The job prunes
--flops_reduction of the baseline's MACs (--criterion, uniform ratios, or with --sensitive
per-layer ratios from a scan on 3,000 held-out training images; --reconstruction_images refits
the consumers by least squares, --sensitivity_refit refits inside the scan too, --align keeps
channel counts multiples of k; 0.56 by default: the int8 file carries ~8.5 KB of scales and
graph, so "-50% MACs" alone gives 6.5x, not 7x) and fine-tunes --prune_epochs with knowledge
distillation (soft labels, T=4; --teacher: the float reference by default, or the 5-epoch
baseline, whose constant-rate last epoch leaves it ~4 pt lower), then quantization-aware trains
--qat_epochs (distilling from the same teacher with --qat_distill) and exports int8 TFLite:
the same epochs and schedules as the float reference. Accuracy of every TFLite file on the
full 10,000-image test set; latency at 1 and 2 threads (median of --runs), sizes and ratios
against the fine-tuned float file, all in this run.
Targets: final int8 within 0.5 pt of the fine-tuned float, >= 7x smaller, >= 3x faster at 1
thread. Prints a table; writes benchmarks/results/pipeline.json and pipeline.png; the job's
own report and stages are in --workdir/<model>/job (resumable).

Usage: .venv/bin/python benchmarks/pipeline.py [--models=reference_cnn] [--flops_reduction=0.56]
         [--prune_epochs=4] [--teacher=float|baseline] [--criterion=fpgm] [--prune_lr=3e-3]
         [--qat_distill]
"""

import pathlib

from absl import app, flags
import yaml

from _results import rows_for, write_results

from kslim import pipeline
from kslim._keras import keras
from kslim.cli._common import quiet_tensorflow
from kslim.conversion import convert
from kslim.profiling import profile
from kslim.training import accuracy, finetune_schedule, fit_classifier
from tflite_tools.benchmark_lib import measure_latency
from tflite_tools.runner import TFLiteRunner

_MODELS = flags.DEFINE_list("models", ["reference_cnn"], "Reference models.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/bench", "Caches, jobs and TFLite files.")
_OUTPUT = flags.DEFINE_string("output", "benchmarks/results/pipeline.json", "JSON results.")
_FLOPS_REDUCTION = flags.DEFINE_float("flops_reduction", 0.56, "Share of MACs pruned.")
_PRUNE_EPOCHS = flags.DEFINE_integer("prune_epochs", 4, "KD fine-tuning epochs after pruning.")
_CRITERION = flags.DEFINE_enum("criterion", "fpgm", ["l1", "l2", "fpgm", "bn_gamma", "opt_slim"],
                               "Pruning criterion.")
_PRUNE_LR = flags.DEFINE_float("prune_lr", 3e-3, "Peak learning rate of the fine-tuning after "
                               "pruning (cosine decay); the float reference gets the same.")
_QAT_EPOCHS = flags.DEFINE_integer("qat_epochs", 1, "Quantization-aware training epochs.")
_QAT_DISTILL = flags.DEFINE_bool("qat_distill", False, "Distill from the same teacher during "
                                  "QAT too (soft labels, T=4).")
_TEACHER = flags.DEFINE_enum("teacher", "float", ["baseline", "float"], "KD teacher of the "
                             "pruned model: the job's 5-epoch input, or the float reference "
                             "(the baseline fine-tuned the job's epochs).")
_SENSITIVE = flags.DEFINE_bool("sensitive", False, "Per-layer ratios from a sensitivity scan "
                                "(on 3,000 held-out training images) instead of a uniform ratio.")
_RECONSTRUCTION = flags.DEFINE_integer(
    "reconstruction_images", 0, "When > 0, the pruned model's consumers are refitted by least "
    "squares on this many training images before fine-tuning.", lower_bound=0)
_SENSITIVITY_REFIT = flags.DEFINE_bool(
    "sensitivity_refit", False, "With --sensitive and --reconstruction_images: the scan refits "
    "every scanned prune before evaluating it.")
_ALIGN = flags.DEFINE_integer("align", 1, "Keep pruned channel counts multiples of this.",
                              lower_bound=1)
_RUNS = flags.DEFINE_integer("runs", 200, "Timed runs per latency measurement.")
_THREADS = (1, 2)


def _distill(teacher):
  return {"teacher": teacher, "losses": ["soft_label"], "temperature": 4.0}


def _job(baseline_path, teacher):
  return {
      "model": {"file": str(baseline_path)},
      "dataset": "fashion_mnist",
      "strategies": [
          {"prune": {"criterion": _CRITERION.value, "flops_reduction": _FLOPS_REDUCTION.value,
                     "sensitive": _SENSITIVE.value, "held_out": 3000, "align": _ALIGN.value,
                     "reconstruction_images": _RECONSTRUCTION.value,
                     "sensitivity_refit": _SENSITIVITY_REFIT.value,
                     "fine_tune_epochs": _PRUNE_EPOCHS.value, "learning_rate": _PRUNE_LR.value,
                     "distill": _distill(teacher)}},
          {"quantize": {"epochs": _QAT_EPOCHS.value, "learning_rate": 2e-4,
                        **({"distill": _distill(teacher)} if _QAT_DISTILL.value else {})}},
          {"benchmark": {"threads": list(_THREADS), "runs": _RUNS.value}},
      ]}


def _float_reference(baseline, data, path):
  """The baseline fine-tuned with the job's extra epochs and schedules, as float32 TFLite."""
  (x_train, y_train), _ = data
  if not path.exists():
    model = keras.models.clone_model(baseline)
    model.set_weights(baseline.get_weights())
    for epochs, rate in ((_PRUNE_EPOCHS.value, _PRUNE_LR.value), (_QAT_EPOCHS.value, 2e-4)):
      fit_classifier(model, x_train, y_train, epochs,
                     learning_rate=finetune_schedule(rate, epochs, len(x_train)))
    convert(model, "float32", output_path=path)
    model.save(path.with_suffix(".keras"))
  return keras.models.load_model(path.with_suffix(".keras"))


def _benchmark_model(name):
  workdir = pathlib.Path(_WORKDIR.value) / name
  ctx = pipeline.run_stages(["baseline"], pipeline.Settings(model=name), workdir)
  baseline_path = workdir / "cache" / f"{ctx.settings.baseline_key()}.keras"
  suffix = f"ft{_PRUNE_EPOCHS.value}+{_QAT_EPOCHS.value}_lr{_PRUNE_LR.value:g}"
  float_path = workdir / f"pipeline_float_{suffix}.tflite"
  float_model = _float_reference(ctx.model, ctx.data, float_path)
  job_dir = workdir / "job"
  job_dir.mkdir(parents=True, exist_ok=True)
  teacher = "baseline" if _TEACHER.value == "baseline" else str(float_path.with_suffix(".keras"))
  config = _job(baseline_path, teacher)
  (job_dir / "job.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
  report = pipeline.run(str(job_dir / "job.yaml"), job_dir)
  _, (x_test, y_test) = ctx.data
  float_row = {
      "stage": f"fp32 fine-tuned {_PRUNE_EPOCHS.value}+{_QAT_EPOCHS.value} epochs",
      "accuracy": accuracy(TFLiteRunner(float_path).predict(x_test), y_test),
      "params": profile(float_model).total_params, "macs": profile(float_model).total_macs,
      "tflite_kb": float_path.stat().st_size / 1024,
      "latency_ms": {str(t): measure_latency(float_path, threads=t, runs=_RUNS.value).median_ms
                     for t in _THREADS}}
  rows = [{"model": name, **float_row}]
  for r in report["rows"]:
    rows.append({"model": name, "stage": f"job {r['stage']}", "accuracy": r["accuracy"],
                 "params": r["params"], "macs": r["macs"], "tflite_kb": r["tflite_kb"],
                 "latency_ms": r["latency_ms"]})
  for r in rows:
    r["delta_points"] = 100 * (r["accuracy"] - float_row["accuracy"])
    r["smaller"] = float_row["tflite_kb"] / r["tflite_kb"]
    r["faster"] = {t: float_row["latency_ms"][t] / r["latency_ms"][t] for t in r["latency_ms"]}
  final = rows[-1]
  final["targets"] = {"within_0.5_pt": final["delta_points"] >= -0.5,
                      "7x_smaller": final["smaller"] >= 7.0,
                      "3x_faster_1_thread": final["faster"]["1"] >= 3.0}
  return rows


def _allocation():
  """The job's pruning ratios, refit and alignment, in words."""
  words = ["sensitivity scan" + (" with refit" if _SENSITIVITY_REFIT.value else "")
           if _SENSITIVE.value else "uniform"]
  if _RECONSTRUCTION.value:
    words.append(f"LS refit on {_RECONSTRUCTION.value:,} images")
  if _ALIGN.value > 1:
    words.append(f"channels multiples of {_ALIGN.value}")
  return ", ".join(words)


def main(argv):
  del argv
  quiet_tensorflow()
  rows = rows_for(_MODELS.value, _benchmark_model)
  table_rows = [pipeline.Row(
      stage=f"{r['model']} {r['stage']}", kind="", keras_accuracy=r["accuracy"],
      tflite_accuracy=r["accuracy"], params=r["params"], macs=r["macs"],
      tflite_kb=r["tflite_kb"], tflite_file=None, latency_ms=r["latency_ms"]) for r in rows]
  for model in _MODELS.value:  # one table each: ratios are against that model's float file
    print(pipeline.report.job_table([row for row, r in zip(table_rows, rows)
                                     if r["model"] == model]))
  for r in rows:
    if "targets" in r:
      print(f"{r['model']}: {r['delta_points']:+.2f} pt, {r['smaller']:.2f}x smaller, "
            f"{r['faster']['1']:.2f}x faster at 1 thread; targets {r['targets']}")
  write_results(_OUTPUT.value, "pipeline",
                f"5-epoch float baseline; job: prune {_FLOPS_REDUCTION.value:.0%} MACs "
                f"({_CRITERION.value}, {_allocation()}) + {_PRUNE_EPOCHS.value} KD epochs "
                f"({_PRUNE_LR.value:g} cosine, teacher: {_TEACHER.value}), QAT "
                f"{_QAT_EPOCHS.value} epoch(s) (2e-4 cosine{', KD' if _QAT_DISTILL.value else ''})"
                ", int8 TFLite; float reference fine-tuned the same epochs and schedules; "
                "ratios vs the fine-tuned float32 TFLite file, same run", rows)
  pipeline.report.plot_rows(table_rows, pathlib.Path(_OUTPUT.value).with_suffix(".png"))


if __name__ == "__main__":
  app.run(main)
