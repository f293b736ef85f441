"""Keras model to TFLite flatbuffer, in the modes that need no calibration data."""

import enum
import pathlib

import tensorflow as tf

from kslim._keras import check_model

__all__ = ["Mode", "convert"]


class Mode(str, enum.Enum):
  """TFLite conversion modes, named as TFLite's post-training quantization guide names them."""
  FLOAT32 = "float32"
  FLOAT16 = "float16"
  DYNAMIC = "dynamic"

  @classmethod
  def parse(cls, value):
    """`value` as a Mode; a clear ValueError names the bad value and the allowed ones."""
    try:
      return cls(value)
    except ValueError:
      raise ValueError(f"unknown conversion mode {value!r}; choose one of "
                       f"{[m.value for m in cls]}") from None


def convert(model, mode="float32", output_path=None):
  """Converts a tf_keras model to a TFLite flatbuffer.

  Args:
    model: a tf_keras model.
    mode: ``"float32"`` (no quantization), ``"float16"`` (weights stored as float16) or
      ``"dynamic"`` (int8 weights, activations quantized on the fly).
    output_path: where to write the file as well, if given.

  Returns:
    The flatbuffer bytes.

  Raises:
    TypeError: `model` is not a tf_keras model.
    ValueError: `mode` is unknown.
  """
  check_model(model, "kslim.convert")
  mode = Mode.parse(mode)
  converter = tf.lite.TFLiteConverter.from_keras_model(model)
  if mode is not Mode.FLOAT32:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  if mode is Mode.FLOAT16:
    converter.target_spec.supported_types = [tf.float16]
  content = converter.convert()
  if output_path is not None:
    path = pathlib.Path(output_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
  return content
