"""Tests for kslim.profile: hand-computed MACs and params for each counted layer type."""

import keras as keras3
from absl.testing import absltest

import kslim
from kslim import models
from kslim._keras import keras

L = keras.layers


class ProfileTest(absltest.TestCase):

  def test_each_layer_type_against_hand_computed_macs(self):
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, padding="same", name="conv")(inputs)             # 8x8x4 out
    x = L.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2, name="dw")(x)
    x = L.SeparableConv2D(6, 3, padding="same", name="sep")(x)          # 4x4x6 out, 8 in
    x = L.Conv2DTranspose(5, 2, strides=2, name="deconv")(x)            # 4x4x6 in -> 8x8x5
    x = L.BatchNormalization(name="bn")(x)
    x = L.MaxPooling2D(name="pool")(x)                                  # 4x4x5
    x = L.Reshape((16, 5), name="reshape")(x)
    x = L.Conv1D(7, 3, name="conv1d")(x)                                # 14x7
    x = L.Dense(2, name="dense")(x)                                     # per position: 7*2
    p = kslim.profile(keras.Model(inputs, x))
    # Conv: 8*8 positions * 4 out * (3*3*3).
    self.assertEqual(p["conv"].macs, 8 * 8 * 4 * 27)
    # Depthwise: 4*4 positions * (4 in * 2 multiplier) outputs * 3*3.
    self.assertEqual(p["dw"].macs, 4 * 4 * 8 * 9)
    # Separable: 4*4 positions * 8 channels * (3*3 depthwise + 6 pointwise).
    self.assertEqual(p["sep"].macs, 4 * 4 * 8 * (9 + 6))
    # Transpose: 4*4*6 input elements, each through a 2x2 kernel into 5 channels.
    self.assertEqual(p["deconv"].macs, 4 * 4 * 6 * 2 * 2 * 5)
    # Conv1D: 14 positions * 7 out * (3 * 5 in).
    self.assertEqual(p["conv1d"].macs, 14 * 7 * 15)
    # Dense on (14, 7): 14 positions * 7 * 2.
    self.assertEqual(p["dense"].macs, 14 * 7 * 2)
    for uncounted in ("bn", "pool", "reshape"):
      self.assertEqual(p[uncounted].macs, 0)
    self.assertEqual(p.total_macs, sum(r.macs for r in p.rows))
    self.assertEqual(p["conv"].params, 3 * 3 * 3 * 4 + 4)
    self.assertEqual(p["sep"].params, 3 * 3 * 8 + 8 * 6 + 6)
    self.assertEqual(p["bn"].params, 4 * 5)
    self.assertEqual(p.total_params, sum(r.params for r in p.rows))
    self.assertEqual(p.trainable_params, p.total_params - 2 * 5)  # BN moving mean/var.
    self.assertEqual(p["conv"].output_shape, (None, 8, 8, 4))

  def test_nested_and_shared_layers(self):
    block = keras.Sequential([keras.Input((6,)), L.Dense(4, name="inner")], name="block")
    shared = L.Dense(3, name="shared")
    inputs = keras.Input((6,))
    a, b = block(inputs), block(inputs)         # the nested model runs twice
    y = L.Add()([shared(a), shared(b)])         # the shared layer runs twice
    p = kslim.profile(keras.Model(inputs, y))
    self.assertEqual(p["block/inner"].macs, 2 * 6 * 4)
    self.assertEqual(p["block/inner"].params, 6 * 4 + 4)
    self.assertEqual(p["shared"].macs, 2 * 4 * 3)
    self.assertEqual(p["shared"].params, 4 * 3 + 3)  # weights counted once
    self.assertEqual(p.total_params, 6 * 4 + 4 + 4 * 3 + 3)
    self.assertEqual(p.total_macs, 2 * 24 + 2 * 12)

  def test_layer_used_by_another_model_counts_only_here(self):
    dense = L.Dense(2, name="d")
    first = keras.Model(i := keras.Input((3,)), dense(i))
    keras.Model(j := keras.Input((5, 3)), dense(j))  # a second, unrelated use
    self.assertEqual(kslim.profile(first)["d"].macs, 3 * 2)

  def test_reference_cnn_totals(self):
    p = kslim.profile(models.reference_cnn())
    # Five 3x3 convs (no bias): 28*28*16*9*1 + 14*14*32*9*16 + 14*14*32*9*32
    # + 7*7*64*9*32 + 7*7*64*9*64, plus the 64x10 classifier.
    expected = (28 * 28 * 16 * 9 + 14 * 14 * 32 * 9 * 16 + 14 * 14 * 32 * 9 * 32 +
                7 * 7 * 64 * 9 * 32 + 7 * 7 * 64 * 9 * 64 + 64 * 10)
    self.assertEqual(p.total_macs, expected)
    self.assertEqual(p.total_params, models.reference_cnn().count_params())

  def test_quantized_model_counts_the_wrapped_layers(self):
    # kslim.quantize folds BN into each conv (FoldedBatchNorm) and wraps the logits Dense
    # (QuantizeWrapper); the arithmetic is unchanged.
    float_profile = kslim.profile(models.reference_cnn())
    qat_profile = kslim.profile(kslim.quantize(models.reference_cnn()))
    self.assertEqual(qat_profile.total_macs, float_profile.total_macs)
    self.assertEqual(qat_profile["block2_conv"].macs, 14 * 14 * 32 * 9 * 16)
    self.assertEqual(qat_profile["quant_logits"].macs, 64 * 10)

  def test_recurrent_layers_count_both_matrix_products_at_every_step(self):
    inputs = keras.Input((7, 5))
    x = L.LSTM(6, return_sequences=True, name="lstm")(inputs)
    x = L.GRU(4, return_sequences=True, name="gru")(x)
    x = L.SimpleRNN(3, name="rnn")(x)
    p = kslim.profile(keras.Model(inputs, x))
    self.assertEqual(p["lstm"].macs, 7 * 4 * 6 * (5 + 6))  # steps * gates * units * (in + units)
    self.assertEqual(p["gru"].macs, 7 * 3 * 4 * (6 + 4))
    self.assertEqual(p["rnn"].macs, 7 * 1 * 3 * (4 + 3))
    # The QAT model's QuantizedLSTM runs the same products.
    reference = models.row_lstm()
    qat = kslim.profile(kslim.quantize(reference))
    self.assertEqual(qat["lstm"].macs, 28 * 4 * 64 * (28 + 64))
    self.assertEqual(qat.total_macs, kslim.profile(reference).total_macs)

  def test_table_lists_layers_and_totals(self):
    text = str(kslim.profile(models.reference_cnn()))
    self.assertIn("block1_conv (Conv2D)", text)
    self.assertIn("Total MACs: 5,532,544", text)
    self.assertIn("Total params: 70,746", text)

  def test_subclassed_model_is_refused(self):
    class Net(keras.Model):
      def call(self, x):
        return x

    with self.assertRaisesRegex(ValueError, r"no known graph \(Net\)"):
      kslim.profile(Net())

  def test_keras3_model_gets_a_clear_message(self):
    model = keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(2)])
    with self.assertRaisesRegex(TypeError, r"kslim\.profile: got a Keras 3 model.*"
                                r"TF_USE_LEGACY_KERAS=1.*import tf_keras as keras"):
      kslim.profile(model)

  def test_not_a_model(self):
    with self.assertRaisesRegex(TypeError, r"expected a tf_keras\.Model, got builtins\.str"):
      kslim.profile("model.keras")


if __name__ == "__main__":
  absltest.main()
