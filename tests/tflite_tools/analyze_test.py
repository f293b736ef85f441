"""Tests for tflite_tools.analyze (tflite-analyze)."""

import json
import os

import numpy as np
import tensorflow as tf
from absl.testing import absltest

from kslim._keras import keras
from tests.binaries import run_binary
from tests.tflite_tools import tiny_models
from tflite_tools import analyze


def setUpModule():
  global _MODEL, _FLOAT, _INT8  # pylint: disable=global-statement
  _MODEL, _FLOAT, _INT8 = tiny_models.write_pair(absltest.get_default_test_tmpdir())


class AnalyzeTest(absltest.TestCase):

  def test_float_model(self):
    a = analyze.analyze(_FLOAT)
    self.assertEqual(a.size_bytes, os.path.getsize(_FLOAT))
    self.assertEqual(a.weights_bytes + a.graph_bytes, a.size_bytes)
    # Every Keras parameter is one float32 constant (191 parameters); the rest is int32 shapes.
    self.assertEqual(a.weights_bytes_by_dtype["float32"], 4 * _MODEL.count_params())
    self.assertEqual(a.op_histogram, {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "MAX_POOL_2D": 1,
                                      "RESHAPE": 1, "FULLY_CONNECTED": 1})
    self.assertEqual((a.quantized_ops, a.hybrid_ops), ({}, {}))
    self.assertEqual(a.float_ops, a.op_histogram)
    self.assertEqual(a.quantization["weights"]["tensors"], 0)

  def test_int8_model(self):
    a = analyze.analyze(_INT8)
    kernels = sum(int(np.prod(w.shape)) for w in _MODEL.weights if w.shape.rank > 1)
    self.assertEqual(a.weights_bytes_by_dtype["int8"], kernels)  # 36 + 36 + 108
    self.assertEqual(a.float_ops, {})
    self.assertEqual(a.quantized_ops, a.op_histogram)
    self.assertEqual(a.ops_by_dtype, {"int8": a.op_histogram})
    weights, activations = a.quantization["weights"], a.quantization["activations"]
    # Conv, depthwise and dense kernels and their int32 biases are all per-channel.
    self.assertEqual((weights["tensors"], weights["per_channel"], weights["dtypes"]),
                     (6, 6, {"int8": 3, "int32": 3}))
    self.assertEqual(weights["zero_points"], [0])  # symmetric weights
    self.assertEqual(activations["per_channel"], 0)
    self.assertEqual(activations["dtypes"], {"int8": activations["tensors"]})
    self.assertGreater(a.size_bytes, a.weights_bytes)
    text = str(a)
    self.assertIn("float ops: none", text)
    self.assertIn("quantized weights: 6 tensors (6 per-channel, 0 per-tensor", text)

  def test_dynamic_range_ops_are_hybrid(self):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(64), keras.layers.Dense(3)])
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    a = analyze.analyze(converter.convert())
    # Only the 64x64 kernel has >= 1024 elements, TFLite's threshold for quantizing weights.
    self.assertEqual(a.hybrid_ops, {"FULLY_CONNECTED": 1})
    self.assertEqual(a.float_ops["FULLY_CONNECTED"], 2)
    self.assertEqual(a.weights_bytes_by_dtype["int8"], 64 * 64)

  def test_binary_prints_and_writes_json(self):
    out = os.path.join(self.create_tempdir().full_path, "a.json")
    proc = run_binary("tflite_tools.analyze", _INT8, f"--json={out}")
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    self.assertIn("computing in int8: CONV_2D x1", proc.stdout)
    self.assertEqual(json.load(open(out)), analyze.analyze(_INT8).to_dict())

  def test_missing_and_corrupt_files(self):
    proc = run_binary("tflite_tools.analyze", "/no/model.tflite")
    self.assertIn("TFLite file /no/model.tflite not found", proc.stderr)
    bad = self.create_tempfile("bad.tflite", content="\0" * 64).full_path
    with self.assertRaisesRegex(ValueError, "bad.tflite is not a TFLite model"):
      analyze.analyze(bad)


if __name__ == "__main__":
  absltest.main()
