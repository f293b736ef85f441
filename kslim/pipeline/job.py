"""`run`: one compression job from a validated config — baseline, then each strategy in order,
each stage checkpointed, then the report.

Stage i lives in ``<workdir>/stages/<i>_<kind>/``: its model (``model.keras``), its TFLite
file, and ``stage.json`` with the stage's result row and a fingerprint of everything it
depends on (the model source, dataset, training settings and every strategy up to it). A
re-run reuses each stage whose fingerprint matches and redoes the first one that changed and
all after it. Training inside a stage runs under Keras' ``BackupAndRestore`` in the stage's
folder, so a job killed mid-epoch resumes from the last finished epoch of that stage.
"""

import dataclasses
import hashlib
import json
import pathlib
import shutil
import time
from typing import Optional

from absl import logging

from kslim import datasets
from kslim import distill as distill_lib
from kslim import models
from kslim import pruning
from kslim._keras import keras
from kslim.conversion import convert
from kslim.pipeline import config as config_lib
from kslim.pipeline import report as report_lib
from kslim.profiling import profile
from kslim.quantization import QuantConfig, is_quantized, quantize, scope
from kslim.training import accuracy, finetune_schedule, fit_classifier, model_accuracy
from tflite_tools.benchmark_lib import measure_latency
from tflite_tools.runner import TFLiteRunner

__all__ = ["Row", "run"]


@dataclasses.dataclass
class Row:
  """One line of the report: a stage's model and TFLite file, measured."""
  stage: str
  kind: str
  keras_accuracy: Optional[float]
  tflite_accuracy: Optional[float]
  params: int
  macs: int
  tflite_kb: Optional[float]
  tflite_file: Optional[str]
  latency_ms: dict = dataclasses.field(default_factory=dict)
  seconds: float = 0.0

  @property
  def accuracy(self):
    """The deployed accuracy: the TFLite file's where there is one."""
    return self.tflite_accuracy if self.tflite_accuracy is not None else self.keras_accuracy


def _fingerprint(config, upto):
  """Hash of what stage `upto` (0: baseline) depends on."""
  model = dict(config["model"])
  if model["file"]:
    model["file_sha256"] = hashlib.sha256(pathlib.Path(model["file"]).read_bytes()).hexdigest()
  relevant = {"model": model, "dataset": config["dataset"], "training": config["training"],
              "strategies": config["strategies"][:upto]}
  return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


class _Job:
  """The state one run carries from stage to stage."""

  def __init__(self, config, workdir, callbacks):
    self.config, self.workdir = config, pathlib.Path(workdir)
    self.callbacks = list(callbacks)
    self.training = config["training"]
    self.model = None  # the current Keras model
    self.rows = []
    self.plots = []
    self._data = None

  @property
  def data(self):
    if self._data is None:
      (x_train, y_train), (x_test, y_test) = datasets.load(self.config["dataset"])
      n, m = self.training["train_examples"], self.training["test_examples"]
      self._data = (x_train[:n], y_train[:n]), (x_test[:m], y_test[:m])
    return self._data

  # Measuring -----------------------------------------------------------------------------------

  def row(self, stage, kind, tflite_path, started):
    model = self.model
    (_, _), (x_test, y_test) = self.data
    prof = profile(model)
    tflite_acc = tflite_kb = None
    if tflite_path is not None:
      tflite_acc = accuracy(TFLiteRunner(tflite_path).predict(x_test), y_test)
      tflite_kb = pathlib.Path(tflite_path).stat().st_size / 1024
    return Row(stage, kind, model_accuracy(model, x_test, y_test), tflite_acc, prof.total_params,
               prof.total_macs, tflite_kb, None if tflite_path is None else str(tflite_path),
               seconds=time.time() - started)

  # Training --------------------------------------------------------------------------------------

  def fit(self, model, epochs, learning_rate, stage_dir, teacher_config=None):
    """Trains `model` (or distills into it) for `epochs`, resumable within the stage."""
    (x_train, y_train), _ = self.data
    t = self.training
    schedule = finetune_schedule(learning_rate, epochs, len(x_train), t["batch_size"])
    callbacks = [keras.callbacks.BackupAndRestore(str(stage_dir / "backup"))] + self.callbacks
    if teacher_config is None:
      fit_classifier(model, x_train, y_train, epochs, t["batch_size"], schedule, t["seed"],
                     callbacks=callbacks)
      return
    keras.utils.set_random_seed(t["seed"])
    distiller = distill_lib.Distiller(model, self.teacher(teacher_config["teacher"]),
                                      self.distill_losses(teacher_config),
                                      teacher_config["hard_label_weight"])
    distill_lib.fit_distiller(distiller, x_train, y_train, epochs, t["batch_size"], schedule,
                              callbacks=callbacks)

  def teacher(self, source):
    if source == "baseline":
      return keras.models.load_model(self.workdir / "stages" / "00_baseline" / "model.keras",
                                     compile=False)
    return keras.models.load_model(source, compile=False)

  @staticmethod
  def distill_losses(spec):
    terms = []
    for name in spec["losses"]:
      if name == "soft_label":
        terms.append(distill_lib.SoftLabel(spec["temperature"]))
      elif name == "fitnet":
        terms.append(distill_lib.FitNet(spec["hint_layer"], spec["hint_layer"]))
      else:
        terms.append(distill_lib.L2())
    return terms

  # Stages ----------------------------------------------------------------------------------------

  def baseline(self, stage_dir):
    source = self.config["model"]
    if source["file"]:
      self.model = keras.models.load_model(source["file"], compile=False)
    else:
      keras.utils.set_random_seed(self.training["seed"])
      self.model = models.get(source["reference"])
      models.adapt_normalization(self.model, self.data[0][0])
      logging.info("baseline: training %s for %d epochs", source["reference"],
                   source["train_epochs"])
      self.fit(self.model, source["train_epochs"], self.training["learning_rate"], stage_dir)
    return convert(self.model, "float32", output_path=stage_dir / "model.tflite")

  def prune(self, spec, stage_dir):
    (x_train, y_train), _ = self.data
    if spec["ratios"] is not None:
      ratios = spec["ratios"]
    elif spec["ratio"] is not None:
      ratios = spec["ratio"]
    elif not spec["sensitive"]:
      ratios = pruning.uniform_ratio_for_flops(pruning.DependencyGraph(self.model),
                                               spec["flops_reduction"], spec["criterion"],
                                               spec["align"])
    else:
      held = min(spec["held_out"], len(x_train) // 2)
      x_held, y_held = x_train[-held:], y_train[-held:]
      sens = pruning.sensitivity(self.model, lambda m: model_accuracy(m, x_held, y_held),
                                 criterion=spec["criterion"], cache=stage_dir / "sensitivity.json",
                                 plot=stage_dir / "sensitivity.png",
                                 reconstruction_images=(x_train[:spec["reconstruction_images"]]
                                                        if spec["sensitivity_refit"] else None))
      self.plots.append(stage_dir / "sensitivity.png")
      ratios = pruning.ratios_for_flops(sens, spec["flops_reduction"], align=spec["align"])
    logging.info("prune: %s ratios %s", spec["criterion"], ratios)
    refit = spec["reconstruction_images"]
    self.model = pruning.prune(self.model, ratios, spec["criterion"], spec["align"],
                               reconstruction_images=x_train[:refit] if refit else None)
    if spec["fine_tune_epochs"]:
      self.fit(self.model, spec["fine_tune_epochs"], spec["learning_rate"], stage_dir,
               spec["distill"])
    return convert(self.model, "float32", output_path=stage_dir / "model.tflite")

  def distill(self, spec, stage_dir):
    self.fit(self.model, spec["epochs"], spec["learning_rate"], stage_dir, spec)
    return convert(self.model, "float32", output_path=stage_dir / "model.tflite")

  def quantize(self, spec, stage_dir):
    config = QuantConfig(weight_bits=spec["weight_bits"], activation_bits=spec["activation_bits"],
                         weight_quantizer=spec["weight_quantizer"],
                         activation_quantizer=spec["activation_quantizer"],
                         edge_bits=spec["edge_bits"])
    self.model = quantize(self.model, config)
    if spec["epochs"]:
      self.fit(self.model, spec["epochs"], spec["learning_rate"], stage_dir, spec["distill"])
    (x_train, _), _ = self.data  # calibrates an LSTM's internal state, which QAT leaves open
    return convert(self.model, "int8", representative_data=x_train[:256],
                   output_path=stage_dir / "model.tflite")

  def ptq(self, spec, stage_dir):
    (x_train, _), _ = self.data
    return convert(self.model, spec["mode"], representative_data=x_train[:spec["num_samples"]],
                   calibration=spec["calibration"], num_samples=spec["num_samples"],
                   per_channel=spec["per_channel"], bias_correction=spec["bias_correction"],
                   output_path=stage_dir / "model.tflite")

  def export(self, spec, stage_dir):
    (x_train, _), _ = self.data
    files = []
    for mode in spec["modes"]:
      if is_quantized(self.model) and mode != "int8":
        raise ValueError(f"export: a QAT model exports as int8 only, not {mode!r}")
      path = stage_dir / f"model_{mode}.tflite"
      convert(self.model, mode, representative_data=x_train[:256], output_path=path)
      files.append(path)
    return files

  def benchmark(self, spec):
    for row in self.rows:
      if row.tflite_file and not row.latency_ms:
        row.latency_ms = {str(t): measure_latency(row.tflite_file, threads=t,
                                                  runs=spec["runs"]).median_ms
                          for t in spec["threads"]}


def _load_stage_model(path):
  with scope():  # QAT models need kslim's quantizers registered
    return keras.models.load_model(path, compile=False)


def run(config, workdir, callbacks=(), overrides=()):
  """Runs a compression job; returns its report dict (also written to the workdir).

  Args:
    config: a YAML path, or a config dict (validated here; see `kslim.pipeline.config`).
    workdir: where stages, the report and plots go; a re-run resumes from it.
    callbacks: extra Keras callbacks for every training inside the stages.
    overrides: ``key.path=value`` assignments applied to a YAML config before validation.

  Returns:
    The report: ``{"config", "rows", "baseline", "final", ...}`` (see `report.build`).

  Raises:
    ConfigError: the config is invalid (before any work starts).
  """
  if isinstance(config, (str, pathlib.Path)):
    config = config_lib.load(str(config), overrides)
  else:
    config = config_lib.validate(config)
  workdir = pathlib.Path(workdir)
  job = _Job(config, workdir, callbacks)
  stages = [("baseline", None)] + [next(iter(s.items())) for s in config["strategies"]]
  for i, (kind, spec) in enumerate(stages):
    name = f"{i:02d}_{kind}"
    stage_dir = workdir / "stages" / name
    fingerprint = _fingerprint(config, i)
    record = stage_dir / "stage.json"
    done = json.loads(record.read_text()) if record.exists() else None
    if done is not None and done["fingerprint"] == fingerprint:
      logging.info("stage %s: unchanged, reusing %s", name, stage_dir)
      if (stage_dir / "model.keras").exists():
        job.model = _load_stage_model(stage_dir / "model.keras")
      if kind == "benchmark":
        for row, latency in zip(job.rows, done["latency_ms"]):
          row.latency_ms = latency
      job.rows += [Row(**r) for r in done["rows"]]
      job.plots += [pathlib.Path(p) for p in done.get("plots", [])]
      continue
    started_path = stage_dir / "started.json"
    if started_path.exists() and json.loads(started_path.read_text()) != fingerprint:
      shutil.rmtree(stage_dir)  # left by a run of another config: nothing in it is valid
    stage_dir.mkdir(parents=True, exist_ok=True)
    started_path.write_text(json.dumps(fingerprint))
    logging.info("stage %s", name)
    started, plots_before = time.time(), len(job.plots)
    new_rows = []
    if kind == "benchmark":
      job.benchmark(spec)
    elif kind == "export":
      new_rows = [job.row(f"{name}:{p.stem}", kind, p, started) for p in job.export(spec, stage_dir)]
    else:
      if kind == "baseline":
        job.baseline(stage_dir)
      else:
        getattr(job, kind)(spec, stage_dir)
      if kind != "ptq":
        job.model.save(stage_dir / "model.keras")
      new_rows = [job.row(name, kind, stage_dir / "model.tflite", started)]
    job.rows += new_rows
    record.write_text(json.dumps({
        "fingerprint": fingerprint, "rows": [dataclasses.asdict(r) for r in new_rows],
        "latency_ms": [r.latency_ms for r in job.rows],
        "plots": [str(p) for p in job.plots[plots_before:]]}, indent=1))
    if (stage_dir / "backup").exists():
      shutil.rmtree(stage_dir / "backup")
  return report_lib.write(config, job.rows, job.plots, workdir)
