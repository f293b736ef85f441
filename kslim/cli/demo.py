"""kslim-demo: the end-to-end demo on Fashion-MNIST.

Trains (or loads the cached) reference model, exports it to float32 TFLite, evaluates both on
the test set, then quantization-aware fine-tunes it (kslim.quantize), exports the int8 TFLite
file and evaluates that, and prints the results table. --stages picks other sequences.
"""

from absl import app, flags, logging

from kslim import pipeline
from kslim.cli._common import start

DEFAULT_STAGES = ("baseline", "export_float32", "evaluate", "qat", "export_int8", "evaluate")

_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Folder for the cache, TFLite files and "
                               "results.json.")
_MODEL = flags.DEFINE_enum("model", "reference_cnn", ["reference_cnn", "mini_mobilenet_v2"],
                           "Reference model to train.")
_STAGES = flags.DEFINE_list("stages", list(DEFAULT_STAGES), "Stages to run, in order.")
_EPOCHS = flags.DEFINE_integer("epochs", 5, "Baseline training epochs.", lower_bound=1)
_QAT_EPOCHS = flags.DEFINE_integer("qat_epochs", 1, "Quantization-aware fine-tuning epochs.",
                                   lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Training seed.")
_TRAIN_EXAMPLES = flags.DEFINE_integer("train_examples", None, "Train on the first N images "
                                       "only (default: all 60,000).", lower_bound=1)
_TEST_EXAMPLES = flags.DEFINE_integer("test_examples", None, "Evaluate on the first N test "
                                      "images only (default: all 10,000).", lower_bound=1)
_THREADS = flags.DEFINE_list("threads", ["1", "2"], "TFLite thread counts for latency.")
_LATENCY_RUNS = flags.DEFINE_integer("latency_runs", 100, "Timed runs per latency "
                                     "measurement.", lower_bound=1)


@flags.validator("stages", message=f"--stages: every stage must be one of "
                 f"{sorted(pipeline.STAGES)}")
def _known_stages(names):
  return bool(names) and all(n in pipeline.STAGES for n in names)


@flags.validator("threads", message="--threads: comma-separated positive integers, e.g. 1,2,4")
def _positive_threads(values):
  return bool(values) and all(v.isdigit() and int(v) > 0 for v in values)


def main(argv):
  start(argv)
  settings = pipeline.Settings(
      model=_MODEL.value, epochs=_EPOCHS.value, qat_epochs=_QAT_EPOCHS.value, seed=_SEED.value,
      train_examples=_TRAIN_EXAMPLES.value, test_examples=_TEST_EXAMPLES.value,
      threads=tuple(int(t) for t in _THREADS.value), latency_runs=_LATENCY_RUNS.value)
  ctx = pipeline.run_stages(_STAGES.value, settings, _WORKDIR.value)
  print(pipeline.format_table(ctx.results))
  logging.info("results written to %s", ctx.workdir / "results.json")


def run():
  """Console-script entry point."""
  app.run(main)


if __name__ == "__main__":
  run()
