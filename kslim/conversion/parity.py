"""Per-layer parity between a Keras QAT model and its int8 TFLite file.

Every `ActivationQuantize` call in the Keras model produces a tensor that the int8 file
stores too, on the same grid. Both models run the same inputs; each Keras tensor is matched to
the TFLite tensor of the same shape and scale, and the difference is reported in grid steps,
so a user sees at once which layer drifts on deployment (0 steps everywhere is exact).
"""

import dataclasses

import numpy as np

from kslim._keras import call_sites
from kslim._keras import keras
from kslim._table import format_table
from kslim.quantization.quantize import activation_quantizers
from tflite_tools import runner as runner_lib

__all__ = ["LayerParity", "parity", "format_parity"]

# Scales agree to float32 rounding between Keras's range and TFLite's stored scale.
_SCALE_TOLERANCE = 1e-4


@dataclasses.dataclass(frozen=True)
class LayerParity:
  """Keras fake-quant vs TFLite for one quantized tensor.

  Attributes:
    layer: the `ActivationQuantize` layer (``name[i]`` for its i-th call when shared).
    shape: the tensor's shape without the batch axis.
    scale: the grid step.
    tflite_tensor: the matched TFLite tensor's name, or None when none matched.
    max_steps: largest |Keras - TFLite| in grid steps.
    mismatch: fraction of values that differ by half a step or more.
  """
  layer: str
  shape: tuple
  scale: float
  tflite_tensor: str
  max_steps: float
  mismatch: float

  def to_dict(self):
    return dataclasses.asdict(self)


def parity(qat_model, tflite_model, inputs):
  """Compares every quantized activation of `qat_model` with the TFLite file's.

  Args:
    qat_model: a model from kslim.quantize.
    tflite_model: its int8 conversion (path or bytes).
    inputs: a float batch for the model's (single) input; a few hundred examples suffice.

  Returns:
    A list of `LayerParity`, in graph order.
  """
  probes, names = [], []
  for layer in activation_quantizers(qat_model):
    for count, index in enumerate(call_sites(qat_model, layer)):
      probes.append((layer, layer.get_output_at(index)))
      names.append(layer.name if count == 0 else f"{layer.name}[{count}]")
  probe = keras.Model(qat_model.inputs, [tensor for _, tensor in probes])
  keras_values = probe(inputs, training=False)
  keras_values = [np.asarray(v) for v in (keras_values if len(probes) > 1 else [keras_values])]

  tflite_tensors = _tflite_tensors(tflite_model, inputs)
  results = []
  for (layer, _), name, value in zip(probes, names, keras_values):
    scale = layer.scale()
    best = None
    for detail, candidate in tflite_tensors:
      if candidate.shape != value.shape or abs(
          detail["quantization"][0] / scale - 1.0) > _SCALE_TOLERANCE:
        continue
      steps = np.abs(candidate - value) / scale
      if best is None or steps.mean() < best[1].mean():
        best = (detail["name"], steps)
    if best is None:
      results.append(LayerParity(name, value.shape[1:], scale, None, float("nan"), float("nan")))
    else:
      results.append(LayerParity(name, value.shape[1:], scale, best[0],
                                 float(best[1].max()), float((best[1] >= 0.5).mean())))
  return results


def _tflite_tensors(tflite_model, inputs):
  """``[(tensor detail, values over all inputs)]`` of the file's quantized tensors; a file with
  a fixed batch (an LSTM's) runs batch by batch."""
  runner = runner_lib.TFLiteRunner(tflite_model, preserve_all_tensors=True)
  batch = runner.fixed_batch or len(inputs)
  details, parts = {}, {}
  for start in range(0, len(inputs), batch):
    chunk = inputs[start:start + batch]
    runner.predict(chunk, batch_size=batch)
    for detail, values in runner.intermediates():
      if not values.ndim:  # a scalar constant
        continue
      details[detail["index"]] = detail
      parts.setdefault(detail["index"], []).append(values[:len(chunk)])
  return [(details[index], np.concatenate(values)) for index, values in parts.items()]


def format_parity(results):
  """A text table of `parity` results."""
  rows = [[r.layer, "x".join(map(str, r.shape)), f"{r.scale:.4g}",
           "-" if r.tflite_tensor is None else f"{r.max_steps:.0f}",
           "-" if r.tflite_tensor is None else f"{100 * r.mismatch:.2f}%"] for r in results]
  return format_table(["layer", "shape", "scale", "max |diff| (steps)", "values off"], rows)
