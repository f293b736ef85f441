"""kslim.prune on keras.applications architectures (weights=None, small inputs).

Each architecture is pruned at 30% with one criterion (the five rotate over the nine models,
so every criterion meets residual, dense, squeeze-excite and separable graphs); the two
MobileNets with inverted residuals (V3: squeeze-excite and hard-swish too) are also
converted to TFLite. `benchmarks/prune_applications.py` runs the full matrix: every model with
every criterion, each converted.
"""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import kslim
from kslim._keras import keras

_A = keras.applications
# name -> (constructor, extra arguments, criterion, convert to TFLite)
ARCHITECTURES = {
    "MobileNet": (_A.MobileNet, {"alpha": 0.25}, "l1", False),
    "MobileNetV2": (_A.MobileNetV2, {"alpha": 0.35}, "l2", True),
    "MobileNetV3Small": (_A.MobileNetV3Small, {"alpha": 0.75}, "fpgm", True),
    "ResNet50": (_A.ResNet50, {}, "bn_gamma", False),
    "ResNet50V2": (_A.ResNet50V2, {}, "opt_slim", False),
    "DenseNet121": (_A.DenseNet121, {}, "l1", False),
    "EfficientNetB0": (_A.EfficientNetB0, {}, "fpgm", False),
    "NASNetMobile": (_A.NASNetMobile, {"include_top": False, "pooling": "avg"}, "l2", False),
    "Xception": (_A.Xception, {}, "bn_gamma", False),
}


def build(name):
  """The architecture with random weights, 10 classes and its smallest practical input."""
  constructor, extra, _, _ = ARCHITECTURES[name]
  kwargs = {"weights": None, "input_shape": (71, 71, 3) if name == "Xception" else (32, 32, 3)}
  if extra.get("include_top", True):
    kwargs["classes"] = 10
  return constructor(**kwargs, **extra)


class ApplicationsTest(parameterized.TestCase):

  @parameterized.named_parameters(*[(name, name) for name in ARCHITECTURES])
  def test_prunes_at_30_percent(self, name):
    _, _, criterion, to_tflite = ARCHITECTURES[name]
    model = build(name)
    pruned = kslim.prune(model, 0.3, criterion=criterion)
    x = np.random.default_rng(0).uniform(0, 255, (2,) + model.input_shape[1:]).astype(np.float32)
    self.assertEqual(pruned(x).shape, model(x).shape)
    before, after = kslim.profile(model), kslim.profile(pruned)
    # 30% of the channels on both sides of most convolutions: about half the MACs.
    self.assertLess(after.total_macs, 0.75 * before.total_macs)
    self.assertLess(after.total_params, 0.8 * before.total_params)
    if to_tflite:
      content = tf.lite.TFLiteConverter.from_keras_model(pruned).convert()
      self.assertLess(len(content), 0.8 * 4 * before.total_params)


if __name__ == "__main__":
  absltest.main()
