"""Tests for the reference models."""

import numpy as np
from absl.testing import absltest, parameterized

from kslim import models
from kslim._keras import keras


class ReferenceModelsTest(parameterized.TestCase):

  @parameterized.parameters(*sorted(models.REFERENCE_MODELS))
  def test_logits_shape_and_name(self, name):
    model = models.get(name)
    self.assertEqual(model.name, name)
    self.assertEqual(model.output_shape, (None, 10))
    out = model(np.zeros((2, 28, 28, 1), np.float32))
    self.assertEqual(out.shape, (2, 10))

  def test_reference_cnn_is_five_conv_bn_relu_blocks_of_about_70k_params(self):
    model = models.reference_cnn()
    types = [type(l).__name__ for l in model.layers]
    self.assertEqual(types.count("Conv2D"), 5)
    self.assertEqual(types.count("BatchNormalization"), 5)
    self.assertEqual(types.count("ReLU"), 5)
    self.assertEqual(model.count_params(), 70746)

  def test_plain_cnn_is_the_reference_cnn_without_batch_norm(self):
    types = [type(l).__name__ for l in models.plain_cnn().layers]
    self.assertEqual(types.count("Conv2D"), 5)
    self.assertNotIn("BatchNormalization", types)
    # 70,746 minus 4 BN weights per channel of 208 channels, plus a bias per channel.
    self.assertEqual(models.plain_cnn().count_params(), 70746 - 4 * 208 + 208)

  def test_standardized_cnn_adapts_its_per_pixel_normalization(self):
    model = models.standardized_cnn()
    images = np.random.default_rng(0).random((64, 28, 28, 1), dtype=np.float32)
    images[:, 0] = 0.0  # a first row that is never lit: variance 0
    self.assertEqual(models.adapt_normalization(model, images), ["standardize"])
    out = keras.Model(model.input, model.get_layer("standardize").output)(images).numpy()
    np.testing.assert_allclose(out[:, 1:].mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(out[:, 1:].std(0), 1.0, atol=1e-2)
    np.testing.assert_array_equal(out[:, 0], 0.0)
    self.assertEqual(models.adapt_normalization(model, images), [])  # adapted once

  def test_adapt_normalization_refuses_a_layer_behind_the_input(self):
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(4)(inputs)
    model = keras.Model(inputs, keras.layers.Normalization(name="late")(hidden))
    with self.assertRaisesRegex(ValueError, "'late' does not read the model input"):
      models.adapt_normalization(model, np.zeros((8, 4), np.float32))

  def test_mini_mobilenet_has_depthwise_add_and_concatenate(self):
    types = {type(l) for l in models.mini_mobilenet_v2().layers}
    for cls in (keras.layers.DepthwiseConv2D, keras.layers.Add, keras.layers.Concatenate):
      self.assertIn(cls, types)

  def test_width_scales_filters(self):
    half = models.reference_cnn(width=0.5)
    self.assertEqual(half.get_layer("block5_conv").filters, 32)

  def test_unknown_name(self):
    with self.assertRaisesRegex(ValueError, r"unknown reference model 'resnet'.*"
                                r"mini_mobilenet_v2"):
      models.get("resnet")


if __name__ == "__main__":
  absltest.main()
