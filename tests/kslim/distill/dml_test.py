"""DML: every peer trains, each one's KL term against numpy, metrics per peer."""

from absl.testing import absltest
import numpy as np

from kslim._keras import keras
from kslim import distill
from tests.kslim.distill import tiny_nets


class DMLTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.x, self.y = tiny_nets.data()
    self.peers = [tiny_nets.tiny_net(w, f"net{w}", seed=w) for w in (2, 3, 4)]

  def test_every_peer_trains(self):
    dml = distill.DML(self.peers[:2])
    dml.compile(keras.optimizers.Adam(1e-2))
    before = [[w.numpy().copy() for w in p.trainable_weights] for p in self.peers[:2]]
    history = dml.fit(self.x, self.y, batch_size=16, epochs=1, verbose=0)
    for peer, old in zip(dml.peers, before):
      self.assertTrue(all(not np.array_equal(a, b.numpy())
                          for a, b in zip(old, peer.trainable_weights)), peer.name)
    self.assertEqual(set(history.history),
                     {"loss", "net2_loss", "net2_kl_loss", "net2_accuracy", "net3_loss",
                      "net3_kl_loss", "net3_accuracy"})

  def test_each_peer_objective_against_numpy(self):
    dml = distill.DML(self.peers, temperature=2.0, kl_weight=0.5)
    dml.compile()
    got = dml.evaluate(self.x, self.y, batch_size=64, verbose=0, return_dict=True)
    logits = [p.predict(self.x, verbose=0) for p in self.peers]
    total = 0.0
    for i, peer in enumerate(self.peers):
      # Peer i's mimicry term: the mean over the other peers of T^2 KL(p_j || p_i).
      kl = np.mean([tiny_nets.soft_kl(logits[j], logits[i], 2.0) for j in range(3) if j != i])
      ce = np.mean(keras.losses.sparse_categorical_crossentropy(self.y, logits[i],
                                                                from_logits=True))
      self.assertAlmostEqual(got[f"{peer.name}_kl_loss"], kl, places=4)
      self.assertAlmostEqual(got[f"{peer.name}_loss"], ce + 0.5 * kl, places=4)
      self.assertAlmostEqual(got[f"{peer.name}_accuracy"],
                             np.mean(logits[i].argmax(-1) == self.y), places=6)
      total += ce + 0.5 * kl
    self.assertAlmostEqual(got["loss"], total, places=4)

  def test_repeated_names_become_peer_indices_and_errors(self):
    twins = [tiny_nets.tiny_net(2, "same", seed=s) for s in (0, 1)]
    self.assertEqual(distill.DML(twins).peer_names, ["peer0", "peer1"])
    with self.assertRaisesRegex(ValueError, "at least two peer models, got 1"):
      distill.DML(self.peers[:1])
    small = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.Flatten(),
                              keras.layers.Dense(3)], name="small")
    with self.assertRaisesRegex(ValueError, "different inputs"):
      distill.DML([self.peers[0], small])

  def test_config_round_trip(self):
    dml = distill.DML(self.peers[:2], temperature=3.0, kl_weight=0.2)
    again = distill.DML.from_config(dml.get_config())
    self.assertEqual((again.temperature, again.kl_weight), (3.0, 0.2))
    self.assertEqual([p.get_config() for p in again.peers],
                     [p.get_config() for p in self.peers[:2]])


if __name__ == "__main__":
  absltest.main()
