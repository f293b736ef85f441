"""Tiny .tflite classifiers (float32 and full-integer int8) for the tflite_tools tests."""

import os

import numpy as np
import tensorflow as tf

from kslim._keras import keras

#: The examples the int8 model is calibrated on (so evaluating on them never clips).
CALIBRATION = np.random.default_rng(0).random((32, 8, 8, 1), dtype=np.float32)


def classifier(seed=0):
  """An 8x8x1 -> 3-class conv net, weights (biases too, so no two buffers are equal and the
  converter deduplicates none) fixed by `seed`."""
  keras.utils.set_random_seed(seed)
  model = keras.Sequential([
      keras.Input((8, 8, 1)),
      keras.layers.Conv2D(4, 3, activation="relu"),
      keras.layers.DepthwiseConv2D(3, padding="same"),
      keras.layers.MaxPooling2D(),
      keras.layers.Flatten(),
      keras.layers.Dense(3),
  ])
  rng = np.random.default_rng(seed)
  model.set_weights([w + rng.normal(0, 0.1, w.shape).astype(np.float32) if w.ndim == 1 else w
                     for w in model.get_weights()])
  return model


def float_bytes(model):
  return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def int8_bytes(model, calibration=CALIBRATION):
  """Full-integer conversion with int8 input and output, calibrated on `calibration`."""
  converter = tf.lite.TFLiteConverter.from_keras_model(model)
  converter.optimizations = [tf.lite.Optimize.DEFAULT]
  converter.representative_dataset = lambda: ([x[None]] for x in calibration)
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
  converter.inference_input_type = tf.int8
  converter.inference_output_type = tf.int8
  return converter.convert()


def write_pair(directory, seed=0):
  """Writes ``float.tflite`` and ``int8.tflite`` of one `classifier` into `directory`.

  Returns:
    ``(keras model, float path, int8 path)``.
  """
  model = classifier(seed)
  paths = []
  for name, convert in (("float.tflite", float_bytes), ("int8.tflite", int8_bytes)):
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
      f.write(convert(model))
    paths.append(path)
  return (model, *paths)
