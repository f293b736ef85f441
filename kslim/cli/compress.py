"""kslim-compress: runs a compression job described in YAML — prune, distill, quantize (QAT)
or PTQ, export and benchmark, in the order the config lists them — and writes its report.

Every stage is checkpointed under --workdir/stages: a killed job resumes from the last
finished stage (and, inside a training, the last finished epoch), and a re-run with an
unchanged config reuses every stage. The result folder holds every intermediate model,
report.json, report.md and the plots. See examples/*.yaml for the common recipes.

Examples:
  kslim-compress --config=examples/prune_qat.yaml
  kslim-compress --config=examples/ptq.yaml --set=strategies.0.ptq.calibration=kl \\
      --set=training.test_examples=2000 --workdir=runs/ptq_kl
"""

import pathlib

from absl import app, flags, logging

from kslim import pipeline
from kslim.cli._common import start

_CONFIG = flags.DEFINE_string("config", None, "The job's YAML file.", required=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where stages, report and plots go (default: "
                               "runs/compress/<config name>).")
_SET = flags.DEFINE_multi_string("set", [], "Overrides a config key: dotted.path=value (YAML "
                                 "value; list items by index), e.g. "
                                 "strategies.0.prune.ratio=0.4. Repeatable.")
_DATASET = flags.DEFINE_string("dataset", None, "Overrides the config's dataset "
                               "('fashion_mnist' or a .npz file).")


def main(argv):
  start(argv)
  overrides = list(_SET.value)
  if _DATASET.value is not None:
    overrides.append(f"dataset={_DATASET.value}")
  workdir = _WORKDIR.value or f"runs/compress/{pathlib.Path(_CONFIG.value).stem}"
  try:
    report = pipeline.run(_CONFIG.value, workdir, overrides=overrides)
  except pipeline.ConfigError as error:
    raise app.UsageError(f"--config: {error}") from error
  rows = [pipeline.Row(**{k: r[k] for k in pipeline.Row.__dataclass_fields__})
          for r in report["rows"]]
  print(pipeline.job_table(rows))
  logging.info("report: %s", pathlib.Path(workdir) / "report.md")
  print(f"report written to {pathlib.Path(workdir) / 'report.md'}")


def run():
  """Console-script entry point."""
  app.run(main)


if __name__ == "__main__":
  run()
