"""Runs a .tflite model on numpy batches with LiteRT, quantized inputs and outputs included."""

import pathlib

import numpy as np

from tflite_tools.harness import dequantize, fixed_batch, make_interpreter, pad_batch, quantize

__all__ = ["TFLiteRunner", "load_model_bytes", "quantize", "dequantize"]

# A TFLite flatbuffer carries the file identifier "TFL3" at bytes 4..8.
_IDENTIFIER = b"TFL3"


def load_model_bytes(model):
  """Returns the flatbuffer of `model` (a path or bytes), checked to be a TFLite file.

  Raises:
    FileNotFoundError: the path does not exist.
    ValueError: the content is not a TFLite flatbuffer; the message names the file.
  """
  if isinstance(model, (bytes, bytearray)):
    content, name = bytes(model), "<bytes>"
  else:
    path = pathlib.Path(model)
    if not path.is_file():
      raise FileNotFoundError(f"TFLite file {path} not found")
    content, name = path.read_bytes(), str(path)
  if len(content) < 8 or content[4:8] != _IDENTIFIER:
    raise ValueError(f"{name} is not a TFLite model (no 'TFL3' identifier); is the file "
                     "corrupt or truncated?")
  return content


class TFLiteRunner:
  """Batched inference on a TFLite model with float inputs and outputs.

  Quantized (int8/uint8/int16) inputs are quantized with the input tensor's scale and zero
  point, and quantized outputs are dequantized, so callers always deal in float arrays.

  Example:
    >>> runner = TFLiteRunner("model.tflite")
    >>> logits = runner.predict(x_test)  # (N, 10) float32
  """

  def __init__(self, model, num_threads=None, use_xnnpack=True, preserve_all_tensors=False):
    """Args:
      model: a .tflite path or its bytes.
      num_threads: interpreter threads (None: LiteRT's default).
      use_xnnpack: False runs the builtin kernels without the default XNNPACK delegate.
      preserve_all_tensors: keep every intermediate tensor readable after `predict` (for
        `intermediates`; implies the builtin kernels, as a delegate hides its tensors).
    """
    self.content = load_model_bytes(model)
    self.interpreter = make_interpreter(self.content, num_threads, use_xnnpack,
                                        preserve_all_tensors)
    self._batch = None
    self.fixed_batch = fixed_batch(self.interpreter)

  @property
  def input_details(self):
    return self.interpreter.get_input_details()

  @property
  def output_details(self):
    return self.interpreter.get_output_details()

  def resize(self, batch):
    """Sets the batch dimension of every input (no-op when unchanged)."""
    if batch == self._batch:
      return
    for detail in self.input_details:
      shape = list(detail["shape_signature"] if len(detail["shape_signature"]) else
                   detail["shape"])
      self.interpreter.resize_tensor_input(detail["index"], [batch] + shape[1:], strict=False)
    self.interpreter.allocate_tensors()
    self._batch = batch

  def _check(self, x, detail):
    expected = tuple(int(d) for d in detail["shape"][1:])
    if tuple(x.shape[1:]) != expected:
      raise ValueError(f"input {detail['name']!r} expects examples of shape {expected}, got "
                       f"{tuple(x.shape[1:])}")

  def predict(self, inputs, batch_size=256):
    """Runs the model over `inputs` (one array, or a list for multi-input models).

    Returns:
      The dequantized float32 output (a list when the model has several outputs).
    """
    inputs = [np.asarray(x) for x in (inputs if isinstance(inputs, (list, tuple)) else [inputs])]
    if len(inputs) != len(self.input_details):
      raise ValueError(f"the model has {len(self.input_details)} inputs, got {len(inputs)}")
    for x, detail in zip(inputs, self.input_details):
      self._check(x, detail)
    count = len(inputs[0])
    if self.fixed_batch is not None:
      batch_size = self.fixed_batch
    else:
      self.resize(min(batch_size, count))
    outputs = [[] for _ in self.output_details]
    for start in range(0, count, batch_size):
      chunk = [x[start:start + batch_size] for x in inputs]
      size = len(chunk[0])
      if self.fixed_batch is None:
        self.resize(size)
      else:
        chunk = [pad_batch(x, batch_size) for x in chunk]
      for x, detail in zip(chunk, self.input_details):
        self.interpreter.set_tensor(detail["index"], quantize(x, detail))
      # A Keras LSTM starts every call from zero state; the converted file keeps its state in
      # variable tensors that would otherwise carry over from the previous batch.
      self.interpreter.reset_all_variables()
      self.interpreter.invoke()
      for out, detail in zip(outputs, self.output_details):
        out.append(dequantize(self.interpreter.get_tensor(detail["index"]), detail)[:size])
    results = [np.concatenate(out) for out in outputs]
    return results[0] if len(results) == 1 else results


  def intermediates(self):
    """The quantized tensors of the last batch run, as ``[(tensor detail, float array)]``.

    Needs ``preserve_all_tensors=True``; constant tensors (weights) are included too.
    """
    result = []
    for detail in self.interpreter.get_tensor_details():
      if not np.issubdtype(detail["dtype"], np.integer) or not detail["quantization"][0]:
        continue
      try:
        value = self.interpreter.get_tensor(detail["index"])
      except ValueError:  # a tensor without data (freed scratch buffer)
        continue
      result.append((detail, dequantize(value, detail)))
    return result
