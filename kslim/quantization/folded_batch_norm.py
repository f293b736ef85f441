"""A convolution with its BatchNormalization folded in, that still trains with batch statistics.

TFLite folds BatchNormalization into the convolution before it, so the int8 file holds the
*folded* kernel ``k * gamma / sigma``. Folding once before QAT with the moving statistics
(``QuantConfig(batch_norm="freeze")``) quantizes exactly that kernel, but fine-tuning then
runs without batch normalization; on the reference CNN that alone costs 0.3 pt of accuracy
against a float fine-tune that keeps it. `FoldedBatchNorm` keeps both, as in Jacob et al.
(2018, section 3.2) and Krishnamoorthi (2018, section 3.2.2):

- The kernel that is quantized is always the one inference uses:
  ``q = quant(k * gamma / sigma_moving)``.
- In training, a float pass ``z = conv(x, k)`` gives the batch mean ``mu_b`` and deviation
  ``sigma_b`` (which also update the moving statistics), and the output is corrected to
  batch normalization with batch statistics:
  ``y = conv(x, q) * sigma_moving / sigma_b + beta - gamma * mu_b / sigma_b``.
  Without quantization this is exactly ``BatchNormalization(training=True)(conv(x, k))``.
  The moving variance is updated with the unbiased (Bessel-corrected) batch variance, as
  Keras's fused batch normalization and PyTorch do.
- At inference ``y = conv(x, q) + beta - gamma * mu_moving / sigma_moving``: a convolution
  with a bias, which is what the converter emits as one int8 op.

The layer's own bias (if the convolution had one) is redundant under batch normalization and
is absorbed into the moving mean when folding.
"""

import tensorflow as tf

from kslim._keras import keras

__all__ = ["FoldedBatchNorm", "FOLDABLE"]

_register = keras.utils.register_keras_serializable(package="kslim")

# The linear layers a following BatchNormalization can fold into.
FOLDABLE = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
            keras.layers.Dense)


@_register
class FoldedBatchNorm(keras.layers.Wrapper):
  """`layer` followed by batch normalization, quantizing the folded kernel.

  Args:
    layer: a Conv1D, Conv2D, DepthwiseConv2D or Dense layer without bias and activation.
    epsilon: the batch normalization's epsilon.
    momentum: the batch normalization's moving-average momentum.
    quantizer: the weight `kslim.quantization.quantizers.Quantizer` applied to the folded
      kernel, or None to keep it float.
    **kwargs: Keras layer arguments (``name``).

  Weights: the inner layer's kernel, then ``gamma``, ``beta``, ``moving_mean``,
  ``moving_variance`` (as in BatchNormalization with ``center`` and ``scale``).
  """

  def __init__(self, layer, epsilon=1e-3, momentum=0.99, quantizer=None, **kwargs):
    if not isinstance(layer, FOLDABLE):
      raise TypeError(f"FoldedBatchNorm: cannot fold batch norm into layer {layer.name!r} "
                      f"({type(layer).__name__}); expected one of "
                      f"{[cls.__name__ for cls in FOLDABLE]}")
    if layer.use_bias or keras.activations.serialize(layer.activation) != "linear":
      raise ValueError(f"FoldedBatchNorm: layer {layer.name!r} must have no bias and a linear "
                       "activation")
    super().__init__(layer, **kwargs)
    self.epsilon = float(epsilon)
    self.momentum = float(momentum)
    self.quantizer = quantizer
    self._depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
    self._kernel_attr = "depthwise_kernel" if self._depthwise else "kernel"

  @property
  def activation(self):
    """The activation after batch normalization: none (for the quantization registry)."""
    return keras.activations.linear

  def build(self, input_shape):
    if not self.layer.built:
      self.layer.build(input_shape)
    self._kernel = getattr(self.layer, self._kernel_attr)
    shape = self._kernel.shape
    channels = shape[-2] * shape[-1] if self._depthwise else shape[-1]
    statistic = dict(shape=(channels,), trainable=False,
                     synchronization=tf.VariableSynchronization.ON_READ,
                     aggregation=tf.VariableAggregation.MEAN)
    self.gamma = self.add_weight("gamma", shape=(channels,), initializer="ones")
    self.beta = self.add_weight("beta", shape=(channels,), initializer="zeros")
    self.moving_mean = self.add_weight("moving_mean", initializer="zeros", **statistic)
    self.moving_variance = self.add_weight("moving_variance", initializer="ones", **statistic)
    self._quantizer_vars = ({} if self.quantizer is None
                            else self.quantizer.build(shape, self._kernel_attr, self))
    super().build(input_shape)

  def load_source_weights(self, weights):
    """Sets kernel, gamma, beta, moving mean and variance (the folded layers' weights, in
    that order); the weight quantizer's own state keeps its initial value."""
    state = {id(v) for v in tf.nest.flatten(self._quantizer_vars)}
    targets = [v for v in self.weights if id(v) not in state]
    if len(targets) != len(weights):
      raise ValueError(f"{self.name}: {len(weights)} weights for {len(targets)} variables")
    for variable, value in zip(targets, weights):
      variable.assign(value)

  def call(self, inputs, training=None):
    if training is None:
      training = keras.backend.learning_phase()
    return tf.__internal__.smart_cond.smart_cond(
        training, lambda: self._call(inputs, True), lambda: self._call(inputs, False))

  def _fold(self):
    """The folded kernel ``k * gamma / sigma_moving`` (quantized afterwards), the bias
    ``beta - gamma * mu_moving / sigma_moving`` and ``sigma_moving``: one read of the moving
    statistics serves all three."""
    sigma = tf.sqrt(self.moving_variance + self.epsilon)
    scale = self.gamma / sigma
    kernel = self._kernel * tf.reshape(scale, self._kernel.shape[-2:] if self._depthwise else [-1])
    return kernel, self.beta - self.moving_mean * scale, sigma

  def _call(self, inputs, training):
    kernel, bias, sigma = self._fold()
    if self.quantizer is not None:
      kernel = self.quantizer(kernel, training, weights=self._quantizer_vars)
    outputs = self._linear(inputs, kernel)
    if not training:
      return outputs + bias
    batch = self._linear(inputs, self._kernel)
    mean, variance = tf.nn.moments(batch, axes=list(range(batch.shape.rank - 1)))
    inverse_sigma = tf.math.rsqrt(variance + self.epsilon)
    outputs = outputs * (sigma * inverse_sigma) + self.beta - self.gamma * mean * inverse_sigma
    count = tf.cast(tf.size(batch) // tf.size(mean), variance.dtype)
    unbiased = variance * count / tf.maximum(count - 1.0, 1.0)
    for statistic, value in ((self.moving_mean, mean), (self.moving_variance, unbiased)):
      statistic.assign_sub((statistic - tf.stop_gradient(value)) * (1.0 - self.momentum))
    return outputs

  def _linear(self, inputs, kernel):
    """The inner layer's computation with `kernel` in place of its own (as tfmot's wrapper)."""
    setattr(self.layer, self._kernel_attr, kernel)
    try:
      return self.layer.call(inputs)
    finally:
      setattr(self.layer, self._kernel_attr, self._kernel)

  def compute_output_shape(self, input_shape):
    return self.layer.compute_output_shape(input_shape)

  def get_config(self):
    return {**super().get_config(), "epsilon": self.epsilon, "momentum": self.momentum,
            "quantizer": (None if self.quantizer is None
                          else keras.utils.serialize_keras_object(self.quantizer))}

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config["layer"] = keras.layers.deserialize(config["layer"])
    if config.get("quantizer") is not None:
      config["quantizer"] = keras.utils.deserialize_keras_object(config["quantizer"])
    return cls(**config)
