"""A registry of named stages that run in order over one shared `Context`.

Each stage reads and updates the context (the current model, its TFLite file) and may append a
`StageResult` row. New capabilities add a stage with `@register_stage("name")`; the demo and
jobs just list stage names.
"""

import dataclasses
import json
import pathlib
from typing import Callable, Optional

from absl import logging

from kslim import datasets, models
from kslim._keras import keras
from kslim.conversion import convert
from kslim.quantization import QuantConfig
from kslim.quantization import quantize
from kslim.profiling import profile
from kslim.training import accuracy, finetune_schedule, fit_classifier, model_accuracy
from tflite_tools.benchmark_lib import measure_latency
from tflite_tools.runner import TFLiteRunner

__all__ = ["STAGES", "Context", "Settings", "StageResult", "register_stage", "run"]


@dataclasses.dataclass(frozen=True)
class Settings:
  """What a pipeline run trains and measures.

  Attributes:
    model: a name from `kslim.models.REFERENCE_MODELS`.
    epochs: baseline training epochs.
    batch_size: training batch size.
    learning_rate: Adam learning rate.
    seed: training seed.
    train_examples: use only the first N training images (None: all 60,000).
    test_examples: evaluate on the first N test images (None: all 10,000).
    threads: thread counts at which TFLite latency is measured.
    latency_runs: timed runs per latency measurement.
    qat_epochs: quantization-aware fine-tuning epochs (stage ``qat``).
    qat_learning_rate: peak learning rate of the QAT fine-tune (cosine decay to 0).
    quant_config: the `kslim.QuantConfig` fields for stage ``qat``, as a dict.
  """
  model: str = "reference_cnn"
  epochs: int = 5
  batch_size: int = 128
  learning_rate: float = 2e-3
  seed: int = 0
  train_examples: Optional[int] = None
  test_examples: Optional[int] = None
  threads: tuple = (1, 2)
  latency_runs: int = 100
  qat_epochs: int = 1
  qat_learning_rate: float = 2e-4
  quant_config: dict = dataclasses.field(default_factory=dict)

  def baseline_key(self):
    """Names the cached baseline: everything that changes its trained weights."""
    n = self.train_examples or "all"
    return (f"{self.model}-e{self.epochs}-b{self.batch_size}-lr{self.learning_rate:g}"
            f"-s{self.seed}-n{n}")


@dataclasses.dataclass
class StageResult:
  """One row of the results table."""
  stage: str
  keras_accuracy: Optional[float]
  tflite_accuracy: Optional[float]
  params: int
  macs: int
  tflite_kb: Optional[float]
  latency_ms: dict
  tflite_file: Optional[str] = None

  def to_dict(self):
    return dataclasses.asdict(self)


@dataclasses.dataclass
class Context:
  """State shared by the stages of one run."""
  settings: Settings
  workdir: pathlib.Path
  model: Optional[keras.Model] = None
  tflite_path: Optional[pathlib.Path] = None
  history: dict = dataclasses.field(default_factory=dict)
  results: list = dataclasses.field(default_factory=list)
  _data: Optional[tuple] = dataclasses.field(default=None, init=False, repr=False)

  @property
  def data(self):
    """((x_train, y_train), (x_test, y_test)), normalized and cut to the configured sizes."""
    if self._data is None:
      (x_train, y_train), (x_test, y_test) = datasets.load_fashion_mnist()
      s = self.settings
      self._data = ((datasets.normalize(x_train[:s.train_examples]), y_train[:s.train_examples]),
                    (datasets.normalize(x_test[:s.test_examples]), y_test[:s.test_examples]))
    return self._data


STAGES: dict = {}


def _require_model(ctx, stage):
  if ctx.model is None:
    raise ValueError(f"stage {stage!r} needs a model: run the 'baseline' stage before it")


def register_stage(name):
  """Decorator: registers `fn(context)` as the stage called `name`."""
  def wrap(fn: Callable[[Context], None]):
    if name in STAGES:
      raise ValueError(f"stage {name!r} is already registered")
    STAGES[name] = fn
    return fn
  return wrap


@register_stage("baseline")
def _baseline(ctx):
  """Trains the reference model, or loads it from the cache when the same one was trained."""
  path = ctx.workdir / "cache" / f"{ctx.settings.baseline_key()}.keras"
  history_path = path.with_suffix(".history.json")
  if path.exists() and history_path.exists():
    logging.info("baseline: loading cached %s", path)
    ctx.model = keras.models.load_model(path)
    ctx.history["baseline"] = json.loads(history_path.read_text())
    return
  s = ctx.settings
  (x_train, y_train), _ = ctx.data
  keras.utils.set_random_seed(s.seed)
  model = models.get(s.model)
  models.adapt_normalization(model, x_train)
  logging.info("baseline: training %s for %d epochs on %d images", s.model, s.epochs,
               len(x_train))
  history = fit_classifier(model, x_train, y_train, s.epochs, s.batch_size, s.learning_rate,
                           s.seed)
  path.parent.mkdir(parents=True, exist_ok=True)
  model.save(path)
  ctx.history["baseline"] = {k: [float(v) for v in vs] for k, vs in history.history.items()}
  history_path.write_text(json.dumps(ctx.history["baseline"]))
  ctx.model = model


@register_stage("export_float32")
def _export_float32(ctx):
  """Writes the current model as a float32 TFLite file."""
  _require_model(ctx, "export_float32")
  ctx.tflite_path = ctx.workdir / f"{ctx.model.name}_float32.tflite"
  convert(ctx.model, "float32", output_path=ctx.tflite_path)


@register_stage("qat")
def _qat(ctx):
  """Quantizes the current model (kslim.quantize) and fine-tunes it for `qat_epochs`."""
  _require_model(ctx, "qat")
  s = ctx.settings
  (x_train, y_train), _ = ctx.data
  ctx.model = quantize(ctx.model, QuantConfig(**s.quant_config))
  schedule = finetune_schedule(s.qat_learning_rate, s.qat_epochs, len(x_train), s.batch_size)
  logging.info("qat: fine-tuning for %d epoch(s)", s.qat_epochs)
  history = fit_classifier(ctx.model, x_train, y_train, s.qat_epochs, s.batch_size, schedule,
                           s.seed)
  ctx.history["qat"] = {k: [float(v) for v in vs] for k, vs in history.history.items()}
  ctx.tflite_path = None


@register_stage("export_int8")
def _export_int8(ctx):
  """Writes the current (QAT) model as an int8 TFLite file and logs the conversion report."""
  _require_model(ctx, "export_int8")
  ctx.tflite_path = ctx.workdir / f"{ctx.model.name}_int8.tflite"
  (x_train, _), _ = ctx.data  # parity examples; an LSTM's internal state calibrates on them
  content = convert(ctx.model, "int8", output_path=ctx.tflite_path,
                    representative_data=x_train[:256], report=True)
  logging.info("export_int8:\n%s", content.report)


@register_stage("evaluate")
def _evaluate(ctx):
  """Measures the current model and its TFLite file on the test set; appends a row."""
  _require_model(ctx, "evaluate")
  _, (x_test, y_test) = ctx.data
  keras_acc = model_accuracy(ctx.model, x_test, y_test)
  prof = profile(ctx.model)
  tflite_acc = tflite_kb = None
  latency = {}
  if ctx.tflite_path is not None:
    tflite_acc = accuracy(TFLiteRunner(ctx.tflite_path).predict(x_test), y_test)
    tflite_kb = ctx.tflite_path.stat().st_size / 1024
    latency = {t: measure_latency(ctx.tflite_path, threads=t,
                                  runs=ctx.settings.latency_runs).median_ms
               for t in ctx.settings.threads}
  label = ctx.tflite_path.stem if ctx.tflite_path is not None else ctx.model.name
  ctx.results.append(StageResult(label, keras_acc, tflite_acc, prof.total_params,
                                 prof.total_macs, tflite_kb, latency,
                                 None if ctx.tflite_path is None else str(ctx.tflite_path)))


def run(stage_names, settings, workdir):
  """Runs the named stages in order.

  Args:
    stage_names: names registered in `STAGES`, e.g. ``["baseline", "export_float32",
      "evaluate"]``.
    settings: a `Settings`.
    workdir: folder for the cache, TFLite files and ``results.json``.

  Returns:
    The finished `Context`; its `results` and training `history` are also written to
    ``workdir/results.json``.

  Raises:
    ValueError: a stage name is unknown (checked before any work starts).
  """
  unknown = [n for n in stage_names if n not in STAGES]
  if unknown:
    raise ValueError(f"unknown stage(s) {unknown}; registered stages: {sorted(STAGES)}")
  ctx = Context(settings, pathlib.Path(workdir))
  ctx.workdir.mkdir(parents=True, exist_ok=True)
  for name in stage_names:
    logging.info("stage %s", name)
    STAGES[name](ctx)
  (ctx.workdir / "results.json").write_text(json.dumps(
      {"settings": dataclasses.asdict(settings), "history": ctx.history,
       "results": [r.to_dict() for r in ctx.results]}, indent=2))
  return ctx
