"""The Keras layers a quantized model is made of.

- Weighted layers (Conv, Dense, ...) are wrapped in tfmot's `QuantizeWrapperV2` with a
  `WeightQuantizeConfig`, which hands the wrapper kslim's weight quantizer for each kernel.
- Activation ranges live in `ActivationQuantize` layers inserted after the tensors TFLite
  stores. One layer object is *called* on every tensor that must share a range (the inputs
  of a Concatenate, the input and output of an AveragePooling), so they share its variables
  exactly, as TFLite's same-scale rule requires.
"""

import tensorflow as tf
import tensorflow_model_optimization as tfmot

from kslim._keras import keras
from kslim.quantization import quantizers

__all__ = ["WeightQuantizeConfig", "ActivationQuantize", "QuantizeWrapper"]

_register = keras.utils.register_keras_serializable(package="kslim")


@_register
class QuantizeWrapper(tfmot.quantization.keras.QuantizeWrapperV2):
  """tfmot's QuantizeWrapperV2 with a variable list that does not depend on build order.

  QuantizeWrapperV2 lists the inner layer's weights only if that layer was already built, and
  lists a quantized kernel twice; the `.keras` format then finds a different number of
  variables when loading than it saved. Building the inner layer first and dropping
  duplicates makes saving and loading agree.
  """

  def build(self, input_shape):
    if not self.layer.built:
      self.layer.build(input_shape)
    super().build(input_shape)
    self._trainable_weights = self._dedup_weights(self._trainable_weights)


@_register
class WeightQuantizeConfig(quantizers.ConfigEquality, tfmot.quantization.keras.QuantizeConfig):
  """Quantizes the named kernel attributes of a layer with one weight quantizer.

  Output ranges are not handled here but by `ActivationQuantize` layers, so the same config
  serves every weighted layer type.

  Args:
    weight_attrs: attribute names of the kernels (``["kernel"]``, ``["depthwise_kernel"]``).
    quantizer: a weight `kslim.quantization.quantizers.Quantizer`.
  """

  def __init__(self, weight_attrs, quantizer):
    self.weight_attrs = list(weight_attrs)
    self.quantizer = quantizer

  def get_weights_and_quantizers(self, layer):
    return [(getattr(layer, attr), self.quantizer) for attr in self.weight_attrs]

  def set_quantize_weights(self, layer, quantize_weights):
    for attr, weight in zip(self.weight_attrs, quantize_weights):
      setattr(layer, attr, weight)

  def get_activations_and_quantizers(self, layer):
    return []

  def set_quantize_activations(self, layer, quantize_activations):
    pass

  def get_output_quantizers(self, layer):
    return []

  def get_config(self):
    return {"weight_attrs": self.weight_attrs,
            "quantizer": keras.utils.serialize_keras_object(self.quantizer)}

  @classmethod
  def from_config(cls, config):
    return cls(config["weight_attrs"], keras.utils.deserialize_keras_object(config["quantizer"]))


@_register
class ActivationQuantize(keras.layers.Layer):
  """Fake-quantizes the tensors it is called on with one shared, stored range.

  Args:
    quantizer: an activation `kslim.quantization.quantizers.Quantizer`.
    **kwargs: Keras layer arguments (``name``).

  Example:
    >>> from kslim.quantization import quantizers
    >>> layer = ActivationQuantize(quantizers.MovingAverageAbsMax(num_bits=8))
  """

  def __init__(self, quantizer, **kwargs):
    super().__init__(**kwargs)
    self.quantizer = quantizer

  def build(self, input_shape):
    self._quantizer_vars = self.quantizer.build(input_shape, "range", self)
    super().build(input_shape)

  def call(self, inputs, training=None):
    if training is None:
      training = keras.backend.learning_phase()
    return tf.__internal__.smart_cond.smart_cond(
        training,
        lambda: self.quantizer(inputs, True, weights=self._quantizer_vars),
        lambda: self.quantizer(inputs, False, weights=self._quantizer_vars))

  def quantized_tensor(self, node):
    """The KerasTensor whose values this layer quantizes at its call `node`: its input (what
    calibration collects)."""
    return self.get_input_at(node)

  def range(self):
    """The (min, max) used at inference, as floats."""
    low, high = self.quantizer.range(self._quantizer_vars)
    return float(low), float(high)

  def set_range(self, low, high):
    """Fixes the range (post-training calibration); the quantizer must support it."""
    self.quantizer.set_range(self._quantizer_vars, low, high)

  def scale(self):
    """The quantization step of the grid: ``(max - min) / (levels - 1)``."""
    low, high = self.range()
    steps = 2 ** self.quantizer.num_bits - (2 if self.quantizer.narrow_range else 1)
    return (high - low) / steps

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    return {**super().get_config(),
            "quantizer": keras.utils.serialize_keras_object(self.quantizer)}

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config["quantizer"] = keras.utils.deserialize_keras_object(config["quantizer"])
    return cls(**config)
