"""kslim-nas: searches a token space with SA, RL or random search under a budget.

Each candidate trains --trial_epochs on the training images minus the last --held_out, and
scores its accuracy on those held-out images (never the test set). The search resumes from
<output_dir>/checkpoint.json; every candidate is logged to <output_dir>/trials.jsonl and
plotted (trials.png, accuracy vs cost). The best candidate is then trained --final_epochs on
all training images, evaluated on the test set and saved as <output_dir>/best.keras.

Examples:
  kslim-nas --method=sa --space=mobilenet_v2 --steps=30 --constraint=macs --budget=2e6 \\
      --output_dir=runs/nas_sa
  kslim-nas --method=rl --space=resnet --constraint=latency --budget=0.5 \\
      --latency_table=pixel7.json --output_dir=runs/nas_rl
"""

import json
import pathlib

from absl import app, flags, logging

from kslim import nas
from kslim._enum import Choice
from kslim._table import format_table
from kslim.cli._common import define_dataset_flag, start
from kslim.nas.constraints import Metric
from kslim.training import finetune_schedule, fit_classifier, model_accuracy


class Method(Choice):
  """The search controllers."""
  SA = "sa"
  RL = "rl"
  RANDOM = "random"


SPACES = {"mobilenet_v2": nas.MobileNetV2Space, "mobilenet_v1": nas.MobileNetV1Space,
          "resnet": nas.ResNetSpace}

_METHOD = flags.DEFINE_enum("method", "sa", [m.value for m in Method], "Search controller.")
_SPACE = flags.DEFINE_enum("space", "mobilenet_v2", sorted(SPACES), "Search space.")
_STEPS = flags.DEFINE_integer("steps", 20, "Candidates to score (in total, across resumes).",
                              lower_bound=1)
_CONSTRAINT = flags.DEFINE_enum("constraint", None, [m.value for m in Metric],
                                "What --budget bounds.")
_BUDGET = flags.DEFINE_float("budget", None, "Largest MACs, params or latency (ms) allowed.")
_LATENCY_TABLE = flags.DEFINE_string("latency_table", None, "Latency table JSON from "
                                     "tflite-latency-table, for --constraint=latency.")
_LATENCY_MODE = flags.DEFINE_enum("latency_mode", "float32", ["float32", "int8"],
                                  "The conversion the latency table was measured for.")
_load_data = define_dataset_flag()
_HELD_OUT = flags.DEFINE_integer("held_out", 5000, "Training images kept out to score "
                                 "candidates.", lower_bound=1)
_TRIAL_EPOCHS = flags.DEFINE_integer("trial_epochs", 1, "Training epochs per candidate.",
                                     lower_bound=1)
_FINAL_EPOCHS = flags.DEFINE_integer("final_epochs", 5, "Training epochs of the best "
                                     "candidate on all training images (0: skip).",
                                     lower_bound=0)
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 2e-3, "Peak learning rate (cosine decay "
                                    "to 0).", lower_bound=0.0)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Training batch size.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the controller and of training.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where the checkpoint, trial log, plot and "
                                  "best model go.", required=True)


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


def _controller(space, checkpoint):
  constraint = None
  if _CONSTRAINT.value is not None:
    latency = None
    if _CONSTRAINT.value == Metric.LATENCY.value:
      try:
        latency = nas.TableLatencyEvaluator(_LATENCY_TABLE.value, _LATENCY_MODE.value)
      except ValueError as error:
        raise app.UsageError(f"--latency_table: {error}") from error
    constraint = nas.Constraint(_CONSTRAINT.value, _BUDGET.value, latency)
  method = Method(_METHOD.value)
  kwargs = {"constraint": constraint, "checkpoint": checkpoint, "seed": _SEED.value}
  try:
    if method is Method.SA:
      return nas.SANAS(space, **kwargs)
    if method is Method.RL:
      return nas.RLNAS(space, **kwargs)
    return nas.RandomSearch(space, **kwargs)
  except ValueError as error:  # a checkpoint of another controller
    raise app.UsageError(f"--output_dir: {error}") from error


def main(argv):
  start(argv)
  out = pathlib.Path(_OUTPUT_DIR.value)
  out.mkdir(parents=True, exist_ok=True)
  (x_train, y_train), (x_test, y_test) = _load_data()
  if _HELD_OUT.value >= len(x_train):
    raise app.UsageError(f"--held_out={_HELD_OUT.value} leaves no training images of "
                         f"{len(x_train)}")
  space = SPACES[_SPACE.value](input_shape=x_train.shape[1:],
                               num_classes=int(max(y_train.max(), y_test.max())) + 1)
  controller = _controller(space, out / "checkpoint.json")
  split = len(x_train) - _HELD_OUT.value
  evaluate = nas.TrainEvaluator(x_train[:split], y_train[:split], x_train[split:],
                                y_train[split:], _TRIAL_EPOCHS.value, _BATCH_SIZE.value,
                                _LEARNING_RATE.value, _SEED.value)
  try:
    best_tokens, best_reward = nas.search(controller, evaluate, _STEPS.value,
                                          log=out / "trials.jsonl")
  except RuntimeError as error:  # nothing fits the budget
    raise app.UsageError(f"--budget: {error}") from error
  if controller.constraint is not None:
    nas.plot_trials(controller.history, out / "trials.png", _CONSTRAINT.value)
  best = space.decode(best_tokens)
  summary = {"tokens": best_tokens, "held_out_accuracy": best_reward,
             "skipped_over_budget": controller.skipped,
             "config": space.config(best_tokens), "params": best.count_params()}
  if _FINAL_EPOCHS.value:
    schedule = finetune_schedule(_LEARNING_RATE.value, _FINAL_EPOCHS.value, len(x_train),
                                 _BATCH_SIZE.value)
    fit_classifier(best, x_train, y_train, _FINAL_EPOCHS.value, _BATCH_SIZE.value, schedule,
                   _SEED.value)
    summary["test_accuracy"] = model_accuracy(best, x_test, y_test)
  best.save(out / "best.keras")
  (out / "best.json").write_text(json.dumps(summary, indent=1) + "\n")
  logging.info("best candidate: %s", summary)
  print(format_table(["step", "tokens", "held-out acc", "cost", "accepted"],
                     [[str(h["step"]), str(h["tokens"]), f"{h['reward']:.4f}",
                       "-" if h["cost"] is None else f"{h['cost']:g}", str(h["accepted"])]
                      for h in controller.history]))
  print(f"best {best_tokens}: held-out {best_reward:.4f}"
        + (f", test {summary['test_accuracy']:.4f}" if "test_accuracy" in summary else "")
        + f"; saved {out / 'best.keras'}")


def run():
  """Console-script entry point."""
  app.run(main)


if __name__ == "__main__":
  run()
