"""Token search spaces decode to valid models; bad tokens name their position."""

from absl.testing import absltest
import numpy as np

import kslim
from kslim import nas
from kslim._keras import keras


class StagedSpacesTest(absltest.TestCase):

  def test_every_space_decodes_its_extremes_and_random_tokens(self):
    rng = np.random.default_rng(0)
    for space_class in (nas.MobileNetV2Space, nas.MobileNetV1Space, nas.ResNetSpace):
      space = space_class(input_shape=(16, 16, 1), num_classes=4, stages=((8, 1), (16, 2)))
      self.assertLen(space.choices, 2 * len(space_class.options))
      candidates = [[0] * len(space.choices), [c - 1 for c in space.choices],
                    space.random_tokens(rng)]
      macs = []
      for tokens in candidates:
        model = space.decode(tokens)
        self.assertEqual(model.output_shape, (None, 4), space_class.__name__)
        out = model.predict(np.zeros((2, 16, 16, 1), np.float32), verbose=0)
        self.assertEqual(out.shape, (2, 4))
        macs.append(kslim.profile(model).total_macs)
      self.assertLess(macs[0], macs[1], f"{space_class.__name__}: smallest vs largest options")

  def test_config_reads_the_option_table(self):
    space = nas.MobileNetV2Space(stages=((16, 1), (24, 2)))
    cfg = space.config([2, 1, 0, 2, 0, 0, 2, 1])
    self.assertEqual(cfg, [{"expansion": 6, "kernel": 5, "width": 0.5, "depth": 3},
                           {"expansion": 1, "kernel": 3, "width": 1.0, "depth": 2}])
    model = space.decode([2, 1, 0, 2, 0, 0, 2, 1])
    # Stage 1: three blocks of width 0.5 * 16 = 8 channels, 5x5 depthwise, expansion 6.
    self.assertEqual(model.get_layer("stage1_block3_project").filters, 8)
    self.assertEqual(model.get_layer("stage1_block1_dw").kernel_size, (5, 5))
    self.assertEqual(model.get_layer("stage1_block1_expand_conv").filters, 16 * 6)
    self.assertEqual(model.get_layer("stage2_block2_project").filters, 24)
    self.assertNotIn("stage2_block3_project", [layer.name for layer in model.layers])

  def test_bad_tokens_name_the_position(self):
    space = nas.ResNetSpace()
    with self.assertRaisesRegex(ValueError, r"token 4 is 7, expected 0..2"):
      space.decode([0, 0, 0, 0, 7, 0, 0, 0, 0])
    with self.assertRaisesRegex(ValueError, "expected 9 tokens, got 2"):
      space.decode([0, 0])
    self.assertEqual(space.size(), (2 * 3 * 3) ** 3)


class BlockSpaceTest(absltest.TestCase):

  def test_user_defined_space(self):
    def build(filters, kernel):
      inputs = keras.Input((8, 8, 1))
      x = keras.layers.Conv2D(filters, kernel, name="conv")(inputs)
      return keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))

    space = nas.BlockSpace({"filters": (4, 8, 16), "kernel": (1, 3)}, build)
    self.assertEqual(space.choices, (3, 2))
    self.assertEqual(space.config([2, 1]), {"filters": 16, "kernel": 3})
    conv = space.decode([2, 1]).get_layer("conv")
    self.assertEqual((conv.filters, conv.kernel_size), (16, (3, 3)))
    with self.assertRaisesRegex(ValueError, "at least one value"):
      nas.BlockSpace({"filters": ()}, build)


if __name__ == "__main__":
  absltest.main()
