"""Benchmark: quantization-aware training against fair float and tfmot baselines.

For each reference model: the 5-epoch float baseline (cached by the pipeline), then every
variant gets the same extra epochs with the same schedule (cosine decay from
--learning_rate): the float model fine-tuned (the fair baseline), kslim QAT int8, tfmot's
`quantize_model`, 4-bit abs_max, 4-bit PACT, PACT w2/a4 (these three with 8-bit first/last
layers, as in the papers; PACT once more with every layer at 4 bits), and PaddleSlim's 8-bit
quantizer grid (activations abs_max | moving_average_abs_max x weights abs_max |
channel_wise_abs_max).
Accuracy is measured on the full 10,000-image test set from each TFLite file; size, latency
at 1 thread (median, as a ratio to the float TFLite file measured in the same run), training
time per epoch relative to the float fine-tune, and Keras/TFLite top-1 agreement.
Prints a table and writes benchmarks/results/qat.json.

Usage: .venv/bin/python benchmarks/qat.py [--models=reference_cnn] [--extra_epochs=1]
"""

import pathlib
import time

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
from absl import app, flags, logging

from _results import rows_for, write_results

from kslim import pipeline
from kslim._keras import keras
from kslim._table import format_table
from kslim.cli._common import quiet_tensorflow
from kslim.conversion import convert
from kslim.models import REFERENCE_MODELS
from kslim.profiling import profile
from kslim.quantization import QuantConfig, quantize
from kslim.training import accuracy, finetune_schedule, fit_classifier
from tflite_tools.benchmark_lib import measure_latency
from tflite_tools.runner import TFLiteRunner

_WORKDIR = flags.DEFINE_string("workdir", "runs/bench", "Cache and TFLite files.")
_OUTPUT = flags.DEFINE_string("output", "benchmarks/results/qat.json", "JSON results.")
_MODELS = flags.DEFINE_list("models", ["reference_cnn", "mini_mobilenet_v2"],
                            f"Reference models, of {sorted(REFERENCE_MODELS)}.")
_EXTRA_EPOCHS = flags.DEFINE_integer("extra_epochs", 1, "Fine-tuning epochs per variant.",
                                     lower_bound=1)
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 2e-4, "Peak fine-tuning learning rate.")
_VARIANTS = flags.DEFINE_list("variants", None, "Run only these variants (default: all).")

# name -> QuantConfig fields (None: float fine-tune; "tfmot": tfmot.quantize_model). The low-bit
# variants keep the first and last layers and the input/output ranges at 8 bits, as the PACT,
# DoReFa and LSQ papers do; "PACT w4a4 all 4-bit" shows what that costs when not done.
_EDGES = {"edge_bits": 8}
VARIANTS = {
    "fp32 fine-tuned": None,
    "kslim QAT int8": {},
    "tfmot QAT int8": "tfmot",
    "abs_max w4a4": {"weight_bits": 4, "activation_bits": 4, "activation_quantizer": "abs_max",
                     **_EDGES},
    "PACT w4a4": {"weight_bits": 4, "activation_bits": 4, "activation_quantizer": "pact",
                  **_EDGES},
    "PACT w2a4 MSE-w": {"weight_bits": 2, "activation_bits": 4, "activation_quantizer": "pact",
                        "weight_quantizer": "channel_wise_mse", **_EDGES},
    "PACT w4a4 all 4-bit": {"weight_bits": 4, "activation_bits": 4,
                            "activation_quantizer": "pact"},
    "paddle a:abs_max w:abs_max": {"activation_quantizer": "abs_max",
                                   "weight_quantizer": "abs_max"},
    "paddle a:abs_max w:channel_wise": {"activation_quantizer": "abs_max"},
    "paddle a:moving_avg w:abs_max": {"weight_quantizer": "abs_max"},
}


def _variant_model(baseline, spec):
  model = keras.models.clone_model(baseline)
  model.set_weights(baseline.get_weights())
  if spec is None:
    return model
  if spec == "tfmot":
    return tfmot.quantization.keras.quantize_model(model)
  return quantize(model, QuantConfig(**spec))


def _export(model, spec, path, x_train):
  if spec is None:
    return convert(model, "float32", output_path=path)
  if spec == "tfmot":  # tfmot's own export path: the converter reads its fake-quant ranges
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    content = converter.convert()
    path.write_bytes(content)
    return content
  # Training images calibrate what no QAT range covers (an LSTM's internal state).
  return convert(model, "int8", output_path=path, io_dtype="float32",
                 representative_data=x_train[:256])


def _measure(name, model, content, path, x_test, y_test, float_ms):
  keras_logits = model.predict(x_test, batch_size=512, verbose=0)
  tflite_logits = TFLiteRunner(content).predict(x_test)
  latency = measure_latency(path, threads=1, runs=200).median_ms
  prof = profile(model)
  return {"stage": name, "keras_accuracy": accuracy(keras_logits, y_test),
          "tflite_accuracy": accuracy(tflite_logits, y_test),
          "agreement": float(np.mean(keras_logits.argmax(1) == tflite_logits.argmax(1))),
          "params": prof.total_params, "macs": prof.total_macs,
          "tflite_kb": len(content) / 1024, "tflite_file": str(path),
          "latency_ms": {"1": latency},
          "latency_ratio": latency / float_ms if float_ms else 1.0}


def _benchmark_model(name):
  workdir = pathlib.Path(_WORKDIR.value) / name
  settings = pipeline.Settings(model=name, threads=(1,), latency_runs=200)
  ctx = pipeline.run_stages(["baseline", "export_float32"], settings, workdir)
  (x_train, y_train), (x_test, y_test) = ctx.data
  baseline = ctx.model
  rows = [_measure(f"{name} fp32 (5 epochs)", baseline, ctx.tflite_path.read_bytes(),
                   ctx.tflite_path, x_test, y_test, float_ms=None)]
  float_ms = rows[0]["latency_ms"]["1"]  # every ratio is against this one measurement
  epoch_seconds = {}
  for variant, spec in VARIANTS.items():
    if _VARIANTS.value and variant not in _VARIANTS.value:
      continue
    logging.info("%s: %s, %d extra epoch(s)", name, variant, _EXTRA_EPOCHS.value)
    model = _variant_model(baseline, spec)
    schedule = finetune_schedule(_LEARNING_RATE.value, _EXTRA_EPOCHS.value, len(x_train))
    start = time.perf_counter()
    fit_classifier(model, x_train, y_train, _EXTRA_EPOCHS.value, learning_rate=schedule)
    epoch_seconds[variant] = (time.perf_counter() - start) / _EXTRA_EPOCHS.value
    path = workdir / f"qat_{variant.replace(' ', '_').replace(':', '-')}.tflite"
    content = _export(model, spec, path, x_train)
    row = _measure(f"{name} {variant}", model, content, path, x_test, y_test, float_ms)
    row["epoch_seconds"] = epoch_seconds[variant]
    rows.append(row)
  reference = epoch_seconds.get("fp32 fine-tuned")
  for row in rows[1:]:
    row["epoch_time_ratio"] = row["epoch_seconds"] / reference if reference else None
  return rows


def main(argv):
  del argv
  quiet_tensorflow()
  rows = rows_for(_MODELS.value, _benchmark_model)
  print(format_table(
      ["variant", "Keras acc", "TFLite acc", "agree", "KB", "ms @1", "x float", "epoch x"],
      [[r["stage"], f"{r['keras_accuracy']:.2%}", f"{r['tflite_accuracy']:.2%}",
        f"{r['agreement']:.2%}", f"{r['tflite_kb']:.1f}", f"{r['latency_ms']['1']:.3f}",
        f"{r['latency_ratio']:.2f}",
        "-" if r.get("epoch_time_ratio") is None else f"{r['epoch_time_ratio']:.2f}"]
       for r in rows]))
  write_results(_OUTPUT.value, "qat",
                f"5-epoch float baseline, then {_EXTRA_EPOCHS.value} extra epoch(s) per variant "
                f"(Adam, cosine decay from {_LEARNING_RATE.value:g}, batch 128); TFLite accuracy "
                "on the full 10,000-image test set; median latency of 200 single-image runs, "
                "1 thread", rows)


if __name__ == "__main__":
  app.run(main)
