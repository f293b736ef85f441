"""kslim-nas: finds the best architecture within a budget, by token search (SA, RL, random),
differentiable search (DARTS, PC-DARTS) or a Once-for-All supernet.

All methods learn from the training images minus the last --held_out and judge candidates on
those held-out images (never the test set); the test set scores only the final model.
  - sa | rl | random: each candidate trains --trial_epochs and scores its held-out accuracy.
    The search resumes from <output_dir>/checkpoint.json; candidates over the budget are
    never trained. With --storage the candidates are queued in an Optuna storage and trained
    by workers (this binary with --worker, on any machine that reaches the storage),
    --parallel at a time.
  - darts | pc_darts: a supernet of --supernet_layers cells learns its weights on the
    training split and its architecture on the held-out one for --search_epochs; the derived
    genotype is built as a plain network of --final_layers cells of --final_channels.
  - ofa: an elastic MobileNetV2-like supernet trains with progressive shrinking
    (--ofa_epochs per phase), then the best of --ofa_samples random subnets within the
    budget is extracted with its weights (no retraining needed); --ofa_search=sa|rl|random
    searches the subnets with that controller for --steps instead (weight-sharing scores:
    batch norm recalibrated, held-out accuracy; resumes from <output_dir>/checkpoint.json).
Every candidate is logged to <output_dir>/trials.jsonl and plotted (trials.png, accuracy vs
cost). The best model is trained --final_epochs on all training images (0: keep its weights),
evaluated on the test set and saved as <output_dir>/best.keras with best.json. Supernet
training checkpoints every epoch under <output_dir> and resumes.

Examples:
  kslim-nas --method=sa --space=mobilenet_v2 --steps=30 --constraint=macs --budget=2e6 \\
      --output_dir=runs/nas_sa
  kslim-nas --method=rl --space=resnet --constraint=latency --budget=0.5 \\
      --latency_table=pixel7.json --output_dir=runs/nas_rl
  kslim-nas --method=sa --storage=sqlite:////shared/nas.db --parallel=4 --output_dir=runs/sa
  kslim-nas --worker --method=sa --storage=sqlite:////shared/nas.db --output_dir=/tmp/w  # x4
  kslim-nas --method=pc_darts --search_epochs=2 --output_dir=runs/pc_darts
  kslim-nas --method=ofa --constraint=macs --budget=3e6 --output_dir=runs/ofa
  kslim-nas --method=ofa --ofa_search=sa --steps=40 --constraint=macs --budget=3e6 \
      --output_dir=runs/ofa
"""

import json
import pathlib

from absl import app, flags, logging

from kslim import nas
from kslim._enum import Choice
from kslim._table import format_table
from kslim.cli._common import define_dataset_flag, start
from kslim.nas.constraints import Metric
from kslim.nas.ofa import parse_epochs
from kslim.training import finetune_schedule, fit_classifier, model_accuracy


class Method(Choice):
  """The search methods."""
  SA = "sa"
  RL = "rl"
  RANDOM = "random"
  DARTS = "darts"
  PC_DARTS = "pc_darts"
  OFA = "ofa"


_TOKEN_METHODS = (Method.SA, Method.RL, Method.RANDOM)
SPACES = {"mobilenet_v2": nas.MobileNetV2Space, "mobilenet_v1": nas.MobileNetV1Space,
          "resnet": nas.ResNetSpace}

_METHOD = flags.DEFINE_enum("method", "sa", [m.value for m in Method], "Search method.")
_SPACE = flags.DEFINE_enum("space", "mobilenet_v2", sorted(SPACES), "Token search space "
                           "(sa, rl, random).")
_STEPS = flags.DEFINE_integer("steps", 20, "Candidates to score (in total, across resumes; "
                              "sa, rl, random).", lower_bound=1)
_CONSTRAINT = flags.DEFINE_enum("constraint", None, [m.value for m in Metric],
                                "What --budget bounds.")
_BUDGET = flags.DEFINE_float("budget", None, "Largest MACs, params or latency (ms) allowed.")
_LATENCY_TABLE = flags.DEFINE_string("latency_table", None, "Latency table JSON from "
                                     "tflite-latency-table, for --constraint=latency.")
_LATENCY_MODE = flags.DEFINE_enum("latency_mode", "float32", ["float32", "int8"],
                                  "The conversion the latency table was measured for.")
_load_data = define_dataset_flag()
_HELD_OUT = flags.DEFINE_integer("held_out", 5000, "Training images kept out to score "
                                 "candidates (and to learn DARTS' architecture).", lower_bound=1)
_TRIAL_EPOCHS = flags.DEFINE_integer("trial_epochs", 1, "Training epochs per candidate.",
                                     lower_bound=1)
_STORAGE = flags.DEFINE_string("storage", None, "Optuna storage (journal:<path> or a "
                               "SQLAlchemy URL) to queue candidates in for --worker processes; "
                               "unset: train them in this process.")
_STUDY = flags.DEFINE_string("study_name", "kslim-nas", "The Optuna study of --storage.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Candidates queued at once with --storage "
                                 "(about the number of workers).", lower_bound=1)
_WORKER = flags.DEFINE_bool("worker", False, "Train candidates queued in --storage instead of "
                            "searching (give the same --space, --dataset and training flags).")
_WORKER_IDLE = flags.DEFINE_float("worker_idle_timeout", 600.0, "A worker stops after this "
                                  "many seconds with nothing queued.", lower_bound=0.0)
_SEARCH_EPOCHS = flags.DEFINE_integer("search_epochs", 1, "Supernet search epochs (darts, "
                                      "pc_darts).", lower_bound=1)
_SEARCH_IMAGES = flags.DEFINE_integer("search_images", 0, "Training images the DARTS supernet "
                                      "learns from (0: all of the split).", lower_bound=0)
_SUPERNET_CHANNELS = flags.DEFINE_integer("supernet_channels", 8, "DARTS supernet's initial "
                                          "channels.", lower_bound=1)
_SUPERNET_LAYERS = flags.DEFINE_integer("supernet_layers", 3, "DARTS supernet's cells.",
                                        lower_bound=1)
_NODES = flags.DEFINE_integer("nodes", 4, "Intermediate nodes per DARTS cell.", lower_bound=1)
_FINAL_CHANNELS = flags.DEFINE_integer("final_channels", 16, "Derived DARTS network's initial "
                                       "channels.", lower_bound=1)
_FINAL_LAYERS = flags.DEFINE_integer("final_layers", 3, "Derived DARTS network's cells.",
                                     lower_bound=1)
_OFA_EPOCHS = flags.DEFINE_string("ofa_epochs", "full=2,kernel=1,depth=1,width=1",
                                  "Progressive-shrinking epochs per phase, phase=epochs,...")
_OFA_SAMPLES = flags.DEFINE_integer("ofa_samples", 20, "Random OFA subnets looked at.",
                                    lower_bound=0)
_OFA_SEARCH = flags.DEFINE_enum("ofa_search", "sample", ["sample"] + [m.value for m in
                                                                   _TOKEN_METHODS],
                                "How ofa picks its subnet: the best of --ofa_samples random "
                                "ones, or a --steps search by that controller.")
_OFA_SUBNETS_PER_STEP = flags.DEFINE_integer(
    "ofa_subnets_per_step", 2, "Subnets per progressive-shrinking step: the phase's smallest "
    "and random ones (1: one random subnet, the original OFA).", lower_bound=1)
_SA_TEMPERATURE = flags.DEFINE_float(
    "sa_temperature", None, "SA's initial temperature (default: SANAS's), on the scale of the "
    "rewards (held-out accuracies): near the differences expected between neighbouring "
    "candidates; 0.005 suited a 12-trial search whose 1-epoch accuracies differed by "
    "hundredths.")
_FINAL_EPOCHS = flags.DEFINE_integer("final_epochs", 5, "Training epochs of the best "
                                     "candidate on all training images (0: skip).",
                                     lower_bound=0)
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 2e-3, "Peak learning rate (cosine decay "
                                    "to 0).", lower_bound=0.0)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Training batch size.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the search and of training.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where the checkpoints, trial log, plot "
                                  "and best model go.", required=True)


flags.register_validator("sa_temperature", lambda t: t is None or t > 0,
                         message="--sa_temperature must be > 0")


@flags.multi_flags_validator(["constraint", "budget"], message="--constraint and --budget go "
                             "together, and --budget must be > 0")
def _budget(values):
  if values["constraint"] is None:
    return values["budget"] is None
  return values["budget"] is not None and values["budget"] > 0


@flags.multi_flags_validator(["constraint", "latency_table"], message="--constraint=latency "
                             "needs --latency_table (and --latency_table needs it)")
def _latency_table(values):
  return (values["constraint"] == Metric.LATENCY.value) == (values["latency_table"] is not None)


@flags.multi_flags_validator(["worker", "storage", "method"], message="--worker needs "
                             "--storage, and --storage a token method (sa, rl, random)")
def _distributed(values):
  if values["storage"] is None:
    return not values["worker"]
  return Method(values["method"]) in _TOKEN_METHODS


def _constraint():
  if _CONSTRAINT.value is None:
    return None
  latency = None
  if _CONSTRAINT.value == Metric.LATENCY.value:
    try:
      latency = nas.TableLatencyEvaluator(_LATENCY_TABLE.value, _LATENCY_MODE.value)
    except ValueError as error:
      raise app.UsageError(f"--latency_table: {error}") from error
  return nas.Constraint(_CONSTRAINT.value, _BUDGET.value, latency)


def _ofa_epochs():
  try:
    return parse_epochs(_OFA_EPOCHS.value)
  except ValueError as e:
    raise app.UsageError(f"--ofa_epochs: {e}") from e


def _executor(evaluate):
  if _STORAGE.value is None:
    return nas.LocalExecutor(evaluate)
  try:
    return nas.OptunaExecutor(_STORAGE.value, _STUDY.value, parallelism=_PARALLEL.value)
  except ValueError as error:
    raise app.UsageError(f"--storage: {error}") from error


def _token_search(space, constraint, evaluate, out, method):
  """SA / RL / random search (`method`); returns (best model, summary, trials)."""
  controller_class = {Method.SA: nas.SANAS, Method.RL: nas.RLNAS,
                      Method.RANDOM: nas.RandomSearch}[method]
  options = ({"init_temperature": _SA_TEMPERATURE.value}
             if method is Method.SA and _SA_TEMPERATURE.value is not None else {})
  try:
    controller = controller_class(space, constraint=constraint,
                                  checkpoint=out / "checkpoint.json", seed=_SEED.value, **options)
  except ValueError as error:  # a checkpoint of another controller
    raise app.UsageError(f"--output_dir: {error}") from error
  try:
    best_tokens, best_reward = nas.search(controller, steps=_STEPS.value,
                                          log=out / "trials.jsonl", executor=_executor(evaluate))
  except RuntimeError as error:  # nothing fits the budget
    raise app.UsageError(f"--budget: {error}") from error
  summary = {"tokens": best_tokens, "held_out_accuracy": best_reward,
             "skipped_over_budget": controller.skipped, "config": space.config(best_tokens)}
  if method is Method.SA:
    summary["init_temperature"] = controller.init_temperature
  return space.decode(best_tokens), summary, controller.history


def _darts(data, constraint, out):
  """DARTS / PC-DARTS; returns (derived network, summary, trials)."""
  (x_train, y_train), (x_val, y_val), num_classes = data
  if _SEARCH_IMAGES.value:
    x_train, y_train = x_train[:_SEARCH_IMAGES.value], y_train[:_SEARCH_IMAGES.value]
  search_class = nas.PCDARTS if Method(_METHOD.value) is Method.PC_DARTS else nas.DARTS
  search = search_class(num_classes=num_classes, channels=_SUPERNET_CHANNELS.value,
                        layers=_SUPERNET_LAYERS.value, steps=_NODES.value,
                        weight_learning_rate=_LEARNING_RATE.value)
  genotype = search.search(x_train, y_train, x_val, y_val, _SEARCH_EPOCHS.value,
                           batch_size=min(_BATCH_SIZE.value, len(x_train)), seed=_SEED.value,
                           checkpoint_dir=out / "supernet")
  model = nas.build_network(genotype, x_train.shape[1:], num_classes, _FINAL_CHANNELS.value,
                            _FINAL_LAYERS.value)
  summary = {"genotype": genotype._asdict()}
  if constraint is not None:
    cost = constraint.value(model)
    if cost > constraint.budget:
      raise app.UsageError(f"--budget: the derived network's {constraint.metric.value} {cost:g} "
                           f"is over {constraint.budget:g}; lower --final_channels or "
                           "--final_layers")
    summary["cost"] = cost
  return model, summary, []


def _ofa(data, constraint, out):
  """Once-for-All; returns (extracted subnet, summary, trials)."""
  (x_train, y_train), (x_val, y_val), num_classes = data
  ofa = nas.OFA(nas.OFASupernet(x_train.shape[1:], num_classes),
                learning_rate=_LEARNING_RATE.value,
                subnets_per_step=_OFA_SUBNETS_PER_STEP.value)
  ofa.train(x_train, y_train, _ofa_epochs(), _BATCH_SIZE.value, seed=_SEED.value,
            checkpoint_dir=out / "supernet")
  if _OFA_SEARCH.value != "sample":
    evaluate = nas.WeightSharingEvaluator(x_train[:1000], x_val, y_val)
    return _token_search(nas.OFASpace(ofa.supernet), constraint, evaluate, out,
                         Method(_OFA_SEARCH.value))
  try:
    config, model, accuracy = ofa.pick(constraint, x_val, y_val, x_train[:1000],
                                       samples=_OFA_SAMPLES.value, seed=_SEED.value)
  except ValueError as error:
    raise app.UsageError(f"--budget: {error}") from error
  trials = [{"step": i, "config": t["config"], "reward": t["accuracy"], "cost": t["cost"]}
            for i, t in enumerate(ofa.trials)]
  return model, {"config": config, "held_out_accuracy": accuracy}, trials


def main(argv):
  start(argv)
  out = pathlib.Path(_OUTPUT_DIR.value)
  out.mkdir(parents=True, exist_ok=True)
  (x_train, y_train), (x_test, y_test) = _load_data()
  if _HELD_OUT.value >= len(x_train):
    raise app.UsageError(f"--held_out={_HELD_OUT.value} leaves no training images of "
                         f"{len(x_train)}")
  num_classes = int(max(y_train.max(), y_test.max())) + 1
  split = len(x_train) - _HELD_OUT.value
  data = (x_train[:split], y_train[:split]), (x_train[split:], y_train[split:]), num_classes
  space = SPACES[_SPACE.value](input_shape=x_train.shape[1:], num_classes=num_classes)
  evaluate = nas.TrainEvaluator(*data[0], *data[1], _TRIAL_EPOCHS.value, _BATCH_SIZE.value,
                                _LEARNING_RATE.value, _SEED.value)
  if _WORKER.value:
    worker = nas.OptunaWorker(_STORAGE.value, _STUDY.value, space, evaluate)
    print(f"worker trained {worker.run(idle_timeout=_WORKER_IDLE.value)} candidates")
    return
  constraint = _constraint()
  method = Method(_METHOD.value)
  if method in _TOKEN_METHODS:
    best, summary, trials = _token_search(space, constraint, evaluate, out, method)
  elif method is Method.OFA:
    best, summary, trials = _ofa(data, constraint, out)
  else:
    best, summary, trials = _darts(data, constraint, out)
  if trials:
    (out / "trials.jsonl").write_text("".join(json.dumps(t) + "\n" for t in trials))
  if constraint is not None and trials:
    nas.plot_trials(trials, out / "trials.png", _CONSTRAINT.value)
  summary.update(method=method.value, params=best.count_params())
  if _FINAL_EPOCHS.value:
    schedule = finetune_schedule(_LEARNING_RATE.value, _FINAL_EPOCHS.value, len(x_train),
                                 _BATCH_SIZE.value)
    fit_classifier(best, x_train, y_train, _FINAL_EPOCHS.value, _BATCH_SIZE.value, schedule,
                   _SEED.value)
  summary["test_accuracy"] = model_accuracy(best, x_test, y_test)
  best.save(out / "best.keras")
  (out / "best.json").write_text(json.dumps(summary, indent=1) + "\n")
  logging.info("best candidate: %s", summary)
  if trials:
    print(format_table(["step", "candidate", "held-out acc", "cost"],
                       [[str(t["step"]), str(t.get("tokens", t.get("config"))),
                         "-" if t["reward"] is None else f"{t['reward']:.4f}",
                         "-" if t["cost"] is None else f"{t['cost']:g}"] for t in trials]))
  print(f"best {method.value} model ({summary['params']} params): test "
        f"{summary['test_accuracy']:.4f}; saved {out / 'best.keras'}")


def run():
  """Console-script entry point."""
  app.run(main)


if __name__ == "__main__":
  run()
