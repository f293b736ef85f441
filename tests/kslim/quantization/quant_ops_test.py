"""kslim.quantization.quant_ops against numpy references of the same formulas."""

import numpy as np
import tensorflow as tf
from absl.testing import absltest, parameterized

from kslim.quantization import quant_ops
from tests.quant_reference import np_fake_quant


_X = np.random.default_rng(0).normal(0, 1.5, (64,)).astype(np.float32)


class FakeQuantTest(parameterized.TestCase):

  @parameterized.product(bits=[2, 3, 4, 8], narrow=[False, True])
  def test_per_tensor_matches_numpy(self, bits, narrow):
    got = quant_ops.fake_quant(tf.constant(_X), -1.25, 2.0, bits, narrow).numpy()
    np.testing.assert_allclose(got, np_fake_quant(_X, -1.25, 2.0, bits, narrow), atol=1e-6)
    self.assertLessEqual(len(np.unique(got)), 2**bits - int(narrow))

  def test_per_channel_matches_numpy_slice_by_slice(self):
    w = np.random.default_rng(1).normal(size=(3, 3, 2, 4)).astype(np.float32)
    bound = np.abs(w).max(axis=(0, 1, 2))
    got = quant_ops.symmetric_fake_quant(tf.constant(w), tf.constant(bound), 8,
                                         per_channel=True).numpy()
    for c in range(4):
      np.testing.assert_allclose(got[..., c],
                                 np_fake_quant(w[..., c], -bound[c], bound[c], 8, True),
                                 atol=1e-6)

  def test_symmetric_narrow_grid_is_exact_at_the_bound(self):
    # [-b, b] on 2**bits - 1 levels needs no nudging: +-b and 0 are representable.
    got = quant_ops.symmetric_fake_quant(tf.constant([-3.0, 0.0, 3.0, 9.0]), 3.0, 4).numpy()
    np.testing.assert_allclose(got, [-3.0, 0.0, 3.0, 3.0], atol=1e-6)

  def test_abs_max(self):
    w = tf.constant([[1.0, -4.0], [-2.0, 3.0]])
    self.assertEqual(quant_ops.abs_max(w).numpy(), 4.0)
    np.testing.assert_array_equal(quant_ops.abs_max(w, per_channel=True).numpy(), [2.0, 4.0])

  def test_straight_through_gradient_and_no_gradient_into_the_bound(self):
    x = tf.constant(_X)
    bound = tf.Variable(1.0)
    with tf.GradientTape(persistent=True) as tape:
      tape.watch(x)
      y = quant_ops.symmetric_fake_quant(x, bound, 8)
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), (np.abs(_X) <= 1.0) * 1.0)
    self.assertIsNone(tape.gradient(y, bound))

  def test_zero_tensor_stays_finite(self):
    got = quant_ops.symmetric_fake_quant(tf.zeros(5), 0.0, 8).numpy()
    np.testing.assert_array_equal(got, np.zeros(5))

  @parameterized.parameters(1, 9, 8.0, True, "8")
  def test_bad_bit_widths(self, bits):
    with self.assertRaisesRegex(ValueError, r"num_bits must be an integer from 2 to 8, got"):
      quant_ops.fake_quant(tf.constant(_X), -1.0, 1.0, bits)


class WeightsOnlyTest(parameterized.TestCase):

  @parameterized.parameters((8, True), (8, False), (4, True), (3, False))
  def test_weights_are_the_fake_quant_op_in_plain_arithmetic(self, bits, narrow):
    x = np.random.default_rng(1).normal(size=(50, 3)).astype(np.float32)
    low, high = np.float32([-1.3, -0.2, 0.1]), np.float32([1.1, 0.9, 2.0])
    want = quant_ops.fake_quant(x, low, high, bits, narrow, per_channel=True, clip="none")
    with quant_ops.weights_only():
      self.assertTrue(quant_ops.is_weights_only())
      got = quant_ops.fake_quant(x, low, high, bits, narrow, per_channel=True, clip="none")
    self.assertFalse(quant_ops.is_weights_only())
    np.testing.assert_allclose(got, want, atol=1e-6)

  def test_activations_pass_through(self):
    x = np.float32([[-3.0, 0.1234, 5.0]])
    with quant_ops.weights_only():
      np.testing.assert_array_equal(quant_ops.fake_quant(x, -1.0, 1.0, 8, clip="both"), x)
      np.testing.assert_array_equal(quant_ops.pact(x, 1.0), x)

  def test_nudged_grid_is_tensorflows(self):
    # [-0.3, 1.0] on 8 bits: zero point 58.65 rounds to 59, the range shifts down by 0.35 step.
    scale, low, high = (float(v) for v in quant_ops.nudged_grid(np.float32(-0.3),
                                                                 np.float32(1.0), 8))
    self.assertAlmostEqual(scale, 1.3 / 255, places=7)
    self.assertAlmostEqual(low, -59 * 1.3 / 255, places=6)
    self.assertAlmostEqual(high, 196 * 1.3 / 255, places=6)
    x = np.linspace(-1, 2, 301, dtype=np.float32)
    grid = np.clip(np.floor((x - low) / scale + 0.5), 0, 255) * scale + low
    np.testing.assert_allclose(quant_ops.fake_quant(x, -0.3, 1.0, 8), grid, atol=1e-6)


class PactTest(parameterized.TestCase):

  @parameterized.parameters(2, 4, 8)
  def test_forward_is_clip_then_uniform_grid(self, bits):
    got = quant_ops.pact(tf.constant(_X), tf.constant(1.5), bits).numpy()
    # Unsigned: [0, alpha] holds 0 exactly, so the grid is alpha / (2**bits - 1) steps.
    step = 1.5 / (2**bits - 1)
    want = np.round(np.clip(_X, 0, 1.5) / step) * step
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(got, np_fake_quant(_X, 0.0, 1.5, bits, False), atol=1e-6)

  @parameterized.parameters(False, True)
  def test_gradients_follow_the_paper(self, signed):
    x = tf.constant(_X)
    alpha = tf.Variable(1.2)
    upstream = np.random.default_rng(2).normal(size=_X.shape).astype(np.float32)
    with tf.GradientTape(persistent=True) as tape:
      tape.watch(x)
      y = quant_ops.pact(x, alpha, 4, signed=signed)
      loss = tf.reduce_sum(y * upstream)
    lower = -1.2 if signed else 0.0
    # dy/dalpha = 1 above alpha (and -1 below -alpha when signed); dy/dx = 1 inside.
    want_alpha = upstream[_X > 1.2].sum() - (upstream[_X < -1.2].sum() if signed else 0.0)
    self.assertAlmostEqual(tape.gradient(loss, alpha).numpy(), want_alpha, places=4)
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(),
                               upstream * ((_X >= lower) & (_X <= 1.2)), atol=1e-6)

  def test_signed_keeps_negative_values(self):
    x = np.array([-0.3, 0.3, -5.0], np.float32)
    got = quant_ops.pact(tf.constant(x), tf.constant(1.0), 8, signed=True).numpy()
    # The symmetric narrow grid: steps of 2/254, -0.3 -> -38 steps, -5 clipped to -alpha.
    np.testing.assert_allclose(got, [-38 / 127, 38 / 127, -1.0], atol=1e-6)
    np.testing.assert_allclose(got, np_fake_quant(x, -1.0, 1.0, 8, True), atol=1e-6)


class EmaTest(absltest.TestCase):

  def test_update(self):
    v = tf.Variable(2.0)
    quant_ops.ema_update(v, 4.0, 0.9)
    self.assertAlmostEqual(v.numpy(), 0.9 * 2.0 + 0.1 * 4.0, places=6)


if __name__ == "__main__":
  absltest.main()
