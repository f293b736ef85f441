"""Benchmark: architecture search on Fashion-MNIST at budgets a 2-core CPU affords.

Four parts, each cached in --workdir (an interrupted run resumes part by part; the token
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
     full 5, then kernel 1, depth 1, width 2 epochs on --final_images images, KD from the
     full network; each shrinking step trains --ofa_subnets_per_step subnets: the phase's
     smallest and random ones), then the best subnet under each of --ofa_budgets MACs
     (--ofa_samples sampled) extracted without retraining; the same architecture trained
     from scratch on the same images for as many epochs as the full network (the OFA
     paper's protocol: the shrinking phases are the extra cost of training every subnet at
     once). Test accuracy of both on the full test set.
  4. Search over the OFA subnets (--parts=ofa_search; the same supernet): SA, RL and random
     search over `nas.OFASpace` under each of --ofa_search_budgets (12M MACs: about 80% of
     random subnets fit; at 6M, 10% do, and RL drifted to where 200 proposals in a row were
     over budget), --ofa_search_trials trials per controller and seed, each scored by
     weight sharing (`nas.WeightSharingEvaluator`: batch norm recalibrated on 1,000
     training images, held-out accuracy, nothing trained).
     Compared as in part 1, also after every 10 trials (the anytime curves are plotted);
     the best subnet's test accuracy is reported too, and the SA winner of the first seed
     is trained from scratch as in part 3.
Accuracies are of the Keras models (no TFLite file is made here). Prints a table, writes
benchmarks/results/nas.json and a Pareto plot (nas.png).

Usage: .venv/bin/python benchmarks/nas.py [--trials=8] [--parts=token,darts,ofa,ofa_search]
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
_PARTS = flags.DEFINE_list("parts", ["token", "darts", "ofa", "ofa_search"], "Parts to run.")
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
_OFA_EPOCHS = flags.DEFINE_string("ofa_epochs", "full=5,kernel=1,depth=1,width=2",
                                   "Epochs per progressive-shrinking phase; scratch-trained "
                                   "subnets get the full phase's.")
_OFA_SEARCH_BUDGETS = flags.DEFINE_list("ofa_search_budgets", ["12e6"], "MACs budgets of "
                                        "the searches over OFA subnets.")
_OFA_SEARCH_TRIALS = flags.DEFINE_integer("ofa_search_trials", 60, "Trials per controller "
                                          "and seed of the searches over OFA subnets (a "
                                          "longer search continues a shorter one's "
                                          "checkpoint; counts of seeds beating random are "
                                          "reported every 10 trials).")
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


def _fresh_supernet():
  keras.utils.set_random_seed(0)
  return nas.OFASupernet((28, 28, 1), 10)


class _Supernet:
  """The benchmark's OFA supernet, trained on first use (resuming from its checkpoint), so
  parts whose results are all cached never wait for it."""

  def __init__(self, workdir, data, epochs):
    self.workdir, self.data, self.epochs = workdir, data, epochs
    self.ofa = nas.OFA(_fresh_supernet(), subnets_per_step=_OFA_SUBNETS_PER_STEP.value)
    self.tag = (f"sorted_spp{_OFA_SUBNETS_PER_STEP.value}_"
                + "_".join(f"{k}{v}" for k, v in epochs.items()))
    self.seconds = None

  def trained(self):
    if self.seconds is None:
      (x_train, y_train), _, _ = self.data
      start, n = time.time(), _FINAL_IMAGES.value
      self.ofa.train(x_train[:n], y_train[:n], self.epochs,
                     checkpoint_dir=self.workdir / f"ofa_supernet_{self.tag}")
      self.seconds = time.time() - start
    return self.ofa

  def versus_scratch(self, config, model):
    """Test accuracy of the extracted `model` (batch norm recalibrated) and of `config`'s
    architecture trained from scratch for as many epochs as the full network."""
    (x_train, _), _, (x_test, y_test) = self.data
    recalibrate_batch_norm(model, x_train[:1000])
    scratch = _fresh_supernet().extract(config)  # the same architecture, fresh weights
    ofa_accuracy = model_accuracy(model, x_test, y_test)
    scratch_accuracy = _train_and_test(scratch, self.data, self.epochs["full"])
    return {"config": config, "macs": _macs(model), "params": model.count_params(),
            "ofa_test_accuracy": ofa_accuracy, "scratch_test_accuracy": scratch_accuracy,
            "gap_points": 100 * (ofa_accuracy - scratch_accuracy)}


def _ofa_part(workdir, data, supernet):
  (x_train, _), (x_val, y_val), _ = data
  rows = []
  for budget in map(float, _OFA_BUDGETS.value):
    def run(budget=budget):
      ofa = supernet.trained()
      config, model, held_out = ofa.pick(nas.Constraint("macs", budget), x_val, y_val,
                                         x_train[:1000], samples=_OFA_SAMPLES.value)
      return {"budget": budget, "held_out_accuracy": held_out,
              **supernet.versus_scratch(config, model), "supernet_seconds": supernet.seconds}
    result = _cached(workdir, f"ofa_{supernet.tag}_{budget:g}", run)
    rows.append({"part": "ofa", "method": f"ofa <= {budget:g} MACs", **result,
                 "within_budget": result["macs"] <= budget})
  return rows


def _best_so_far(results):
  """Per trial count k, the best reward among a search's first k trials, averaged over
  seeds (the searches' anytime curve)."""
  rewards = np.array([[t["reward"] for t in r["trials"]] for r in results])
  return np.maximum.accumulate(rewards, axis=1).mean(axis=0).tolist()


def _beating(results, random_results, count):
  """How many seeds' best among their first `count` trials beat random search's."""
  return sum(max(t["reward"] for t in r["trials"][:count]) >
             max(t["reward"] for t in q["trials"][:count])
             for r, q in zip(results, random_results))


def _ofa_search_part(workdir, data, supernet):
  """SA, RL and random search over the trained supernet's subnets (`nas.OFASpace`), scored
  by weight sharing; the SA winner of the first seed is also trained from scratch."""
  (x_train, _), (x_val, y_val), (x_test, y_test) = data
  evaluate = nas.WeightSharingEvaluator(x_train[:1000], x_val, y_val)
  rows, seeds = [], list(map(int, _SEEDS.value))
  for budget in map(float, _OFA_SEARCH_BUDGETS.value):
    runs = {}
    for seed in seeds:
      for name, cls in (("sa", nas.SANAS), ("rl", nas.RLNAS), ("random", nas.RandomSearch)):
        options = {"init_temperature": _SA_TEMPERATURE.value} if cls is nas.SANAS else {}
        # The checkpoint does not name the trial count: a longer search continues a shorter
        # one (the same proposals, as the generator's state is checkpointed).
        search_tag = f"ofa_search_{supernet.tag}_{name}_s{seed}_b{budget:g}"

        def run(search_tag=search_tag, cls=cls, seed=seed, options=options):
          space = nas.OFASpace(supernet.trained().supernet)
          controller = cls(space, constraint=nas.Constraint("macs", budget), seed=seed,
                           checkpoint=workdir / f"{search_tag}_checkpoint.json", **options)
          start = time.time()
          best, reward = nas.search(controller, evaluate, _OFA_SEARCH_TRIALS.value,
                                    log=workdir / f"{search_tag}_trials.jsonl")
          model = recalibrate_batch_norm(space.decode(best), x_train[:1000])
          return {"best_tokens": best, "best_config": space.config(best),
                  "best_held_out": reward, "best_test": model_accuracy(model, x_test, y_test),
                  "trials": controller.history, "seconds_this_run": time.time() - start}
        runs[name, seed] = _cached(workdir, f"{search_tag}_n{_OFA_SEARCH_TRIALS.value}", run)
    for name in ("sa", "rl", "random"):
      results = [runs[name, seed] for seed in seeds]
      bests = [r["best_held_out"] for r in results]
      trials = [t for r in results for t in r["trials"]]
      rows.append({"part": "ofa_search", "method": name, "budget": budget,
                   "trials": _OFA_SEARCH_TRIALS.value, "seeds": len(seeds),
                   "best_held_out_per_seed": bests,
                   "best_held_out_accuracy": float(np.mean(bests)),
                   "best_test_accuracy": float(np.mean([r["best_test"] for r in results])),
                   "seeds_beating_random": sum(b > runs["random", s]["best_held_out"]
                                               for b, s in zip(bests, seeds)),
                   "best_so_far": _best_so_far(results),
                   "seeds_beating_random_after": {
                       count: _beating(results, [runs["random", s] for s in seeds], count)
                       for count in range(10, _OFA_SEARCH_TRIALS.value + 1, 10)},
                   "max_macs": max(t["cost"] for t in trials),
                   "within_budget": max(t["cost"] for t in trials) <= budget,
                   "points": [[t["cost"], t["reward"]] for t in trials]})
    config = runs["sa", seeds[0]]["best_config"]

    def scratch(config=config):
      return supernet.versus_scratch(config, supernet.trained().supernet.extract(config))
    result = _cached(workdir, f"ofa_search_{supernet.tag}_sa_s{seeds[0]}_b{budget:g}_"
                     f"n{_OFA_SEARCH_TRIALS.value}_scratch", scratch)
    rows.append({"part": "ofa", "method": f"ofa + SA <= {budget:g} MACs", "budget": budget,
                 **result, "held_out_accuracy": runs["sa", seeds[0]]["best_held_out"],
                 "within_budget": result["macs"] <= budget})
  return rows


def _plot_trials(ax, rows, label, ylabel, title):
  """Every trial of `rows` (search rows) against its MACs, their budgets dashed."""
  for row in rows:
    costs, rewards = zip(*row["points"])
    ax.scatter(costs, rewards, s=14, alpha=0.7, label=label(row))
  for budget in sorted({row["budget"] for row in rows}):
    ax.axvline(budget, color="gray", ls="--")
  ax.set(xlabel="MACs", ylabel=ylabel, title=title)
  if rows:
    ax.legend(fontsize="small")


def _plot_results(rows, path):
  """Token-search trials, OFA-search trials (each panel only when its part ran) and the
  found networks' test accuracy against MACs."""
  searches = [(part, [row for row in rows if row["part"] == part]) for part in
              ("token", "ofa_search")]
  searches = [(part, found) for part, found in searches if found]
  panels = len(searches) + any(part == "ofa_search" for part, _ in searches) + 1
  figure, axes = _plot.subplots(1, panels, figsize=(5.5 * panels, 4), squeeze=False)
  axes = iter(axes[0])
  for part, found in searches:
    if part == "token":
      _plot_trials(next(axes), found, lambda r: r["method"],
                   "held-out accuracy (1-epoch trial)", "token search trials (MobileNetV2 space)")
    else:
      _plot_trials(next(axes), found, lambda r: f"{r['method']} <= {r['budget']:g}",
                   "held-out accuracy (shared weights)", "search over OFA subnets")
      ax = next(axes)
      for row in found:
        curve = row["best_so_far"]
        ax.plot(range(1, len(curve) + 1), curve, label=f"{row['method']} <= {row['budget']:g}")
      ax.set(xlabel="trials", ylabel=f"best held-out so far (mean of {found[0]['seeds']} seeds)",
             title="search over OFA subnets: best so far")
      ax.legend(fontsize="small")
  right = next(axes)
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
  supernet = _Supernet(workdir, data, ofa_epochs)
  parts = {"token": _token_part, "darts": _darts_part,
           "ofa": functools.partial(_ofa_part, supernet=supernet),
           "ofa_search": functools.partial(_ofa_search_part, supernet=supernet)}
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
    elif r["part"] == "ofa_search":
      table.append([f"{r['method']} over OFA subnets <= {r['budget']:g} MACs",
                    f"{r['trials']} trials x {r['seeds']} seeds, "
                    f"{r['seeds_beating_random']} beat random",
                    f"{r['best_held_out_accuracy']:.4f}", f"{r['best_test_accuracy']:.4f}",
                    f"max {r['max_macs']:.3g}", str(r["within_budget"])])
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
            "ofa_subnets_per_step": _OFA_SUBNETS_PER_STEP.value,
            "ofa_search_trials": _OFA_SEARCH_TRIALS.value,
            "ofa_search_budgets": _OFA_SEARCH_BUDGETS.value}
  write_results(_OUTPUT.value, "nas", recipe, rows)
  _plot_results(rows, pathlib.Path(_OUTPUT.value).with_suffix(".png"))


if __name__ == "__main__":
  app.run(main)
