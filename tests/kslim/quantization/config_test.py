"""kslim.QuantConfig: validation, per-layer resolution, serialization."""

from absl.testing import absltest

from kslim._keras import keras
from kslim.quantization import quantizers
from kslim.quantization.config import QuantConfig


class QuantConfigTest(absltest.TestCase):

  def test_round_trip_and_equality(self):
    config = QuantConfig(weight_bits=4, activation_quantizer="pact",
                         overrides={"logits": {"weight_bits": 8}}, skip=["stem"])
    self.assertEqual(QuantConfig.from_config(config.get_config()), config)
    self.assertEqual(config.skip, ("stem",))

  def test_bad_values_name_the_field(self):
    with self.assertRaisesRegex(ValueError, "QuantConfig.weight_bits: num_bits"):
      QuantConfig(weight_bits=1)
    with self.assertRaisesRegex(ValueError, r"activation_quantizer must be one of \['abs_max'"):
      QuantConfig(activation_quantizer="channel_wise_abs_max")
    with self.assertRaisesRegex(ValueError, "unsupported must be one of"):
      QuantConfig(unsupported="ignore")
    with self.assertRaisesRegex(ValueError, r"batch_norm must be one of \['train', 'freeze'\]"):
      QuantConfig(batch_norm="fold")
    with self.assertRaisesRegex(ValueError, r"overrides\['conv'\] has unknown keys \['bits'\]"):
      QuantConfig(overrides={"conv": {"bits": 4}})
    with self.assertRaisesRegex(ValueError, "LayerOverride.activation_bits"):
      QuantConfig(overrides={"conv": {"activation_bits": 12}})

  def test_a_name_override_wins_over_a_class_override(self):
    config = QuantConfig(overrides={"Conv2D": {"weight_bits": 4, "activation_bits": 6},
                                    "head": {"weight_bits": 2}})
    head = keras.layers.Conv2D(4, 1, name="head")
    self.assertEqual(config.for_layer("head", "Conv2D").weight_bits, 2)
    self.assertEqual(config.for_layer("head", "Conv2D").activation_bits, 6)
    self.assertEqual(config.for_layer("other", "Dense").weight_bits, 8)
    self.assertEqual(config.weight_quantizer_for(head),
                     quantizers.ChannelWiseAbsMax(2, depthwise=False))

  def test_edge_bits_fill_in_what_a_name_override_leaves(self):
    config = QuantConfig(weight_bits=4, activation_bits=4, edge_bits=8,
                         overrides={"stem": {"weight_bits": 6}})
    edged = config.with_edges(first=["stem"], last=["head"], tensors=["image", "head"])
    self.assertEqual(edged.for_layer("stem", "Conv2D").weight_bits, 6)  # the user's choice
    self.assertEqual(edged.for_layer("stem", "Conv2D").activation_bits, 4)
    self.assertEqual(edged.for_layer("head", "Dense").weight_bits, 8)
    self.assertEqual(edged.for_layer("head", "Dense").activation_bits, 8)
    self.assertEqual(edged.for_layer("image", "InputLayer").activation_bits, 8)
    self.assertEqual(edged.for_layer("middle", "Conv2D").weight_bits, 4)
    plain = QuantConfig(weight_bits=4)
    self.assertIs(plain.with_edges(["stem"], ["head"], ["image"]), plain)
    with self.assertRaisesRegex(ValueError, "QuantConfig.edge_bits: num_bits"):
      QuantConfig(edge_bits=9)

  def test_quantizer_choice_per_tensor(self):
    config = QuantConfig(activation_quantizer="pact", pact_decay=0.01)
    self.assertEqual(config.activation_quantizer_for("relu", "ReLU", signed=False),
                     quantizers.PACT(8, signed=False, decay=0.01))
    # Signed tensors inside the model get PACT's symmetric clip; signed model inputs and
    # outputs are not clipped.
    self.assertEqual(config.activation_quantizer_for("add", "Add", signed=True),
                     quantizers.PACT(8, signed=True, decay=0.01))
    self.assertIsInstance(config.activation_quantizer_for("logits", "Dense", signed=True,
                                                          edge=True),
                          quantizers.MovingAverageAbsMax)
    dense = keras.layers.Dense(3)
    self.assertEqual(config.weight_quantizer_for(dense, per_channel=False), quantizers.AbsMax(8))


if __name__ == "__main__":
  absltest.main()
