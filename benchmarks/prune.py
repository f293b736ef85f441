"""Benchmark: structured pruning, uniform vs sensitivity-derived ratios, every criterion.

For each model (its 5-epoch float baseline, cached by the pipeline): the unpruned model
fine-tuned --extra_epochs (the fair baseline), then for each MACs reduction (--reductions) and
each criterion, the model pruned with a uniform ratio and with sensitivity-derived ratios
(a scan per criterion, ratios 0.1-0.7, on the last 3,000 training images, cached and resumable), each fine-tuned
the same epochs with the same schedule (Adam, cosine decay from --learning_rate, batch 128);
with --reconstruction_images, each also with its consumers refitted by least squares first
(--noplain: only refitted). --allocations picks uniform ratios, sensitivity-derived ones, and
sensitivity_refit: ratios from a scan that refits each scanned prune (its own cache).
--fine_tune=plain,kd also fine-tunes each pruned variant by distillation from the fair unpruned
model of its seed (soft labels, T=4, plus the labels), side by side.
Accuracy from each float32 TFLite file on the full 10,000-image test set; params, MACs, TFLite
size, and latency (LiteRT, 1 thread, median of 200 runs, all files measured at the end in one
loop) as a ratio to the unpruned file. Also tries kerassurgeon's channel deletion on the same
channels, if it is installed. Prints a table, writes benchmarks/results/prune.json and a plot
of accuracy against MACs (benchmarks/results/prune.png).

Usage: .venv/bin/python benchmarks/prune.py [--models=reference_cnn] [--criteria=l1,fpgm]
  prune_reconstruct.json: --criteria=bn_gamma,fpgm --reductions=0.5 --learning_rate=3e-3
      --reconstruction_images=2000 --output=benchmarks/results/prune_reconstruct.json
  prune_3ep_<model>.json: --models=<model> --criteria=bn_gamma --reductions=0.5
      --learning_rate=3e-3 --extra_epochs=3 --reconstruction_images=2000 --noplain
      --seeds=0,1,2 --output=benchmarks/results/prune_3ep_<model>.json
  prune_3ep_refit_scan_<model>.json: the same with --allocations=sensitivity_refit
      --output=benchmarks/results/prune_3ep_refit_scan_<model>.json
  prune_3ep_kd_align16.json: --models=reference_cnn,mini_mobilenet_v2 --criteria=bn_gamma
      --reductions=0.5 --learning_rate=3e-3 --extra_epochs=3 --reconstruction_images=2000
      --noplain --allocations=sensitivity_refit --align=16 --fine_tune=plain,kd --seeds=0,1,2
      --output=benchmarks/results/prune_3ep_kd_align16.json
  prune_3ep_kd_mini_mobilenet_v2.json: --models=mini_mobilenet_v2 and --fine_tune=kd, unaligned,
      otherwise as prune_3ep_kd_align16.json
  prune_3ep_align16_reference_cnn.json, prune_3ep_align16_kd_mini_mobilenet_v2.json: as
      prune_3ep_kd_align16.json, one model each, --fine_tune=plain and --fine_tune=kd, after
      ratios_for_flops began giving channels back
"""

import pathlib

from absl import app, flags, logging
import numpy as np

from _results import rows_for, write_results
import _sensitivity

import kslim
from kslim import _plot
from kslim import distill
from kslim import pipeline
from kslim._table import format_table
from kslim._keras import keras
from kslim.cli._common import quiet_tensorflow
from kslim.conversion import convert
from kslim.models import REFERENCE_MODELS
from kslim.pruning.criteria import Criterion
from kslim.training import accuracy, finetune_schedule, fit_classifier
from tflite_tools.benchmark_lib import measure_latency
from tflite_tools.runner import TFLiteRunner

_WORKDIR = flags.DEFINE_string("workdir", "runs/bench", "Cache and TFLite files.")
_OUTPUT = flags.DEFINE_string("output", "benchmarks/results/prune.json", "JSON results.")
_MODELS = flags.DEFINE_list("models", ["reference_cnn", "mini_mobilenet_v2"],
                            f"Reference models, of {sorted(REFERENCE_MODELS)}.")
_CRITERIA = flags.DEFINE_list("criteria", [c.value for c in Criterion], "Criteria to compare.")
_REDUCTIONS = flags.DEFINE_list("reductions", ["0.3", "0.5"], "Shares of MACs to remove.")
_EXTRA_EPOCHS = flags.DEFINE_integer("extra_epochs", 1, "Fine-tuning epochs per variant.",
                                     lower_bound=1)
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 1e-3, "Peak fine-tuning learning rate.")
_RECONSTRUCTION = flags.DEFINE_integer(
    "reconstruction_images", 0, "When > 0, every pruned variant is also run with its "
    "consumers refitted by least squares on this many training images (kslim.prune's "
    "reconstruction_images), side by side.", lower_bound=0)
_PLAIN = flags.DEFINE_bool(
    "plain", True, "With --reconstruction_images, also run every variant without the refit "
    "(--noplain runs only the refitted ones).")
_ALLOCATIONS = flags.DEFINE_list(
    "allocations", ["uniform", "sensitivity"], "How the ratios are chosen: a uniform ratio "
    "(uniform), per-layer ratios from a plain sensitivity scan (sensitivity), or from a scan "
    "that refits every pruned model by least squares before evaluating it (sensitivity_refit, "
    "needs --reconstruction_images).")
_KINDS = ("uniform", "sensitivity", "sensitivity_refit")
flags.register_validator("allocations", lambda value: set(value) <= set(_KINDS),
                         f"--allocations takes some of {', '.join(_KINDS)}")
flags.register_multi_flags_validator(
    ["allocations", "reconstruction_images"],
    lambda v: "sensitivity_refit" not in v["allocations"] or v["reconstruction_images"] > 0,
    "--allocations=sensitivity_refit needs --reconstruction_images")
_ALIGN = flags.DEFINE_integer("align", 1, "Keep pruned channel counts multiples of this "
                               "(kslim.prune's align).", lower_bound=1)
_FINE_TUNE = flags.DEFINE_list(
    "fine_tune", ["plain"], "How each pruned variant is fine-tuned: on the labels (plain), or "
    "distilled (kd: soft labels at T=4 plus the labels) from the unpruned model fine-tuned the "
    "same epochs with the same seed, the fair baseline it is compared with.")
flags.register_validator("fine_tune", lambda value: value and set(value) <= {"plain", "kd"},
                         "--fine_tune takes plain and/or kd")
_SEEDS = flags.DEFINE_list(
    "seeds", ["0"], "Fine-tuning seeds (shuffling order). With several, every variant and the "
    "unpruned model are fine-tuned once per seed, each compared with the unpruned model of its "
    "own seed, and the targets use the mean over seeds.")


def _fine_tune(model, x, y, seed, teacher=None):
  """Fine-tunes `model` in place on the labels, or distilled from `teacher` when given."""
  schedule = finetune_schedule(_LEARNING_RATE.value, _EXTRA_EPOCHS.value, len(x))
  if teacher is None:
    fit_classifier(model, x, y, _EXTRA_EPOCHS.value, learning_rate=schedule, seed=seed)
    return model
  keras.utils.set_random_seed(seed)
  distiller = distill.Distiller(model, teacher, [distill.SoftLabel(temperature=4.0)])
  distill.fit_distiller(distiller, x, y, _EXTRA_EPOCHS.value, learning_rate=schedule)
  return model


def _refit_choices():
  if not _RECONSTRUCTION.value:
    return (False,)
  return (False, True) if _PLAIN.value else (True,)


def _copy(model):
  return kslim.prune(model, {})  # a rebuilt copy with the same weights


def _kerassurgeon(model, graph, plan, x):
  """Deletes the same channels with kerassurgeon; the max output difference, or why it failed."""
  try:
    from kerassurgeon import Surgeon  # pylint: disable=import-outside-toplevel
  except ImportError:
    return "not installed"
  try:
    surgeon = Surgeon(model, copy=True)
    for name, classes in plan.removed.items():
      surgeon.add_job("delete_channels", model.get_layer(name), channels=list(map(int, classes)))
    deleted = surgeon.operate()
  except Exception as error:  # pylint: disable=broad-except
    return f"failed: {type(error).__name__}: {str(error)[:120]}"
  reference = kslim.pruning.surgery.rebuild(graph, plan.roots())
  return float(np.max(np.abs(deleted.predict(x, verbose=0) - reference.predict(x, verbose=0))))


def _benchmark_model(name):
  workdir = pathlib.Path(_WORKDIR.value) / name
  settings = pipeline.Settings(model=name, threads=(1,), latency_runs=200)
  ctx = pipeline.run_stages(["baseline"], settings, workdir)
  (x_train, y_train), (x_test, y_test) = ctx.data
  baseline = ctx.model
  graph = kslim.pruning.DependencyGraph(baseline)
  base_macs = graph.macs()
  seeds = [int(seed) for seed in _SEEDS.value]
  variants = [("fp32 fine-tuned", seed, _fine_tune(_copy(baseline), x_train, y_train, seed), {})
              for seed in seeds]
  fair_models = {seed: model for _, seed, model, _ in variants}
  surgeon = None

  def ratios_for(how, criterion, reduction):
    if how == "uniform":
      return kslim.pruning.uniform_ratio_for_flops(graph, reduction, criterion, _ALIGN.value)
    sens = _sensitivity.scan(baseline, x_train, y_train, workdir, criterion,
                             _RECONSTRUCTION.value if how == "sensitivity_refit" else 0)
    return kslim.pruning.ratios_for_flops(sens, reduction, align=_ALIGN.value)

  for criterion in _CRITERIA.value:
    for reduction in map(float, _REDUCTIONS.value):
      for how in _ALLOCATIONS.value:
        ratios = ratios_for(how, criterion, reduction)
        label = f"{criterion} {how} -{reduction:.0%} MACs"
        logging.info("%s: %s", name, label)
        plan = kslim.pruning.plan(graph, ratios, criterion, _ALIGN.value)
        if surgeon is None:
          surgeon = _kerassurgeon(baseline, graph, plan, x_test[:256])
        for refit in _refit_choices():
          pruned = kslim.pruning.surgery.rebuild(graph, plan.roots())
          if refit:
            kslim.pruning.reconstruct(graph, plan.roots(), pruned,
                                      x_train[:_RECONSTRUCTION.value])
          zero_shot = accuracy(pruned.predict(x_test, batch_size=1000, verbose=0), y_test)
          for how_tuned in _FINE_TUNE.value:
            extra = {"criterion": criterion, "ratios": how, "target_reduction": reduction,
                     "reconstruction": refit, "fine_tune": how_tuned,
                     "accuracy_before_fine_tune": zero_shot}
            variants += [(label + (" + LS refit" if refit else "")
                          + (" + KD" if how_tuned == "kd" else ""), seed,
                          _fine_tune(_copy(pruned), x_train, y_train, seed,
                                     fair_models[seed] if how_tuned == "kd" else None), extra)
                         for seed in seeds]
  rows = []
  paths = []
  for label, seed, model, extra in variants:
    stage = f"{label} seed {seed}" if len(seeds) > 1 else label
    # Named after the JSON, so the files of two result sets never overwrite each other.
    stem = pathlib.Path(_OUTPUT.value).stem
    path = workdir / f"{stem}_{stage.replace(' ', '_').replace('%', '')}.tflite"
    content = convert(model, "float32", output_path=path)
    prof = kslim.profile(model)
    rows.append({"stage": f"{name} {stage}", "model": name, "variant": label, "seed": seed,
                 **extra,
                 "tflite_accuracy": accuracy(TFLiteRunner(content).predict(x_test), y_test),
                 "params": prof.total_params, "macs": prof.total_macs,
                 "macs_ratio": prof.total_macs / base_macs, "tflite_kb": len(content) / 1024,
                 "tflite_file": str(path)})
    paths.append(path)
  measure_latency(paths[0], threads=1, runs=50)  # warm-up: the first measurement runs slow
  fair = {row["seed"]: row for row in rows if "criterion" not in row}
  for row, path in zip(rows, paths):
    row["latency_ms"] = {"1": measure_latency(path, threads=1, runs=200).median_ms}
    row["latency_ratio"] = row["latency_ms"]["1"] / rows[0]["latency_ms"]["1"]
    row["delta_vs_fair_fp32"] = row["tflite_accuracy"] - fair[row["seed"]]["tflite_accuracy"]
  rows[0]["kerassurgeon"] = surgeon
  return rows


def _figure(rows, path):
  models = sorted({r["model"] for r in rows})
  figure, axes = _plot.subplots(1, len(models), figsize=(6 * len(models), 4.5),
                                squeeze=False)
  for ax, model in zip(axes[0], models):
    mine = [r for r in rows if r["model"] == model]
    ax.axhline(100 * np.mean([r["tflite_accuracy"] for r in mine if "criterion" not in r]),
               color="gray", linestyle="--", label="unpruned, fine-tuned (mean over seeds)")
    for how, marker in zip(_KINDS, "os^"):
      for index, criterion in enumerate(_CRITERIA.value):
        for refit, tuned in sorted({(r["reconstruction"], r["fine_tune"]) for r in mine
                                    if "criterion" in r}):
          points = [r for r in mine if r.get("ratios") == how
                    and r.get("criterion") == criterion and r.get("reconstruction") == refit
                    and r.get("fine_tune") == tuned]
          if not points:
            continue
          ax.plot([r["macs_ratio"] for r in points],
                  [100 * r["tflite_accuracy"] for r in points], marker=marker,
                  color=f"C{index + 5 * (tuned == 'kd')}",
                  fillstyle="none" if refit else "full", linestyle="none",
                  label=f"{criterion} {how}" + (" + LS refit" if refit else "")
                  + (" + KD" if tuned == "kd" else ""))
    ax.set(title=model, xlabel="MACs (share of the unpruned model)",
           ylabel="TFLite test accuracy (%)")
    ax.legend(fontsize="x-small", ncol=2)
  _plot.save(figure, path)
  print(f"wrote {path}")


def _means(rows):
  """Per model and variant: the mean accuracy and mean (and std) of the per-seed differences
  from the fair float model, over the seeds it ran with."""
  groups = {}
  for r in rows:
    groups.setdefault((r["model"], r["variant"]), []).append(r)
  return [{"model": model, "variant": variant, "seeds": len(group),
           "target_reduction": group[0].get("target_reduction"),
           "accuracy": float(np.mean([r["tflite_accuracy"] for r in group])),
           "delta": float(np.mean([r["delta_vs_fair_fp32"] for r in group])),
           "delta_std": float(np.std([r["delta_vs_fair_fp32"] for r in group]))}
          for (model, variant), group in groups.items()]


def _wins(rows, key, before, after):
  """'k/n': in how many of n pairs of variants differing only in `key` (`before` -> `after`)
  the `after` one is more accurate."""
  same = ("criterion", "ratios", "reconstruction", "fine_tune", "target_reduction", "seed")
  pairs = [(a, b) for a in rows if a.get(key) == before for b in rows if b.get(key) == after
           and all(a.get(k) == b.get(k) for k in same if k != key)]
  return f"{sum(b['tflite_accuracy'] > a['tflite_accuracy'] for a, b in pairs)}/{len(pairs)}"


def main(argv):
  del argv
  quiet_tensorflow()
  rows = rows_for(_MODELS.value, _benchmark_model)
  print(format_table(
      ["variant", "acc before FT", "TFLite acc", "vs fair fp32", "params", "MACs", "KB",
       "ms @1", "x unpruned"],
      [[r["stage"], f"{r['accuracy_before_fine_tune']:.2%}" if "criterion" in r else "-",
        f"{r['tflite_accuracy']:.2%}", f"{100 * r['delta_vs_fair_fp32']:+.2f} pt",
        f"{r['params']:,}", f"{r['macs_ratio']:.2f}x", f"{r['tflite_kb']:.1f}",
        f"{r['latency_ms']['1']:.3f}", f"{r['latency_ratio']:.2f}"] for r in rows]))
  means = _means(rows)
  if len(_SEEDS.value) > 1:
    print(format_table(["variant", "seeds", "mean TFLite acc", "mean vs fair fp32 (std)"],
                       [[f"{m['model']} {m['variant']}", str(m["seeds"]),
                         f"{m['accuracy']:.2%}",
                         f"{100 * m['delta']:+.2f} pt ({100 * m['delta_std']:.2f})"]
                        for m in means]))
  targets = {}
  for model in _MODELS.value:
    mine = [r for r in rows if r["model"] == model and "criterion" in r]
    best_half = max((m for m in means if m["model"] == model
                     and m.get("target_reduction") == 0.5),
                    key=lambda m: m["delta"], default=None)
    if best_half is not None:
      targets[f"{model}: best -50% MACs within 0.5 pt of fair fp32 (mean over seeds)"] = (
          best_half["variant"], round(100 * best_half["delta"], 2), best_half["delta"] >= -0.005)
    for before, after in (("uniform", "sensitivity"), ("sensitivity", "sensitivity_refit")):
      if {before, after} <= set(_ALLOCATIONS.value):
        targets[f"{model}: {after} beats {before}"] = _wins(mine, "ratios", before, after)
    if len(_FINE_TUNE.value) > 1:
      targets[f"{model}: KD fine-tuning beats plain"] = _wins(mine, "fine_tune", "plain", "kd")
    if _RECONSTRUCTION.value and _PLAIN.value:
      targets[f"{model}: LS refit beats plain pruning"] = _wins(mine, "reconstruction", False,
                                                                True)
  for key, value in targets.items():
    print(f"{key}: {value}")
  _figure(rows, pathlib.Path(_OUTPUT.value).with_suffix(".png"))
  write_results(_OUTPUT.value, "prune",
                f"5-epoch float baseline; each variant fine-tuned {_EXTRA_EPOCHS.value} extra "
                f"epoch(s) (Adam, cosine decay from {_LEARNING_RATE.value:g}, batch 128), the "
                "unpruned model too; "
                + (f"LS refit: consumers refitted by least squares on {_RECONSTRUCTION.value:,} "
                   "training images before fine-tuning; " if _RECONSTRUCTION.value else "")
                + (f"fine-tuning seeds {', '.join(_SEEDS.value)}, each variant against the "
                   "unpruned model of its seed; " if len(_SEEDS.value) > 1 else "")
                + (f"channel counts multiples of {_ALIGN.value}; " if _ALIGN.value > 1 else "")
                + ("KD: distilled (soft labels, T=4, plus the labels) from the fair unpruned "
                   "model of the same seed; " if "kd" in _FINE_TUNE.value else "")
                + "float32 TFLite accuracy on the full 10,000-image test set; "
                "median latency of 200 single-image runs, 1 thread", rows, targets=targets,
                **({"means": means} if len(_SEEDS.value) > 1 else {}))


if __name__ == "__main__":
  app.run(main)
