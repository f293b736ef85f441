"""kslim.convert: a tf_keras model (float or QAT) to a TFLite flatbuffer with a report."""

import pathlib

import numpy as np
import tensorflow as tf

from kslim._enum import Choice
from kslim._keras import check_model, keras
from kslim.conversion import bias_correction as bias_correction_lib
from kslim.conversion import calibration as calibration_lib
from kslim.conversion import pinned
from kslim.conversion import report as report_lib
from kslim.conversion import representative_data as representative_data_lib
from kslim.quantization import quant_ops
from kslim.quantization.quantize import activation_quantizers
from kslim.quantization.quantize import input_quantizer
from kslim.quantization.quantize import is_quantized
from kslim.quantization.quantize import scope as quantization_scope

__all__ = ["Mode", "IoDtype", "convert"]

# Below this an activation range means "never trained or calibrated".
_EMPTY_RANGE = 1e-6
_PARITY_EXAMPLES = 256


class Mode(Choice):
  """TFLite conversion modes, named as TFLite's post-training quantization guide names them."""
  FLOAT32 = "float32"
  FLOAT16 = "float16"
  DYNAMIC = "dynamic"
  INT8 = "int8"
  INT16X8 = "int16x8"


class IoDtype(Choice):
  """The dtype of an integer model's input and output tensors."""
  INT8 = "int8"
  INT16 = "int16"
  FLOAT32 = "float32"


_CALIBRATED = (Mode.INT8, Mode.INT16X8)
_IO_DTYPES = {Mode.INT8: (IoDtype.INT8, IoDtype.FLOAT32),
              Mode.INT16X8: (IoDtype.INT16, IoDtype.FLOAT32)}
_TF_DTYPES = {IoDtype.INT8: tf.int8, IoDtype.INT16: tf.int16}


def convert(model, mode="float32", representative_data=None, calibration="minmax",
            num_samples=256, per_channel=True, bias_correction=False, io_dtype=None,
            output_path=None, report=False, percentile=calibration_lib.DEFAULT_PERCENTILE):
  """Converts a tf_keras model to a TFLite flatbuffer.

  A model from `kslim.quantize` converts to int8 with the ranges it learned in training (no
  calibration). A float model converts in any mode; the integer modes calibrate activation
  ranges on `representative_data`, with TFLite's min/max or one of kslim's calibrators (see
  `kslim.conversion.calibration`).

  TFLite converts a rolled RNN (LSTM, GRU) only over a fixed batch, so such a model over a
  dynamic batch converts as a copy over a batch of 1. A QAT model with an LSTM (or a float one
  that kslim calibrates) reaches TFLite's int8 LSTM only through its calibrating quantizer,
  with the model's ranges pinned (`kslim.conversion.pinned`); `representative_data` then
  calibrates the LSTM's internal state. TFLite's own calibrator crashes the process on the
  WHILE loop a GRU or SimpleRNN becomes, so for those ``calibration="minmax"`` runs as kslim's
  calibration of the same ranges (``"percentile"`` at 100); int16x8, which has no 16x8 LSTM
  kernel either, is refused for recurrent models.

  Args:
    model: a tf_keras model.
    mode: ``"float32"`` (no quantization), ``"float16"`` (float16 weights), ``"dynamic"`` (int8
      weights, activations quantized on the fly), ``"int8"`` (integer weights and
      activations) or ``"int16x8"`` (int16 activations, int8 weights).
    representative_data: input examples (a numpy array, a `tf.data.Dataset` or a generator):
      calibration data for a float model's integer conversion; for a QAT model, the examples
      of the parity report (default: random inputs in the input's quantization range).
    calibration: ``"minmax"`` (TFLite's own), ``"percentile"``, ``"kl"`` or ``"mse"``.
    num_samples: the most examples calibration uses.
    per_channel: int8 kernels get one range per output channel (else one per kernel).
    bias_correction: correct each layer's bias for the mean shift quantization causes
      (`kslim.conversion.bias_correction`).
    io_dtype: for the integer modes: the input/output tensors' dtype, the mode's integer type
      (the default) or ``"float32"``.
    output_path: where to write the file as well, if given.
    report: add the per-layer Keras-vs-TFLite parity of a QAT or kslim-calibrated model to
      the report.
    percentile: p for ``calibration="percentile"``.

  Returns:
    A `TFLiteModel`: the flatbuffer bytes, with ``.report`` (a `ConversionReport`: size, ops by
    dtype, ops left in float and why and, with `report`, per-layer parity).

  Raises:
    TypeError: `model` is not a tf_keras model; `representative_data` of the wrong kind.
    ValueError: an unknown or inconsistent option; a QAT model converted to another mode than
      int8 or with an untrained activation range; a QAT model with an LSTM and no
      representative data; int16x8 of a recurrent model; bad representative data.
  """
  check_model(model, "kslim.convert")
  rnns = [layer.name for layer in model.submodules if _is_rolled_rnn(layer)]
  if rnns and any(t.shape[0] is None for t in model.inputs):
    model = _with_batch_one(model)
  mode = Mode.parse(mode, "conversion mode")
  calibration = calibration_lib.Calibration.parse(calibration, "calibration")
  io_dtype = _io_dtype(mode, io_dtype)
  qat = is_quantized(model)
  if rnns and mode is Mode.INT16X8:
    raise ValueError(f"kslim.convert: TFLite's int16x8 mode cannot hold recurrent layer(s) "
                     f"{rnns} (no 16x8 LSTM kernel; its calibrator crashes on a GRU's WHILE "
                     "loop); use mode='int8'")
  if (mode is Mode.INT8 and calibration is calibration_lib.Calibration.MINMAX
      and not qat and any(_is_loop_rnn(l) for l in model.submodules)):
    # TFLite's calibrator crashes the process (a segfault) on the WHILE loop such a layer
    # lowers to; kslim's calibration reaches the same min/max ranges through fake-quant ops.
    calibration, percentile = calibration_lib.Calibration.PERCENTILE, 100.0
  own_calibration = (calibration is not calibration_lib.Calibration.MINMAX) or bias_correction
  if qat and mode is not Mode.INT8:
    raise ValueError(f"kslim.convert: model {model.name!r} is a QAT model (kslim.quantize); "
                     f"convert it with mode='int8', not {mode.value!r}")
  if qat and own_calibration:
    raise ValueError("kslim.convert: a QAT model is converted with the ranges it learned; "
                     "calibration and bias_correction apply to float models")
  if own_calibration and mode is not Mode.INT8:
    raise ValueError(f"kslim.convert: calibration={calibration.value!r} and bias_correction "
                     f"apply to mode='int8'; {mode.value!r} uses TFLite's min/max calibration")
  # An LSTM in a QAT model (or one kslim calibrates) reaches int8 only through `pinned`.
  recurrent = mode is Mode.INT8 and pinned.needs_calibration(model)
  if recurrent and qat and representative_data is None:
    raise ValueError(f"kslim.convert: QAT model {model.name!r} holds an LSTM; TFLite's int8 "
                     "LSTM needs the ranges of its internal state calibrated: pass "
                     "representative_data (a few hundred input examples)")
  examples = None
  if mode in _CALIBRATED and (not qat or recurrent):
    examples = representative_data_lib.examples(
        representative_data, _single_input(model).shape[1:], num_samples)
  elif representative_data is not None and report and qat:
    examples = representative_data_lib.examples(
        representative_data, _single_input(model).shape[1:], _PARITY_EXAMPLES, min_samples=1)
  if own_calibration:
    model = calibration_lib.calibrate(model, examples, calibration, per_channel, percentile)
    if bias_correction:
      bias_correction_lib.correct_biases(model, examples)
    qat = True
  if qat and mode in _CALIBRATED:
    _check_trained(model)
  if recurrent and qat:
    io_type = _TF_DTYPES.get(io_dtype, tf.float32)
    content = report_lib.TFLiteModel(pinned.convert(model, examples, io_type, io_type))
  else:
    content = report_lib.TFLiteModel(_tflite_convert(model, mode, qat, examples, per_channel,
                                                     io_dtype))
  if output_path is not None:
    path = pathlib.Path(output_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
  parity_inputs = None
  if report and qat:
    parity_inputs = (examples[:_PARITY_EXAMPLES] if examples is not None
                     else _random_inputs(model))
  content.report = report_lib.build_report(mode.value, content, model if report else None,
                                           parity_inputs)
  return content


def _tflite_convert(model, mode, qat, examples, per_channel, io_dtype):
  """TFLiteConverter in `mode`: a QAT model with its fake-quant ranges, a float model
  calibrated on `examples` by TFLite."""
  converter = tf.lite.TFLiteConverter.from_keras_model(model)
  if mode is not Mode.FLOAT32:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  if mode is Mode.FLOAT16:
    converter.target_spec.supported_types = [tf.float16]
  if mode in _CALIBRATED:
    if not qat:
      converter.representative_dataset = lambda: ([example[None]] for example in examples)
      converter.target_spec.supported_ops = [
          tf.lite.OpsSet.TFLITE_BUILTINS_INT8 if mode is Mode.INT8 else
          tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
      converter._experimental_disable_per_channel = not per_channel  # pylint: disable=protected-access
    if io_dtype is not IoDtype.FLOAT32:
      converter.inference_input_type = _TF_DTYPES[io_dtype]
      converter.inference_output_type = _TF_DTYPES[io_dtype]
  with quant_ops.int8_container():  # sub-8-bit grids as int8 tensors (see its docstring)
    return converter.convert()


def _io_dtype(mode, io_dtype):
  if mode not in _CALIBRATED:
    if io_dtype is not None:
      raise ValueError(f"kslim.convert: io_dtype applies to the integer modes, not "
                       f"{mode.value!r}")
    return None
  allowed = _IO_DTYPES[mode]
  io_dtype = allowed[0] if io_dtype is None else IoDtype.parse(io_dtype, "io_dtype")
  if io_dtype not in allowed:
    raise ValueError(f"kslim.convert: io_dtype {io_dtype.value!r} does not fit mode "
                     f"{mode.value!r}; choose one of {[d.value for d in allowed]}")
  return io_dtype


def _check_trained(model):
  for layer in activation_quantizers(model):
    low, high = layer.range()
    if high - low < _EMPTY_RANGE:
      raise ValueError(
          f"kslim.convert: activation range of layer {layer.name!r} is empty ([{low}, {high}]): "
          "the QAT model has not seen data yet. Train it (fit) before converting.")


def _is_rolled_rnn(layer):
  return isinstance(layer, keras.layers.RNN) and not layer.unroll


def _is_loop_rnn(layer):
  """A recurrent layer TFLite runs as a WHILE loop of ops (only an LSTM fuses into one op)."""
  return _is_rolled_rnn(layer) and not isinstance(layer, keras.layers.LSTM)


def _with_batch_one(model):
  """A copy of `model` over a batch of 1, weights copied: TFLite converts a rolled RNN only
  over a fixed batch (an LSTM fuses into one op), while models train over any."""
  inputs = [keras.Input(batch_size=1, shape=t.shape[1:], dtype=t.dtype,
                        name=t.name.split(":")[0]) for t in model.inputs]
  with quantization_scope():  # QAT layers; a float model needs none
    fixed = keras.models.clone_model(model, input_tensors=inputs)
  fixed.set_weights(model.get_weights())
  return fixed


def _single_input(model):
  if len(model.inputs) != 1:
    raise ValueError(f"kslim.convert: model {model.name!r} has {len(model.inputs)} inputs; "
                     "int8 calibration and the parity report take single-input models")
  return model.inputs[0]


def _random_inputs(model, count=_PARITY_EXAMPLES, seed=0):
  """Inputs uniform over the range the QAT model quantizes its input to."""
  tensor = _single_input(model)
  layer = input_quantizer(model, tensor)
  low, high = layer.range() if layer is not None else (-1.0, 1.0)  # a float input: any range
  shape = (count,) + tuple(tensor.shape[1:])
  return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)
