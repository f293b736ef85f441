"""Distillation losses against numpy references."""

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from kslim._keras import keras
from kslim import distill
from kslim.distill import losses
from tests.kslim.distill import tiny_nets


def _features(logits, **layers):
  return losses.Features(tf.constant(logits, tf.float32),
                         {k: tf.constant(v, tf.float32) for k, v in layers.items()})


def _shapes(logits, **layers):
  return {None: tf.TensorShape(logits), **{k: tf.TensorShape(v) for k, v in layers.items()}}


class SoftLabelTest(absltest.TestCase):

  def test_matches_numpy_and_scales_with_t_squared(self):
    rng = np.random.default_rng(0)
    t, s = rng.normal(size=(5, 4)) * 3, rng.normal(size=(5, 4)) * 3
    for temperature in (1.0, 4.0):
      loss = distill.SoftLabel(temperature)
      loss.build_for(_shapes((None, 4)), _shapes((None, 4)))
      value = float(loss.compute(_features(t), _features(s)))
      # numpy: T^2 * mean_n sum_c p_t (log p_t - log p_s), with p = softmax(z / T)
      self.assertAlmostEqual(value, tiny_nets.soft_kl(t, s, temperature), places=5)
    self.assertAlmostEqual(float(losses.soft_kl(t, t, 4.0)), 0.0, places=6)

  def test_gradient_is_softened_probability_gap(self):
    # d/ds [T^2 KL] = T * (softmax(s/T) - softmax(t/T)) / N (Hinton et al., eq. 2).
    t = tf.constant([[1.0, -2.0, 0.5]])
    s = tf.Variable([[0.3, 0.1, -1.0]])
    with tf.GradientTape() as tape:
      value = losses.soft_kl(t, s, 2.0)
    grad = tape.gradient(value, s).numpy()
    p_s, p_t = (np.exp(tiny_nets.log_softmax(z.numpy() / 2)) for z in (s, t))
    np.testing.assert_allclose(grad, 2.0 * (p_s - p_t), atol=1e-6)

  def test_rejects_bad_temperature_and_logit_counts(self):
    with self.assertRaisesRegex(ValueError, "temperature must be > 0"):
      distill.SoftLabel(0.0)
    with self.assertRaisesRegex(ValueError, "teacher has 10 logits but the student 4"):
      distill.SoftLabel().build_for(_shapes((None, 10)), _shapes((None, 4)))


class L2Test(absltest.TestCase):

  def test_logits_l2_matches_numpy(self):
    rng = np.random.default_rng(1)
    t, s = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
    loss = distill.L2()
    loss.build_for(_shapes((None, 5)), _shapes((None, 5)))
    self.assertEqual(loss.name, "logits_l2")
    self.assertAlmostEqual(float(loss.compute(_features(t), _features(s))),
                           np.mean((t - s) ** 2), places=5)

  def test_hint_without_adapter_when_channels_match(self):
    rng = np.random.default_rng(2)
    t, s = rng.normal(size=(2, 4, 4, 3)), rng.normal(size=(2, 4, 4, 3))
    loss = distill.FitNet("a", "b")
    loss.build_for(_shapes((None, 2), a=(None, 4, 4, 3)), _shapes((None, 2), b=(None, 4, 4, 3)))
    self.assertIsNone(loss.adapter)
    value = loss.compute(_features(np.zeros((2, 2)), a=t), _features(np.zeros((2, 2)), b=s))
    self.assertAlmostEqual(float(value), np.mean((t - s) ** 2), places=5)

  def test_hint_adapter_maps_student_channels_to_teacher(self):
    rng = np.random.default_rng(3)
    t, s = rng.normal(size=(2, 4, 4, 6)), rng.normal(size=(2, 4, 4, 2))
    loss = distill.FitNet("x")
    loss.build_for(_shapes((None, 2), x=(None, 4, 4, 6)), _shapes((None, 2), x=(None, 4, 4, 2)))
    kernel = loss.adapter.kernel.numpy()
    self.assertEqual(kernel.shape, (2, 6))
    self.assertLen(loss.trainable_weights, 1)
    value = loss.compute(_features(np.zeros((2, 2)), x=t), _features(np.zeros((2, 2)), x=s))
    # The adapter is a 1x1 convolution: the student's channels times the (2, 6) kernel.
    self.assertAlmostEqual(float(value), np.mean((t - s @ kernel) ** 2), places=5)

  def test_spatial_mismatch_names_both_layers(self):
    with self.assertRaisesRegex(ValueError, r"teacher layer 'big'.*\(None, 8, 8, 4\).*student "
                                r"layer 'small'.*\(None, 4, 4, 4\)"):
      distill.FitNet("big", "small").build_for(_shapes((None, 2), big=(None, 8, 8, 4)),
                                               _shapes((None, 2), small=(None, 4, 4, 4)))


class FSPTest(absltest.TestCase):

  def test_fsp_matrix_matches_loop(self):
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(2, 3, 5, 4)), rng.normal(size=(2, 3, 5, 6))
    got = losses.fsp_matrix(tf.constant(a), tf.constant(b)).numpy()
    self.assertEqual(got.shape, (2, 4, 6))
    want = np.zeros((2, 4, 6))
    for n in range(2):
      for i in range(4):
        for j in range(6):
          want[n, i, j] = np.sum(a[n, :, :, i] * b[n, :, :, j]) / 15  # / (H * W)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

  def test_loss_is_mean_over_pairs_of_matrix_mse(self):
    rng = np.random.default_rng(5)
    maps = {k: rng.normal(size=(2, 4, 4, 3)) for k in ("t1", "t2", "t3", "s1", "s2", "s3")}
    loss = distill.FSP([("t1", "t2"), ("t2", "t3")], [("s1", "s2"), ("s2", "s3")])
    shapes = {k: (None, 4, 4, 3) for k in maps}
    loss.build_for(_shapes((None, 2), **shapes), _shapes((None, 2), **shapes))
    self.assertEqual(loss.teacher_layers, ("t1", "t2", "t3"))
    self.assertEmpty(loss.adapters)
    value = loss.compute(_features(np.zeros((2, 2)), **maps), _features(np.zeros((2, 2)), **maps))

    def fsp(a, b):
      return np.einsum("nhwi,nhwj->nij", a, b) / 16

    want = np.mean([np.mean((fsp(maps["t1"], maps["t2"]) - fsp(maps["s1"], maps["s2"])) ** 2),
                    np.mean((fsp(maps["t2"], maps["t3"]) - fsp(maps["s2"], maps["s3"])) ** 2)])
    self.assertAlmostEqual(float(value), want, places=5)

  def test_adapters_for_narrow_students_and_errors(self):
    loss = distill.FSP([("a", "b")])
    loss.build_for(_shapes((None, 2), a=(None, 4, 4, 8), b=(None, 4, 4, 6)),
                   _shapes((None, 2), a=(None, 4, 4, 2), b=(None, 4, 4, 6)))
    self.assertEqual(sorted(loss.adapters), ["a"])
    self.assertEqual(loss.adapters["a"].kernel.shape, (2, 8))
    with self.assertRaisesRegex(ValueError, r"'a'.*'b'.*one spatial size"):
      distill.FSP([("a", "b")]).build_for(
          _shapes((None, 2), a=(None, 8, 8, 2), b=(None, 4, 4, 2)),
          _shapes((None, 2), a=(None, 8, 8, 2), b=(None, 4, 4, 2)))
    with self.assertRaisesRegex(ValueError, "non-empty list of"):
      distill.FSP(["a"])


class SerializationTest(absltest.TestCase):

  def test_round_trip(self):
    for loss in (distill.SoftLabel(3.0, weight=0.7), distill.FitNet("a", "b", weight=0.2),
                 distill.L2(weight=0.1), distill.FSP([("a", "b")], [("c", "d")], weight=0.3)):
      again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
      self.assertIs(type(again), type(loss))
      self.assertEqual(again.get_config(), loss.get_config())
    self.assertEqual(distill.FSP([("a", "b")], weight=0.3).get_config()["student_pairs"],
                     [["a", "b"]])

  def test_negative_weight(self):
    with self.assertRaisesRegex(ValueError, "weight must be >= 0"):
      distill.SoftLabel(weight=-1.0)


if __name__ == "__main__":
  absltest.main()
