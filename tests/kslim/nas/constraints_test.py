"""Constraints: MACs and params from kslim.profile, latency from a latency table."""

import os

from absl.testing import absltest

import kslim
from kslim import nas
from kslim.conversion import convert
from tflite_tools import latency_table


def _model():
  return nas.MobileNetV1Space(input_shape=(12, 12, 1), num_classes=3,
                              stages=((8, 1), (16, 2))).decode([0, 0, 0, 0, 0, 0])


class ConstraintTest(absltest.TestCase):

  def test_macs_and_params_budgets(self):
    model = _model()
    prof = kslim.profile(model)
    self.assertEqual(nas.Constraint("macs", 1e9).value(model), prof.total_macs)
    self.assertTrue(nas.Constraint("params", prof.total_params).satisfied(model))
    self.assertFalse(nas.Constraint("params", prof.total_params - 1).satisfied(model))

  def test_latency_from_a_table(self):
    model = _model()
    # A table with 0.25 ms for every op of this model's float32 file and 0.1 ms overhead:
    # the estimate must be exactly 0.1 + 0.25 * ops, all matched exactly.
    signatures = latency_table.op_signatures(convert(model, "float32"))
    table = latency_table.LatencyTable(
        {sig: {"op": name, "dtype": dtype, "work": work, "ms": 0.25}
         for sig, name, dtype, work in signatures}, overhead_ms=0.1)
    path = os.path.join(self.create_tempdir().full_path, "table.json")
    table.save(path)
    evaluator = nas.TableLatencyEvaluator(path)
    estimate = evaluator.estimate(model)
    self.assertEqual((estimate.ops, estimate.exact), (len(signatures), len(signatures)))
    self.assertAlmostEqual(evaluator(model), 0.1 + 0.25 * len(signatures))
    constraint = nas.Constraint("latency", 0.1 + 0.25 * len(signatures), evaluator)
    self.assertTrue(constraint.satisfied(model))
    self.assertFalse(nas.Constraint("latency", 0.2, evaluator).satisfied(model))
    self.assertGreater(nas.TableLatencyEvaluator(table, mode="int8").estimate(model).ops, 0)

  def test_bad_constraints(self):
    with self.assertRaisesRegex(ValueError, "unknown constraint metric 'flops'"):
      nas.Constraint("flops", 1.0)
    with self.assertRaisesRegex(ValueError, "budget must be > 0"):
      nas.Constraint("macs", 0)
    with self.assertRaisesRegex(ValueError, "needs an evaluator"):
      nas.Constraint("latency", 1.0)
    with self.assertRaisesRegex(ValueError, "mode must be"):
      nas.TableLatencyEvaluator(latency_table.LatencyTable({}, 0.0), mode="float16")


class LatencyRewardTest(absltest.TestCase):

  def test_reward_trades_accuracy_for_latency_as_mnasnet(self):
    latencies = {"fast": 1.0, "target": 2.0, "slow": 4.0}
    reward = nas.LatencyReward(lambda name: 0.9, latencies.get, target=2.0, exponent=-0.07)
    self.assertAlmostEqual(reward("target"), 0.9)
    self.assertAlmostEqual(reward("slow"), 0.9 * 2.0 ** -0.07)
    self.assertAlmostEqual(reward("fast"), 0.9 * 0.5 ** -0.07)
    self.assertGreater(reward("fast"), reward("target"))
    rl = nas.RLNAS(nas.BlockSpace({"speed": ("fast", "target", "slow")}, lambda speed: speed),
                   learning_rate=5.0, seed=0)
    nas.search(rl, reward, steps=30, progress=False)  # equal accuracy: the fastest wins
    self.assertEqual(rl.best_tokens, [0])
    self.assertEqual(int(rl.probabilities()[0].argmax()), 0)
    with self.assertRaisesRegex(ValueError, "target must be > 0 ms"):
      nas.LatencyReward(lambda m: 1.0, latencies.get, target=0)


if __name__ == "__main__":
  absltest.main()
