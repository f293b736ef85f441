"""Empirical bias correction of post-training quantization error.

Quantizing a layer's kernel and input shifts the mean of its output: ``E[W_q x_q]`` differs
from the float ``E[W x]``, and the shift is systematic, so it is not averaged away by the
following layers. Bias correction measures both means on the representative data and
subtracts the difference from the layer's bias, per output channel, layer by layer in graph
order so each layer sees the already-corrected layers before it. Because the layer is linear
before its activation, ``E[W x] = W E[x]``: only the mean input is needed, of the float model
(once) and of the quantized model (after each correction).

References:
  Nagel et al., Data-Free Quantization Through Weight Equalization and Bias Correction,
  https://arxiv.org/abs/1906.04721 (section 4.2, empirical bias correction)
  Finkelstein et al., Fighting Quantization Bias With Bias,
  https://arxiv.org/abs/1906.03193
"""

import numpy as np
import tensorflow as tf
import tqdm

from kslim.conversion import calibration
from kslim.quantization import quant_ops
from kslim.quantization import wrapper

__all__ = ["correct_biases"]


def correct_biases(qat, examples, batch_size=64):
  """Corrects the bias of every quantized layer of `qat` in place.

  Args:
    qat: a calibrated fake-quant model (`calibration.calibrate`).
    examples: float32 input examples.
    batch_size: examples per forward pass.

  Returns:
    ``{layer name: max |correction|}`` for the layers corrected (those with a bias).
  """
  layers = [layer for layer in qat.layers if isinstance(layer, wrapper.QuantizeWrapper)
            and getattr(layer.layer, "use_bias", False)]
  if not layers:
    return {}
  with quant_ops.disabled():
    float_means = _mean_inputs(qat, layers, examples, batch_size)
  corrections = {}
  for layer, float_mean in zip(tqdm.tqdm(layers, desc="bias correction", leave=False,
                                         disable=None), float_means):
    quantized_mean, = _mean_inputs(qat, [layer], examples, batch_size)
    kernel, quantized_kernel = _kernels(layer)
    shift = (_channel_means(layer.layer, quantized_kernel, quantized_mean)
             - _channel_means(layer.layer, kernel, float_mean))
    layer.layer.bias.assign_sub(shift)
    corrections[layer.name] = float(np.abs(shift).max())
  return corrections


def _mean_inputs(qat, layers, examples, batch_size):
  """The mean over examples of each layer's input (traced in the caller's quantization mode)."""
  sums = [0.0] * len(layers)
  for outputs in calibration.probe(qat, [layer.input for layer in layers], examples,
                                   batch_size):
    sums = [total + np.asarray(o, np.float64).sum(axis=0) for total, o in zip(sums, outputs)]
  return [total / len(examples) for total in sums]


def _kernels(layer):
  """The float kernel of a QuantizeWrapper and its fake-quantized value."""
  attr, = layer.quantize_config.weight_attrs
  suffix = f"/{attr}:0"
  kernel, = [w for w in layer.weights if w.name.endswith(suffix)]
  quantized = layer.quantize_config.quantizer(tf.convert_to_tensor(kernel), False, weights={})
  return kernel.numpy(), quantized.numpy()


def _channel_means(layer, kernel, mean_input):
  """Mean over positions of ``layer``'s linear part (no bias, no activation) on `mean_input`."""
  config = dict(layer.get_config(), activation="linear", use_bias=False,
                name=f"{layer.name}_linear")
  linear = type(layer).from_config(config)
  linear.build((1,) + mean_input.shape)
  linear.set_weights([kernel])
  output = linear(mean_input[None].astype(np.float32)).numpy()
  return output.reshape(-1, output.shape[-1]).mean(axis=0)
