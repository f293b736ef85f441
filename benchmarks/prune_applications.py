"""Check: every keras.applications architecture prunes with every criterion and converts.

The nine architectures of issue 6 (weights=None, 10 classes, 32x32 inputs; Xception 71x71,
its minimum), each pruned at --ratio with l1, l2, fpgm, bn_gamma and opt_slim; each pruned
model's output shape is checked, it is profiled and converted to a float32 TFLite file.
Prints a table and writes benchmarks/results/prune_applications.json.

Usage: .venv/bin/python benchmarks/prune_applications.py [--models=MobileNet,ResNet50]
"""

import time

from absl import app, flags
import numpy as np
import tensorflow as tf

from _results import write_results

import kslim
from kslim._keras import keras
from kslim._table import format_table
from kslim.cli._common import quiet_tensorflow
from kslim.pruning.criteria import Criterion

_A = keras.applications
ARCHITECTURES = {
    "MobileNet": (_A.MobileNet, {"alpha": 0.25}),
    "MobileNetV2": (_A.MobileNetV2, {"alpha": 0.35}),
    "MobileNetV3Small": (_A.MobileNetV3Small, {"alpha": 0.75}),
    "ResNet50": (_A.ResNet50, {}),
    "ResNet50V2": (_A.ResNet50V2, {}),
    "DenseNet121": (_A.DenseNet121, {}),
    "EfficientNetB0": (_A.EfficientNetB0, {}),
    "NASNetMobile": (_A.NASNetMobile, {"include_top": False, "pooling": "avg"}),
    "Xception": (_A.Xception, {}),
}

_OUTPUT = flags.DEFINE_string("output", "benchmarks/results/prune_applications.json",
                              "JSON results.")
_MODELS = flags.DEFINE_list("models", list(ARCHITECTURES), "Architectures to check.")
_RATIO = flags.DEFINE_float("ratio", 0.3, "Uniform pruning ratio.")


def _build(name):
  constructor, extra = ARCHITECTURES[name]
  kwargs = {"weights": None, "input_shape": (71, 71, 3) if name == "Xception" else (32, 32, 3)}
  if extra.get("include_top", True):
    kwargs["classes"] = 10
  return constructor(**kwargs, **extra)


def main(argv):
  del argv
  quiet_tensorflow()
  rows = []
  for name in _MODELS.value:
    model = _build(name)
    base = kslim.profile(model)
    x = np.random.default_rng(0).uniform(0, 255, (1,) + model.input_shape[1:]).astype("float32")
    for criterion in Criterion:
      start = time.perf_counter()
      pruned = kslim.prune(model, _RATIO.value, criterion=criterion.value)
      prune_s = time.perf_counter() - start
      prof = kslim.profile(pruned)
      content = tf.lite.TFLiteConverter.from_keras_model(pruned).convert()
      rows.append({"model": name, "criterion": criterion.value,
                   "same_output_shape": pruned(x).shape == model(x).shape,
                   "params": prof.total_params, "params_ratio": prof.total_params / base.total_params,
                   "macs": prof.total_macs, "macs_ratio": prof.total_macs / base.total_macs,
                   "tflite_kb": len(content) / 1024, "prune_s": prune_s})
      print(rows[-1], flush=True)
  print(format_table(
      ["Model", "Criterion", "Shape ok", "Params", "MACs", "TFLite KB", "Prune s"],
      [[r["model"], r["criterion"], str(r["same_output_shape"]), f"{r['params_ratio']:.2f}x",
        f"{r['macs_ratio']:.2f}x", f"{r['tflite_kb']:.0f}", f"{r['prune_s']:.1f}"] for r in rows],
      left_columns=2))
  write_results(_OUTPUT.value, "prune_applications", {"ratio": _RATIO.value}, rows)


if __name__ == "__main__":
  app.run(main)
