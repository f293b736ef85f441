"""OFASpace: tokens map to supernet configurations and subnets; controllers search it with
weight-sharing scores and never score one subnet twice."""

from absl.testing import absltest
import numpy as np

from kslim import nas
from kslim._keras import keras
from kslim.nas import batch_norm
from kslim.training import model_accuracy


def _supernet():
  keras.utils.set_random_seed(0)
  return nas.OFASupernet((12, 12, 1), 3, stages=((8, 1), (16, 2)), head_channels=16)


def _data(n, seed=0):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(n, 12, 12, 1)).astype(np.float32), rng.integers(0, 3, n)


class OFASpaceTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.net = _supernet()
    self.space = nas.OFASpace(self.net)

  def test_tokens_are_kernels_expansions_then_depths(self):
    # 2 stages x 3 blocks: 6 kernel tokens (3, 5), 6 expansion tokens (3, 4, 6), 2 depths.
    self.assertEqual(self.space.choices, (2,) * 6 + (3,) * 6 + (3,) * 2)
    tokens = [0, 1, 0, 1, 1, 0, 2, 0, 1, 2, 0, 1, 1, 2]
    config = self.space.config(tokens)
    self.assertEqual(config, {"kernel": [3, 5, 3, 5, 5, 3], "expand": [6, 3, 4, 6, 3, 4],
                              "depth": [2, 3]})
    self.assertEqual(self.space.tokens(config), tokens)
    self.assertEqual(self.space.config(self.space.tokens(self.net.largest())),
                     self.net.largest())
    with self.assertRaisesRegex(ValueError, "'expand' must be 6 values"):
      self.space.tokens({"kernel": [3] * 6, "expand": [5] * 6, "depth": [1, 1]})
    with self.assertRaisesRegex(ValueError, "token 12 is 3, expected 0..2"):
      self.space.decode([0] * 12 + [3, 0])

  def test_decoded_subnet_is_the_supernet_in_that_configuration(self):
    x, _ = _data(4)
    tokens = self.space.random_tokens(np.random.default_rng(3))
    self.net.set_config(self.space.config(tokens))
    np.testing.assert_allclose(self.space.decode(tokens)(x, training=False).numpy(),
                               self.net(x, training=False).numpy(), atol=1e-5)

  def test_key_ignores_the_tokens_of_skipped_blocks_only(self):
    tokens = [0] * 12 + [0, 1]  # stage 1 depth 1: its blocks 2 and 3 are skipped
    skipped = list(tokens)
    skipped[1], skipped[6 + 2] = 1, 2  # stage 1, blocks 2 and 3
    self.assertEqual(self.space.key(tokens), self.space.key(skipped))
    self.assertEqual(self.space.decode(tokens).count_params(),
                     self.space.decode(skipped).count_params())
    used = list(tokens)
    used[4] = 1  # stage 2, block 2: used at depth 2
    self.assertNotEqual(self.space.key(tokens), self.space.key(used))

  def test_a_search_scores_every_subnet_once_within_budget(self):
    x, y = _data(40)
    evaluate = nas.WeightSharingEvaluator(x[:20], x[20:], y[20:])
    budget = self.net.extract(self.net.largest()).count_params() * 0.7
    # SA starts at depth 1 everywhere: most of its one-token moves hit skipped blocks.
    for controller in (nas.SANAS(self.space, init_temperature=0.01, seed=1,
                                 init_tokens=[0] * 14,
                                 constraint=nas.Constraint("params", budget)),
                       nas.RandomSearch(self.space, seed=1,
                                        constraint=nas.Constraint("params", budget))):
      nas.search(controller, evaluate, steps=8, progress=False)
      subnets = {tuple((layer.name, tuple(tuple(w.shape) for w in layer.weights))
                       for layer in self.space.decode(h["tokens"]).layers)
                 for h in controller.history}  # the layers built and their weights' shapes
      self.assertLen(subnets, 8, type(controller).__name__)
      self.assertTrue(all(h["cost"] <= budget for h in controller.history))

  def test_weight_sharing_score_recalibrates_batch_norm_and_trains_nothing(self):
    x, y = _data(40)
    subnet = self.space.decode(self.space.tokens(self.net.smallest()))
    kernels = [w.numpy().copy() for w in subnet.trainable_weights]
    score = nas.WeightSharingEvaluator(x[:20], x[20:], y[20:])(subnet)
    for before, after in zip(kernels, subnet.trainable_weights):
      np.testing.assert_array_equal(before, after.numpy())
    reference = self.space.decode(self.space.tokens(self.net.smallest()))
    batch_norm.recalibrate_batch_norm(reference, x[:20])
    self.assertEqual(score, model_accuracy(reference, x[20:], y[20:]))
    np.testing.assert_allclose(subnet.get_layer("head_bn").moving_mean.numpy(),
                               reference.get_layer("head_bn").moving_mean.numpy(), atol=1e-6)


if __name__ == "__main__":
  absltest.main()
