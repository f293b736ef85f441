"""kslim.quantization.quantizers: forward passes against numpy, state updates, gradients."""

import numpy as np
import tensorflow as tf
from absl.testing import absltest, parameterized

from kslim._keras import keras
from kslim.quantization import quant_ops
from kslim.quantization import quantizers
from tests.quant_reference import np_fake_quant

_RNG = np.random.default_rng(0)


def _built(quantizer, shape=(8,)):
  """A layer owning the quantizer's state, as the wrapping layer would."""
  layer = keras.layers.Layer()
  return layer, quantizer.build(tf.TensorShape(shape), "q", layer)


class WeightQuantizerTest(parameterized.TestCase):

  @parameterized.parameters(2, 4, 8)
  def test_abs_max_is_the_symmetric_narrow_grid_of_the_tensor(self, bits):
    w = _RNG.normal(size=(3, 3, 4, 5)).astype(np.float32)
    got = quantizers.AbsMax(bits)(tf.constant(w), True, {}).numpy()
    bound = np.abs(w).max()
    np.testing.assert_allclose(got, np_fake_quant(w, -bound, bound, bits, True), atol=1e-6)

  def test_channel_wise_ranges_are_per_output_channel(self):
    w = (_RNG.normal(size=(3, 3, 4, 5)) * np.arange(1, 6)).astype(np.float32)
    got = quantizers.ChannelWiseAbsMax(4)(tf.constant(w), False, {}).numpy()
    for c in range(5):
      bound = np.abs(w[..., c]).max()
      np.testing.assert_allclose(got[..., c], np_fake_quant(w[..., c], -bound, bound, 4, True),
                                 atol=1e-6)

  def test_depthwise_channels_are_input_times_multiplier(self):
    # DepthwiseConv2D kernel (h, w, in=2, multiplier=3): TFLite's 6 output channels.
    w = (_RNG.normal(size=(3, 3, 2, 3)) * np.arange(1, 7).reshape(2, 3)).astype(np.float32)
    got = quantizers.ChannelWiseAbsMax(8, depthwise=True)(tf.constant(w), True, {}).numpy()
    self.assertEqual(got.shape, w.shape)
    for i in range(2):
      for m in range(3):
        bound = np.abs(w[:, :, i, m]).max()
        np.testing.assert_allclose(got[:, :, i, m],
                                   np_fake_quant(w[:, :, i, m], -bound, bound, 8, True), atol=1e-6)

  def test_weight_quantizers_hold_no_state(self):
    self.assertEqual(_built(quantizers.ChannelWiseAbsMax())[1], {})


class ActivationQuantizerTest(parameterized.TestCase):

  def test_running_abs_max_grows_in_training_only(self):
    quantizer = quantizers.RunningAbsMax(8, signed=True)
    _, state = _built(quantizer)
    quantizer(tf.constant([1.0, -3.0]), True, state)
    quantizer(tf.constant([2.0, 0.5]), True, state)
    self.assertEqual(float(state["max"]), 3.0)
    quantizer(tf.constant([10.0]), False, state)
    self.assertEqual(float(state["max"]), 3.0)

  def test_moving_average_is_bias_corrected_and_frozen_at_inference(self):
    quantizer = quantizers.MovingAverageAbsMax(8, signed=False, decay=0.9)
    _, state = _built(quantizer)
    quantizer(tf.constant([2.0]), True, state)
    low, high = quantizer.range(state)
    self.assertAlmostEqual(float(high), 2.0, places=6)  # the first batch's own max
    quantizer(tf.constant([-4.0, 1.0]), True, state)
    expected = (0.9 * 2.0 + 4.0) / (0.9 + 1.0)
    self.assertAlmostEqual(float(quantizer.range(state)[1]), expected, places=5)
    self.assertEqual(float(low), 0.0)
    y = quantizer(tf.constant([100.0, 1.0]), False, state).numpy()
    self.assertAlmostEqual(float(quantizer.range(state)[1]), expected, places=5)
    np.testing.assert_allclose(y, np_fake_quant(np.array([100.0, 1.0]), 0, expected, 8, False),
                               atol=1e-5)

  def test_moving_average_min_max_is_asymmetric_and_can_be_set(self):
    quantizer = quantizers.MovingAverageMinMax(8, decay=0.9)
    _, state = _built(quantizer)
    quantizer(tf.constant([-1.0, 3.0]), True, state)
    quantizer(tf.constant([0.5, 5.0]), True, state)
    # Bias-corrected EMAs of the batch min and max; the range always holds 0.
    low, high = (float(v) for v in quantizer.range(state))
    self.assertAlmostEqual(low, (0.9 * -1.0 + 0.5) / 1.9, places=5)
    self.assertAlmostEqual(high, (0.9 * 3.0 + 5.0) / 1.9, places=5)
    x = np.array([-3.0, -0.1, 0.7, 9.0], np.float32)
    np.testing.assert_allclose(quantizer(tf.constant(x), False, state),
                               np_fake_quant(x, low, high, 8, False), atol=1e-6)
    quantizer.set_range(state, -0.5, 2.0)
    self.assertEqual(tuple(float(v) for v in quantizer.range(state)), (-0.5, 2.0))
    quantizer(tf.constant([100.0]), False, state)  # inference leaves it alone
    self.assertEqual(float(quantizer.range(state)[1]), 2.0)
    with quant_ops.disabled():
      np.testing.assert_array_equal(quantizer(tf.constant(x), False, state), x)

  def test_pact_starts_at_the_least_squared_error_clip_and_gets_the_clipped_gradient(self):
    quantizer = quantizers.PACT(4, decay=0.0)
    layer, state = _built(quantizer)
    x = tf.constant([0.5, 1.0, 3.0, -1.0])
    quantizer(x, True, state)
    levels = 3.0 * np.arange(1, 33) / 32
    errors = [np.mean((np_fake_quant(np.clip(x.numpy(), 0, c), 0.0, c, 4, False) - x) ** 2)
              for c in levels]
    self.assertAlmostEqual(float(state["alpha"]), levels[np.argmin(errors)], places=5)
    state["alpha"].assign(0.8)
    with tf.GradientTape() as tape:
      y = quantizer(x, True, state)
      loss = tf.reduce_sum(y * tf.constant([1.0, 2.0, 3.0, 4.0]))
    # PACT: d y_i / d alpha = 1 where x_i > alpha (inputs 1.0 and 3.0): 2 + 3.
    self.assertAlmostEqual(float(tape.gradient(loss, state["alpha"])), 5.0, places=5)
    self.assertAlmostEqual(float(state["alpha"]), 0.8, places=6)  # initialized once only
    self.assertEqual(len(layer.losses), 0)

  def test_low_bit_clip_search_cuts_the_long_tail(self):
    x = np.random.default_rng(0).exponential(1.0, 10000).astype(np.float32)  # max ~9
    at4, at8 = (float(quant_ops.mse_clip(tf.constant(x), bits)) for bits in (4, 8))
    self.assertLess(at4, 0.75 * x.max())
    self.assertLess(at4, at8)  # finer grids afford a wider range
    error = lambda c: np.mean((np_fake_quant(np.clip(x, 0, c), 0.0, c, 4, False) - x) ** 2)
    self.assertLess(error(at4), 0.8 * error(x.max()))
    self.assertAlmostEqual(float(quant_ops.mse_clip(tf.constant([0.0, 1.0, 2.0]), 8)), 2.0)

  def test_mse_weight_ranges_beat_abs_max_at_4_bits(self):
    rng = np.random.default_rng(1)
    kernel = rng.standard_t(3, (3, 3, 8, 6)).astype(np.float32)  # heavy-tailed filters
    bound = quant_ops.mse_bound(tf.constant(kernel), 4).numpy()
    flat = kernel.reshape(-1, 6)
    for c in range(6):  # each channel: the best of the searched fractions, by brute force
      top = np.abs(flat[:, c]).max()
      candidates = top * np.arange(16, 33) / 32
      errors = [np.mean((np.clip(np.round(flat[:, c] / (b / 7)), -7, 7) * (b / 7)
                         - flat[:, c]) ** 2) for b in candidates]
      self.assertAlmostEqual(bound[c], candidates[np.argmin(errors)], places=5)
    mse, plain = quantizers.ChannelWiseMSE(4), quantizers.ChannelWiseAbsMax(4)
    _, state = _built(mse, kernel.shape)
    x = tf.constant(kernel)
    error = lambda q, training: float(tf.reduce_mean(tf.square(q(x, training, state) - x)))
    before = error(mse, False)  # never trained: the abs max, as ChannelWiseAbsMax
    self.assertAlmostEqual(before, error(plain, False), places=7)
    self.assertLess(error(mse, True), 0.9 * error(plain, True))
    np.testing.assert_allclose(state["bound"].numpy(), bound, rtol=1e-6)  # stored for export
    self.assertAlmostEqual(error(mse, False), error(mse, True), places=7)
    self.assertEqual(quantizers.get("channel_wise_mse", "weights", num_bits=4), mse)

  def test_pact_decay_adds_an_l2_loss_on_alpha(self):
    layer, state = _built(quantizers.PACT(8, decay=0.01))
    state["alpha"].assign(2.0)
    self.assertAlmostEqual(float(tf.add_n(layer.losses)), 0.01 * 4.0, places=6)

  def test_fixed_range_gives_tflite_softmax_scale(self):
    quantizer = quantizers.FixedRange(8, 0.0, 255 / 256)
    y = quantizer(tf.constant([0.3, 0.999]), False, {}).numpy()
    np.testing.assert_allclose(y, [round(0.3 * 256) / 256, 255 / 256], atol=1e-7)


class ContainerTest(absltest.TestCase):

  def test_sub_8_bit_grid_in_an_int8_container_keeps_the_values(self):
    x = tf.constant(_RNG.normal(0, 2, (256,)).astype(np.float32))
    # (narrow, low, clip, input): "upper" takes non-negative inputs, "none" in-range ones.
    for narrow, low, clip, inputs in ((True, -2.0, "both", x), (False, 0.0, "both", x),
                                      (False, -0.5, "both", x), (False, 0.0, "upper", abs(x)),
                                      (True, -2.0, "none", tf.clip_by_value(x, -2.0, 2.0))):
      reference = quant_ops.fake_quant(inputs, low, 2.0, 4, narrow).numpy()
      with quant_ops.int8_container():
        contained = quant_ops.fake_quant(inputs, low, 2.0, 4, narrow, clip=clip).numpy()
      np.testing.assert_allclose(contained, reference, atol=1e-6, err_msg=f"{low} {clip}")

  def test_activations_sit_at_the_top_of_the_8_bit_grid(self):
    # int8 saturation is the upper clip: the 8-bit grid's top level is the 4-bit top.
    x = tf.constant([-100.0, 0.0, 1.9, 100.0])
    with quant_ops.int8_container():
      y = quant_ops.fake_quant(x, 0.0, 1.5, 4, clip="upper").numpy()
    np.testing.assert_allclose(y, [-24.0, 0.0, 1.5, 1.5], atol=1e-6)  # step 0.1: 240 below 0
    with self.assertRaisesRegex(ValueError, "clip must be one of"):
      quant_ops.fake_quant(x, 0.0, 1.5, 4, clip=True)


class SerializationTest(parameterized.TestCase):

  @parameterized.parameters(
      quantizers.AbsMax(3), quantizers.ChannelWiseAbsMax(5, depthwise=True),
      quantizers.RunningAbsMax(6, signed=False), quantizers.MovingAverageAbsMax(7, decay=0.5),
      quantizers.MovingAverageMinMax(5, decay=0.99),
      quantizers.PACT(2, decay=0.1), quantizers.FixedRange(8, -1.0, 127 / 128))
  def test_round_trip_through_keras_serialization(self, quantizer):
    config = keras.utils.serialize_keras_object(quantizer)
    self.assertTrue(config["registered_name"].startswith("kslim>"))
    self.assertEqual(keras.utils.deserialize_keras_object(config), quantizer)

  def test_get_resolves_names_per_role_and_rejects_others(self):
    self.assertIsInstance(quantizers.get("abs_max", "weights"), quantizers.AbsMax)
    self.assertIsInstance(quantizers.get("abs_max", "activations"), quantizers.RunningAbsMax)
    with self.assertRaisesRegex(ValueError, "unknown weights quantizer 'pact'"):
      quantizers.get("pact", "weights")
    with self.assertRaisesRegex(ValueError, "quantizes activations, not weights"):
      quantizers.get(quantizers.PACT(), "weights")
    with self.assertRaisesRegex(ValueError, "num_bits must be an integer from 2 to 8"):
      quantizers.AbsMax(9)


if __name__ == "__main__":
  absltest.main()
