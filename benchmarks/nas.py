"""Benchmark: architecture search on Fashion-MNIST at budgets a 2-core CPU affords.

Three parts, each cached in --workdir (an interrupted run resumes part by part; the token
searches and supernets also resume from their own checkpoints there):
  1. Token search, MobileNetV2 space, MACs <= --macs_budget: SA (initial temperature
     --sa_temperature: 0.005, where 0.03 accepted most worse moves of a few hundredths), RL
     (normalized advantages) and random search with the same number of trials (--trials) for
     each controller seed (--seeds; the best held-out accuracy is averaged over seeds, and
     each seed is compared with random search's). A trial trains 1 epoch on --trial_images
     training images (the same training seed for every candidate) and scores held-out
     accuracy on the last 2,000 training images (batch-norm statistics recalibrated first).
     Compared: the best held-out accuracy found, and whether every candidate respected the
     budget.
  2. DARTS and PC-DARTS (K=4): one search epoch of an 8-channel, 3-cell, 4-node supernet on
     --darts_images training images (architecture on as many held-out ones); search cost in
     seconds; the derived network (8 channels, 3 cells) trained --final_epochs on
     --final_images images and scored on the full 10,000-image test set.
  3. Once-for-All: the elastic supernet trained with progressive shrinking (--ofa_epochs:
     full 5, then kernel 1, depth 1, width 1 epochs on --final_images images, KD from the
     full network; each shrinking step trains --ofa_subnets_per_step subnets: the phase's
     smallest and random ones), then the best subnet under each of --ofa_budgets MACs
     (--ofa_samples sampled) extracted without retraining; the same architecture trained from
     scratch on the same images for as many epochs as the full network (the OFA paper's
     protocol: the shrinking phases are the extra cost of training every subnet at once).
     Test accuracy of both on the full test set.
Accuracies are of the Keras models (no TFLite file is made here). Prints a table, writes
benchmarks/results/nas.json and a Pareto plot (nas.png).

Usage: .venv/bin/python benchmarks/nas.py [--trials=8] [--parts=token,darts,ofa]
"""

import functools
import json
import pathlib
import time

from absl import app, flags
import numpy as np

from _results import write_results

import kslim
from kslim import _plot
from kslim import datasets
from kslim import nas
from kslim._keras import keras
from kslim._table import format_table
from kslim.cli._common import quiet_tensorflow
from kslim.nas.batch_norm import recalibrate_batch_norm
from kslim.nas.ofa import parse_epochs
from kslim.training import finetune_schedule, fit_classifier, model_accuracy

_WORKDIR = flags.DEFINE_string("workdir", "runs/bench/nas", "Cache and checkpoints.")
_OUTPUT = flags.DEFINE_string("output", "benchmarks/results/nas.json", "JSON results.")
_PARTS = flags.DEFINE_list("parts", ["token", "darts", "ofa"], "Parts to run.")
_TRIALS = flags.DEFINE_integer("trials", 12, "Trials per token-search controller and seed.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"],
                          "Controller seeds of the token searches.")
_TRIAL_IMAGES = flags.DEFINE_integer("trial_images", 10000, "Training images per trial.")
_SA_TEMPERATURE = flags.DEFINE_float("sa_temperature", 0.005, "SA's initial temperature.")
_MACS_BUDGET = flags.DEFINE_float("macs_budget", 8e6, "Token searches' MACs budget.")
_DARTS_IMAGES = flags.DEFINE_integer("darts_images", 1024, "DARTS supernet training images.")
_FINAL_IMAGES = flags.DEFINE_integer("final_images", 12000, "Training images of derived, OFA "
                                     "and scratch networks.")
_FINAL_EPOCHS = flags.DEFINE_integer("final_epochs", 2, "Epochs of the DARTS-derived nets.")
_OFA_BUDGETS = flags.DEFINE_list("ofa_budgets", ["6e6", "12e6"], "OFA MACs budgets.")
_OFA_SAMPLES = flags.DEFINE_integer("ofa_samples", 6, "Random subnets per OFA budget.")
_OFA_SUBNETS_PER_STEP = flags.DEFINE_integer("ofa_subnets_per_step", 3, "Subnets per "
                                             "shrinking step (the phase's smallest + random).")
_OFA_EPOCHS = flags.DEFINE_string("ofa_epochs", "full=5,kernel=1,depth=1,width=1",
                                   "Epochs per progressive-shrinking phase; scratch-trained "
                                   "subnets get the full phase's.")
_HELD_OUT = 2000


def _cached(workdir, name, compute):
  path = workdir / f"{name}.json"
  if path.exists():
    return json.loads(path.read_text())
  result = compute()
  path.write_text(json.dumps(result, indent=1))
  return result


def _macs(model):
  return kslim.profile(model).total_macs


def _token_part(workdir, data):
  (x_train, y_train), (x_val, y_val), _ = data
  space = nas.MobileNetV2Space(input_shape=(28, 28, 1))
  evaluate = nas.TrainEvaluator(x_train[:_TRIAL_IMAGES.value], y_train[:_TRIAL_IMAGES.value],
                                x_val, y_val, epochs=1)
  runs = {}
  for seed in map(int, _SEEDS.value):
    for name, cls in (("sa", nas.SANAS), ("rl", nas.RLNAS), ("random", nas.RandomSearch)):
      options = {"init_temperature": _SA_TEMPERATURE.value} if cls is nas.SANAS else {}
      tag = "_".join([name, f"s{seed}", f"n{_TRIAL_IMAGES.value}", f"b{_MACS_BUDGET.value:g}",
                      *(f"t{v:g}" for v in options.values())])

      def run(tag=tag, cls=cls, seed=seed, options=options):
        controller = cls(space, constraint=nas.Constraint("macs", _MACS_BUDGET.value),
                         checkpoint=workdir / f"{tag}_checkpoint.json", seed=seed, **options)
        start = time.time()
        best, reward = nas.search(controller, evaluate, _TRIALS.value,
                                  log=workdir / f"{tag}_trials.jsonl")
        return {"method": name, "best_tokens": best, "best_held_out": reward,
                "trials": controller.history, "skipped_over_budget": controller.skipped,
                "seconds_this_run": time.time() - start}
      runs[name, seed] = _cached(workdir, f"token_{tag}", run)
  rows = []
  for name in ("sa", "rl", "random"):
    results = [runs[name, seed] for seed in map(int, _SEEDS.value)]
    trials = [t for r in results for t in r["trials"]]
    bests = [r["best_held_out"] for r in results]
    random_bests = [runs["random", seed]["best_held_out"] for seed in map(int, _SEEDS.value)]
    rows.append({"part": "token", "method": name, "trials": _TRIALS.value,
                 "seeds": len(results), "best_held_out_per_seed": bests,
                 "best_held_out_accuracy": float(np.mean(bests)),
                 "seeds_beating_random": sum(b > r for b, r in zip(bests, random_bests)),
                 "best_macs": float(np.mean([next(t["cost"] for t in r["trials"]
                                                  if t["tokens"] == r["best_tokens"])
                                             for r in results])),
                 "max_macs": max(t["cost"] for t in trials),
                 "within_budget": max(t["cost"] for t in trials) <= _MACS_BUDGET.value,
                 "budget": _MACS_BUDGET.value,
                 "points": [[t["cost"], t["reward"]] for t in trials]})
  return rows


def _train_and_test(model, data, epochs, seed=0):
  """Test accuracy after `epochs` on the first --final_images images. Batch-norm statistics
  are recalibrated after training (as OFA subnets' are): a few hundred steps leave the moving
  averages unsettled, which would make short-trained deep nets score near chance."""
  (x_train, y_train), _, (x_test, y_test) = data
  x, y = x_train[:_FINAL_IMAGES.value], y_train[:_FINAL_IMAGES.value]
  fit_classifier(model, x, y, epochs, 128, finetune_schedule(2e-3, epochs, len(x), 128), seed,
                 verbose=0)
  recalibrate_batch_norm(model, x[:1000])
  return model_accuracy(model, x_test, y_test)


def _darts_part(workdir, data):
  (x_train, y_train), (x_val, y_val), _ = data
  rows = []
  for name, cls in (("darts", nas.DARTS), ("pc_darts", nas.PCDARTS)):
    def search(cls=cls, name=name):
      keras.utils.set_random_seed(0)
      n = _DARTS_IMAGES.value
      start = time.time()
      genotype = cls(channels=8, layers=3).search(
          x_train[:n], y_train[:n], x_val[:n], y_val[:n], epochs=1, batch_size=64,
          checkpoint_dir=workdir / f"{name}_supernet")
      return {"genotype": genotype._asdict(), "search_seconds": time.time() - start}
    found = _cached(workdir, f"{name}_search", search)

    def train(found=found):
      keras.utils.set_random_seed(0)
      genotype = nas.Genotype(**{k: [[tuple(e) for e in node] for node in v]
                                 for k, v in found["genotype"].items()})
      model = nas.build_network(genotype, (28, 28, 1), 10, channels=8, layers=3)
      return {"params": model.count_params(), "macs": _macs(model),
              "test_accuracy": _train_and_test(model, data, _FINAL_EPOCHS.value)}
    result = _cached(workdir, f"{name}_e{_FINAL_EPOCHS.value}", train)
    rows.append({"part": "darts", "method": name, **found, **result})
  return rows


def _ofa_part(workdir, data, epochs):
  (x_train, y_train), (x_val, y_val), _ = data
  n = _FINAL_IMAGES.value

  def supernet():
    keras.utils.set_random_seed(0)
    return nas.OFASupernet((28, 28, 1), 10)

  ofa = nas.OFA(supernet(), subnets_per_step=_OFA_SUBNETS_PER_STEP.value)
  tag = f"spp{_OFA_SUBNETS_PER_STEP.value}_" + "_".join(f"{k}{v}" for k, v in epochs.items())
  trained = {}

  def train():  # once for every budget; resumes from its epoch checkpoint
    if not trained:
      start = time.time()
      ofa.train(x_train[:n], y_train[:n], epochs,
                checkpoint_dir=workdir / f"ofa_supernet_{tag}")
      trained["seconds"] = time.time() - start

  rows = []
  for budget in map(float, _OFA_BUDGETS.value):
    def run(budget=budget):
      train()
      constraint = nas.Constraint("macs", budget)
      config, model, held_out = ofa.pick(constraint, x_val, y_val, x_train[:1000],
                                         samples=_OFA_SAMPLES.value)
      (x_test, y_test) = data[2]
      scratch = supernet().extract(config)  # the same architecture, fresh weights
      return {"budget": budget, "config": config, "macs": _macs(model),
              "params": model.count_params(), "held_out_accuracy": held_out,
              "ofa_test_accuracy": model_accuracy(model, x_test, y_test),
              "scratch_test_accuracy": _train_and_test(scratch, data, epochs["full"]),
              "supernet_seconds": trained.get("seconds")}
    result = _cached(workdir, f"ofa_{tag}_{budget:g}", run)
    rows.append({"part": "ofa", "method": f"ofa <= {budget:g} MACs", **result,
                 "within_budget": result["macs"] <= budget,
                 "gap_points": 100 * (result["ofa_test_accuracy"]
                                      - result["scratch_test_accuracy"])})
  return rows


def _plot_results(rows, path):
  figure, (left, right) = _plot.subplots(1, 2, figsize=(11, 4))
  token_rows = [row for row in rows if row["part"] == "token"]
  for row in token_rows:
    costs, rewards = zip(*row["points"])
    left.scatter(costs, rewards, s=14, alpha=0.7, label=row["method"])
  left.set(xlabel="MACs", ylabel="held-out accuracy (1-epoch trial)",
           title="token search trials (MobileNetV2 space)")
  if token_rows:
    left.axvline(token_rows[0]["budget"], color="gray", ls="--")
    left.legend()
  for row in rows:
    if row["part"] == "darts":
      right.scatter(row["macs"], row["test_accuracy"], marker="s", label=row["method"])
    elif row["part"] == "ofa":
      right.scatter(row["macs"], row["ofa_test_accuracy"], marker="o", color="C3",
                    label="OFA subnet (no retraining)")
      right.scatter(row["macs"], row["scratch_test_accuracy"], marker="x", color="C4",
                    label="same arch from scratch")
  handles, labels = right.get_legend_handles_labels()
  unique = dict(zip(labels, handles))
  right.legend(unique.values(), unique.keys())
  right.set(xlabel="MACs", ylabel="test accuracy", title="found networks")
  _plot.save(figure, path)


def main(argv):
  del argv
  quiet_tensorflow()
  try:
    ofa_epochs = parse_epochs(_OFA_EPOCHS.value)
  except ValueError as e:
    raise app.UsageError(f"--ofa_epochs: {e}") from e
  workdir = pathlib.Path(_WORKDIR.value)
  workdir.mkdir(parents=True, exist_ok=True)
  (x_train, y_train), (x_test, y_test) = datasets.load_fashion_mnist()
  x_train, x_test = datasets.normalize(x_train), datasets.normalize(x_test)
  split = len(x_train) - _HELD_OUT
  data = ((x_train[:split], y_train[:split]), (x_train[split:], y_train[split:]),
          (x_test, y_test))
  parts = {"token": _token_part, "darts": _darts_part,
           "ofa": functools.partial(_ofa_part, epochs=ofa_epochs)}
  rows = []
  for part in _PARTS.value:
    rows += parts[part](workdir, data)
  table = []
  for r in rows:
    if r["part"] == "token":
      table.append([r["method"], f"{r['trials']} trials x {r['seeds']} seeds",
                    f"{r['best_held_out_accuracy']:.4f}",
                    "-", f"{r['best_macs']:.3g}", str(r["within_budget"])])
    elif r["part"] == "darts":
      table.append([r["method"], f"search {r['search_seconds']:.0f} s", "-",
                    f"{r['test_accuracy']:.4f}", f"{r['macs']:.3g}", "-"])
    else:
      table.append([r["method"], f"scratch {r['scratch_test_accuracy']:.4f}",
                    f"{r['held_out_accuracy']:.4f}", f"{r['ofa_test_accuracy']:.4f} "
                    f"({r['gap_points']:+.2f} pt)", f"{r['macs']:.3g}", str(r["within_budget"])])
  print(format_table(["method", "cost / baseline", "held-out acc", "test acc", "MACs",
                      "within budget"], table))
  recipe = {"trials": _TRIALS.value, "seeds": _SEEDS.value, "trial_images": _TRIAL_IMAGES.value,
            "sa_init_temperature": _SA_TEMPERATURE.value,
            "held_out_images": _HELD_OUT, "macs_budget": _MACS_BUDGET.value,
            "darts_images": _DARTS_IMAGES.value, "final_images": _FINAL_IMAGES.value,
            "darts_final_epochs": _FINAL_EPOCHS.value, "ofa_epochs": ofa_epochs,
            "ofa_samples": _OFA_SAMPLES.value,
            "ofa_subnets_per_step": _OFA_SUBNETS_PER_STEP.value}
  write_results(_OUTPUT.value, "nas", recipe, rows)
  _plot_results(rows, pathlib.Path(_OUTPUT.value).with_suffix(".png"))


if __name__ == "__main__":
  app.run(main)
