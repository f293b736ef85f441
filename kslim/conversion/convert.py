"""kslim.convert: a tf_keras model (float or QAT) to a TFLite flatbuffer with a report."""

import enum
import pathlib

import numpy as np
import tensorflow as tf

from kslim._keras import check_model
from kslim.conversion import report as report_lib
from kslim.quantization import quant_ops
from kslim.quantization.quantize import activation_quantizers
from kslim.quantization.quantize import is_quantized

__all__ = ["Mode", "IoDtype", "convert"]

# Below this an activation range means "never trained or calibrated".
_EMPTY_RANGE = 1e-6
_PARITY_EXAMPLES = 256


class _Choice(str, enum.Enum):

  @classmethod
  def parse(cls, value, what):
    """`value` as a member; a clear ValueError names the bad value and the allowed ones."""
    try:
      return cls(value)
    except ValueError:
      raise ValueError(f"unknown {what} {value!r}; choose one of "
                       f"{[m.value for m in cls]}") from None


class Mode(_Choice):
  """TFLite conversion modes, named as TFLite's post-training quantization guide names them."""
  FLOAT32 = "float32"
  FLOAT16 = "float16"
  DYNAMIC = "dynamic"
  INT8 = "int8"


class IoDtype(_Choice):
  """The dtype of an int8 model's input and output tensors."""
  INT8 = "int8"
  FLOAT32 = "float32"


def convert(model, mode="float32", output_path=None, io_dtype="int8", representative_data=None,
            report=False):
  """Converts a tf_keras model to a TFLite flatbuffer.

  A model from `kslim.quantize` converts to int8 with the ranges it learned in training (no
  calibration). A float model converts to int8 with TFLite's calibration over
  `representative_data`.

  Args:
    model: a tf_keras model.
    mode: ``"float32"`` (no quantization), ``"float16"`` (float16 weights), ``"dynamic"`` (int8
      weights, activations quantized on the fly) or ``"int8"`` (integer weights and activations).
    output_path: where to write the file as well, if given.
    io_dtype: for ``"int8"``: the input/output tensors' dtype, ``"int8"`` or ``"float32"``.
    representative_data: float inputs: calibration data for a float model's int8 conversion;
      for a QAT model, the examples of the parity report (default: random inputs in the
      input's quantization range).
    report: add the per-layer Keras-vs-TFLite parity of a QAT model to the report.

  Returns:
    A `TFLiteModel`: the flatbuffer bytes, with ``.report`` (a `ConversionReport`: size, ops by
    dtype, ops left in float and, with `report`, per-layer parity).

  Raises:
    TypeError: `model` is not a tf_keras model.
    ValueError: an unknown mode or io_dtype; a QAT model converted to a float mode or with an
      untrained activation range; int8 for a float model without representative data.
  """
  check_model(model, "kslim.convert")
  mode = Mode.parse(mode, "conversion mode")
  io_dtype = IoDtype.parse(io_dtype, "io_dtype")
  qat = is_quantized(model)
  if qat and mode is not Mode.INT8:
    raise ValueError(f"kslim.convert: model {model.name!r} is a QAT model (kslim.quantize); "
                     f"convert it with mode='int8', not {mode.value!r}")
  converter = tf.lite.TFLiteConverter.from_keras_model(model)
  if mode is not Mode.FLOAT32:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  if mode is Mode.FLOAT16:
    converter.target_spec.supported_types = [tf.float16]
  if mode is Mode.INT8:
    if qat:
      _check_trained(model)
    else:
      converter.representative_dataset = _calibration_data(model, representative_data)
      converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if io_dtype is IoDtype.INT8:
      converter.inference_input_type = tf.int8
      converter.inference_output_type = tf.int8
  with quant_ops.int8_container():  # sub-8-bit grids as int8 tensors (see its docstring)
    content = report_lib.TFLiteModel(converter.convert())
  if output_path is not None:
    path = pathlib.Path(output_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
  parity_inputs = None
  if report and qat:
    parity_inputs = (np.asarray(representative_data[:_PARITY_EXAMPLES], np.float32)
                     if representative_data is not None else _random_inputs(model))
  content.report = report_lib.build_report(mode.value, content, model if report else None,
                                           parity_inputs)
  return content


def _check_trained(model):
  for layer in activation_quantizers(model):
    low, high = layer.range()
    if high - low < _EMPTY_RANGE:
      raise ValueError(
          f"kslim.convert: activation range of layer {layer.name!r} is empty ([{low}, {high}]): "
          "the QAT model has not seen data yet. Train it (fit) before converting.")


def _single_input(model):
  if len(model.inputs) != 1:
    raise ValueError(f"kslim.convert: model {model.name!r} has {len(model.inputs)} inputs; "
                     "int8 calibration and the parity report take single-input models")
  return model.inputs[0]


def _calibration_data(model, data, samples=200):
  """A representative_dataset generator over a numpy array, checked against the input."""
  tensor = _single_input(model)
  if data is None:
    raise ValueError("kslim.convert: mode='int8' for a float model needs representative_data "
                     "(a few hundred input examples) to calibrate activation ranges; or "
                     "train it with kslim.quantize first")
  data = np.asarray(data, np.float32)
  expected = tuple(tensor.shape[1:])
  if data.ndim != len(expected) + 1 or any(
      e is not None and e != d for e, d in zip(expected, data.shape[1:])):
    raise ValueError(f"kslim.convert: representative_data has shape {data.shape}; the model's "
                     f"input {tensor.name!r} expects (N,) + {expected}")
  if len(data) == 0:
    raise ValueError("kslim.convert: representative_data is empty")

  def generator():
    for example in data[:samples]:
      yield [example[None]]
  return generator


def _random_inputs(model, count=_PARITY_EXAMPLES, seed=0):
  tensor = _single_input(model)
  low, high = activation_quantizers(model)[0].range()
  shape = (count,) + tuple(tensor.shape[1:])
  return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)
