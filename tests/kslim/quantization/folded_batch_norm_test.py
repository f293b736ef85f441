"""FoldedBatchNorm: batch normalization in training, the quantized folded kernel at inference."""

import numpy as np
import tensorflow as tf
from absl.testing import absltest, parameterized

from kslim._keras import keras
from kslim.quantization import quantizers
from kslim.quantization.folded_batch_norm import FoldedBatchNorm
from tests.quant_reference import np_fake_quant

_LAYERS = {
    "conv2d": (lambda: keras.layers.Conv2D(6, 3, use_bias=False), (4, 7, 7, 3)),
    "depthwise": (lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False),
                  (4, 7, 7, 3)),
    "conv1d": (lambda: keras.layers.Conv1D(5, 3, use_bias=False), (4, 9, 3)),
    "dense": (lambda: keras.layers.Dense(5, use_bias=False), (8, 6)),
}


def _pair(kind, quantizer=None):
  """A FoldedBatchNorm and the float layer + BatchNormalization it stands for, same weights."""
  make, shape = _LAYERS[kind]
  rng = np.random.default_rng(0)
  x = rng.normal(size=shape).astype(np.float32)
  linear, bn = make(), keras.layers.BatchNormalization(momentum=0.9)
  bn(linear(x))
  bn.set_weights([rng.uniform(0.5, 2.0, w.shape) if i != 1 else rng.normal(size=w.shape)
                  for i, w in enumerate(bn.get_weights())])
  folded = FoldedBatchNorm(make(), bn.epsilon, bn.momentum, quantizer=quantizer)
  folded(x)
  folded.set_weights(linear.get_weights() + bn.get_weights())
  return folded, linear, bn, x


class FoldedBatchNormTest(parameterized.TestCase):

  @parameterized.parameters(*_LAYERS)
  def test_float_fold_is_batch_norm_in_both_modes(self, kind):
    folded, linear, bn, x = _pair(kind)
    np.testing.assert_allclose(folded(x, training=False), bn(linear(x), training=False),
                               rtol=1e-4, atol=1e-5)
    mean, variance = folded.moving_mean.numpy(), folded.moving_variance.numpy()
    with tf.GradientTape(persistent=True) as tape:
      ours = folded(x, training=True)
      reference = bn(linear(x), training=True)
      loss_ours = tf.reduce_sum(ours * np.arange(ours.shape[-1]))
      loss_reference = tf.reduce_sum(reference * np.arange(ours.shape[-1]))
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4)
    # The same gradients, through the batch statistics, for the kernel, gamma and beta.
    for mine, theirs in zip(tape.gradient(loss_ours, folded.trainable_weights),
                            tape.gradient(loss_reference, linear.trainable_weights
                                          + bn.trainable_weights)):
      np.testing.assert_allclose(mine, theirs, rtol=1e-3, atol=1e-4)
    # The moving statistics move 10% towards the batch mean and unbiased batch variance.
    z = linear(x).numpy().reshape(-1, ours.shape[-1])
    np.testing.assert_allclose(folded.moving_mean, 0.9 * mean + 0.1 * z.mean(0),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(folded.moving_variance,
                               0.9 * variance + 0.1 * z.var(0, ddof=1), rtol=1e-5)

  def test_inference_does_not_touch_the_moving_statistics(self):
    folded, _, _, x = _pair("conv2d")
    before = folded.get_weights()
    folded(x, training=False)
    for a, b in zip(before, folded.get_weights()):
      np.testing.assert_array_equal(a, b)

  @parameterized.parameters("conv2d", "depthwise")
  def test_inference_quantizes_the_folded_kernel_per_output_channel(self, kind):
    depthwise = kind == "depthwise"
    folded, linear, bn, x = _pair(kind, quantizers.ChannelWiseAbsMax(4, depthwise=depthwise))
    gamma, beta, mean, variance = bn.get_weights()
    scale = gamma / np.sqrt(variance + bn.epsilon)
    kernel = linear.get_weights()[0]
    kernel = kernel * (scale.reshape(kernel.shape[-2:]) if depthwise else scale)
    flat = kernel.reshape(kernel.shape[:-2] + (-1,)) if depthwise else kernel
    bound = np.abs(flat).max(axis=tuple(range(flat.ndim - 1)))
    expected_kernel = np_fake_quant(flat, -bound, bound, 4, narrow=True).reshape(
        kernel.shape)
    linear.set_weights([expected_kernel])
    expected = linear(x) + (beta - mean * scale)
    np.testing.assert_allclose(folded(x, training=False), expected, rtol=1e-5, atol=1e-5)

  def test_config_round_trip(self):
    folded, _, _, x = _pair("depthwise", quantizers.ChannelWiseAbsMax(8, depthwise=True))
    clone = FoldedBatchNorm.from_config(folded.get_config())
    self.assertEqual(clone.quantizer, folded.quantizer)
    self.assertEqual((clone.epsilon, clone.momentum), (folded.epsilon, folded.momentum))
    clone(x)
    clone.set_weights(folded.get_weights())
    np.testing.assert_array_equal(clone(x), folded(x))

  def test_bad_layers_are_refused_by_name(self):
    with self.assertRaisesRegex(TypeError, "'pool' .*MaxPooling2D"):
      FoldedBatchNorm(keras.layers.MaxPooling2D(name="pool"))
    with self.assertRaisesRegex(ValueError, "'c' must have no bias"):
      FoldedBatchNorm(keras.layers.Conv2D(2, 1, name="c"))
    with self.assertRaisesRegex(ValueError, "'c' must have no bias and a linear activation"):
      FoldedBatchNorm(keras.layers.Conv2D(2, 1, use_bias=False, activation="relu", name="c"))


if __name__ == "__main__":
  absltest.main()
