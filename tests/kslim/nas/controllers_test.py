"""SA, RL and random controllers: the annealing rule, policy updates, budgets, resuming."""

import functools
import json
import math
from unittest import mock

from absl.testing import absltest
import numpy as np

from kslim import nas
from kslim.nas import sa as sa_lib


def _space():
  """Three tokens of (4, 3, 2) options; the "model" is a stub: controllers never train."""
  return nas.BlockSpace({"a": (0, 1, 2, 3), "b": (0, 1, 2), "c": (0, 1)}, lambda **v: v)


class _SumCost:
  """A constraint on the sum of the token values (stands in for MACs)."""
  metric = nas.constraints.Metric.MACS

  def __init__(self, budget):
    self.budget = budget

  def value(self, values):
    return float(sum(values.values()))


class SANASTest(absltest.TestCase):

  def test_acceptance_rule(self):
    self.assertEqual(sa_lib.acceptance_probability(0.9, 0.8, 0.01), 1.0)
    self.assertAlmostEqual(sa_lib.acceptance_probability(0.7, 0.8, 0.05), math.exp(-2.0))
    self.assertEqual(sa_lib.acceptance_probability(0.7, 0.8, 0.0), 0.0)

  def test_accepts_worse_only_when_the_draw_is_under_exp_delta_over_t(self):
    sa = nas.SANAS(_space(), init_temperature=0.1, reduce_rate=0.5, seed=3)
    sa.next_archs()
    self.assertTrue(sa.reward(0.8))  # the first candidate is always accepted
    self.assertEqual(sa.temperature, 0.05)  # 0.1 * 0.5 ** 1
    # A worse reward 0.7: accepted iff the uniform draw < exp(-0.1 / 0.05) = 0.135.
    for draw, accepted in ((0.10, True), (0.20, False)):
      probe = nas.SANAS(_space(), init_temperature=0.1, reduce_rate=0.5, seed=3)
      probe.next_archs()
      probe.reward(0.8)
      candidate = probe.next_archs()[0]
      probe.rng = mock.Mock(random=mock.Mock(return_value=draw))  # the acceptance draw
      self.assertEqual(probe.reward(0.7), accepted)
      self.assertEqual(probe.current_tokens, candidate if accepted else probe.init_tokens)
      self.assertEqual(probe.current_reward, 0.7 if accepted else 0.8)

  def test_mutates_one_token_and_keeps_the_best(self):
    sa = nas.SANAS(_space(), seed=0)
    rewards = iter([0.5, 0.9, 0.1, 0.2, 0.3])
    previous = None
    for reward in rewards:
      tokens = sa.next_archs()[0]
      if previous is not None:
        self.assertEqual(sum(a != b for a, b in zip(tokens, sa.current_tokens)), 1)
      sa.reward(reward)
      previous = tokens
    self.assertEqual(sa.best_reward, 0.9)
    self.assertEqual(sa.history[1]["tokens"], sa.best_tokens)


class RLNASTest(absltest.TestCase):

  def test_probabilities_move_toward_rewarded_tokens(self):
    rl = nas.RLNAS(_space(), learning_rate=1.0, seed=0)
    for _ in range(60):
      tokens = rl.next_archs()[0]
      rl.reward(1.0 if tokens[0] == 2 else 0.0)  # only token a=2 pays
    p = rl.probabilities()
    self.assertGreater(p[0][2], 0.7)
    np.testing.assert_allclose([q.sum() for q in p], 1.0)

  def test_one_update_against_the_reinforce_formula(self):
    rl = nas.RLNAS(_space(), learning_rate=0.5, baseline_decay=0.8, normalize_advantage=False,
                   seed=0)
    rl.next_archs()
    rl.reward(1.0)  # sets the baseline to 1: zero advantage, no change
    np.testing.assert_allclose(rl.logits[0], 0.0)
    tokens = rl.next_archs()[0]
    rl.reward(2.0)  # advantage 2 - 1 = 1; grad of log p = onehot - p, with p uniform
    want = 0.5 * 1.0 * (np.eye(4)[tokens[0]] - 0.25)
    np.testing.assert_allclose(rl.logits[0], want)
    self.assertAlmostEqual(rl.baseline, 0.8 * 1.0 + 0.2 * 2.0)

  def test_normalized_advantages_do_not_depend_on_the_reward_scale(self):
    rewards = [0.70, 0.72, 0.69, 0.75, 0.71, 0.74]
    policies = []
    for scale in (1.0, 100.0):
      rl = nas.RLNAS(_space(), learning_rate=0.5, baseline_decay=0.8, seed=0)
      for reward in rewards:
        rl.next_archs()
        rl.reward(scale * reward)
      policies.append(rl.probabilities())
    for small, large in zip(*policies):
      np.testing.assert_allclose(small, large, rtol=1e-9)
    # Second reward: baseline 0.70, advantage 0.02, its square's average starts at 0.02 ** 2,
    # so the normalized advantage is exactly 1 and the step that of a unit advantage.
    rl = nas.RLNAS(_space(), learning_rate=0.5, baseline_decay=0.8, seed=0)
    rl.next_archs()
    rl.reward(0.70)
    tokens = rl.next_archs()[0]
    rl.reward(0.72)
    np.testing.assert_allclose(rl.logits[0], 0.5 * (np.eye(4)[tokens[0]] - 0.25))
    # Third: baseline 0.704, advantage -0.014, average square 0.8 * 4e-4 + 0.2 * 0.014 ** 2.
    before = [l.copy() for l in rl.logits]
    p = rl.probabilities()[0]
    tokens = rl.next_archs()[0]
    rl.reward(0.69)
    advantage = -0.014 / np.sqrt(0.8 * 0.02 ** 2 + 0.2 * 0.014 ** 2)
    np.testing.assert_allclose(rl.logits[0] - before[0],
                               0.5 * advantage * (np.eye(4)[tokens[0]] - p))

  def test_a_few_rewards_a_few_hundredths_apart_already_shift_the_policy(self):
    rl = nas.RLNAS(_space(), seed=0)
    for _ in range(12):
      tokens = rl.next_archs()[0]
      rl.reward(0.72 if tokens[1] == 2 else 0.70)  # b=2 is two hundredths better
    self.assertGreater(rl.probabilities()[1][2], 0.6)
    raw = nas.RLNAS(_space(), normalize_advantage=False, seed=0)
    for _ in range(12):
      tokens = raw.next_archs()[0]
      raw.reward(0.72 if tokens[1] == 2 else 0.70)
    self.assertLess(raw.probabilities()[1][2], 0.4)  # the raw advantage barely moves it


  def test_budget_checks_step_the_policy_along_the_within_budget_rate(self):
    rl = nas.RLNAS(_space(), learning_rate=0.5, feasibility_decay=0.9, seed=0)
    for reward in (0.70, 0.72):
      rl.next_archs()
      rl.reward(reward)
    baseline, square = rl.baseline, rl.advantage_square
    logits = [l.copy() for l in rl.logits]
    rl.budget_checked([3, 2, 1], True)  # the first check only starts the rate
    self.assertEqual(rl.feasible_rate, 1.0)
    for a, b in zip(rl.logits, logits):
      np.testing.assert_array_equal(a, b)
    for tokens, within, rate in (([3, 2, 1], False, 0.9), ([0, 0, 0], True, 0.91)):
      before, p, previous = [l.copy() for l in rl.logits], rl.probabilities(), rl.feasible_rate
      rl.budget_checked(tokens, within)
      step = float(within) - previous  # over: -rate (away from it); within: 1 - rate (toward)
      for logits, old, q, token in zip(rl.logits, before, p, tokens):
        np.testing.assert_allclose(logits - old, 0.5 * step * (np.eye(len(q))[token] - q))
      self.assertAlmostEqual(rl.feasible_rate, rate)
    self.assertEqual((rl.baseline, rl.advantage_square), (baseline, square))  # real rewards only
    off = nas.RLNAS(_space(), feasibility_weight=0.0, seed=0)
    logits = [l.copy() for l in off.logits]
    off.budget_checked([3, 2, 1], True)
    off.budget_checked([3, 2, 1], False)
    for a, b in zip(off.logits, logits):
      np.testing.assert_array_equal(a, b)
    with self.assertRaisesRegex(ValueError, "feasibility_weight=-1"):
      nas.RLNAS(_space(), feasibility_weight=-1)

  def test_the_within_budget_rate_keeps_a_tight_search_going(self):
    # 14 tokens of 4 options, bigger options score better, 14% of random candidates fit: a
    # policy that ignores its over-budget proposals drifts out of the budget and stops.
    space = nas.BlockSpace({f"t{i}": (0, 1, 2, 3) for i in range(14)}, lambda **v: v)
    stopped, skipped = {}, {}
    for weight in (1.0, 0.0):
      stopped[weight] = skipped[weight] = 0
      for seed in range(8):
        rl = nas.RLNAS(space, constraint=_SumCost(16), feasibility_weight=weight, seed=seed)
        try:
          for _ in range(120):
            rl.reward(0.8 + sum(rl.next_archs()[0]) / 1000)
        except RuntimeError:
          stopped[weight] += 1
        skipped[weight] += rl.skipped
    self.assertEqual(stopped[1.0], 0)
    self.assertGreater(stopped[0.0], 0)
    self.assertLess(skipped[1.0], 0.5 * skipped[0.0])


  def test_revisits_do_not_step_the_policy(self):
    rl = nas.RLNAS(_space(), seed=0)
    for reward in (0.70, 0.72):
      tokens = rl.next_archs()[0]
      rl.reward(reward)
    logits = [l.copy() for l in rl.logits]
    rl.revisit(tokens, 0.72)
    for a, b in zip(rl.logits, logits):
      np.testing.assert_array_equal(a, b)
    collapsed = 0  # batches of three distinct candidates, three rounds, 20 seeds
    for seed in range(20):
      rl = nas.RLNAS(_space(), constraint=_SumCost(3), seed=seed)
      try:
        for _ in range(3):
          rl.reward([sum(t) / 10 for t in rl.next_archs(3)])
      except RuntimeError:
        collapsed += 1
    self.assertLessEqual(collapsed, 1)


class ConstraintAndResumeTest(absltest.TestCase):

  def test_candidates_over_budget_are_never_proposed(self):
    for controller in (nas.SANAS(_space(), constraint=_SumCost(2), seed=1),
                       nas.RLNAS(_space(), constraint=_SumCost(2), seed=1),
                       nas.RandomSearch(_space(), constraint=_SumCost(2), seed=1)):
      for step in range(15):
        tokens = controller.next_archs()[0]
        self.assertLessEqual(sum(tokens), 2)  # token values equal the option values here
        controller.reward(float(step % 4))
      self.assertGreater(controller.skipped, 0, type(controller).__name__)
      self.assertTrue(all(h["cost"] <= 2 for h in controller.history))

  def test_impossible_budget_is_a_clear_error(self):
    controller = nas.RandomSearch(_space(), constraint=_SumCost(-1), max_resample=5)
    with self.assertRaisesRegex(RuntimeError, "fewer than 1 distinct candidates within .* in 5 "
                                "proposals"):
      controller.next_archs()

  def test_batches_are_distinct_within_budget_and_rewarded_in_order(self):
    for controller in (nas.SANAS(_space(), constraint=_SumCost(3), seed=2),
                       nas.RLNAS(_space(), constraint=_SumCost(3), seed=2),
                       nas.RandomSearch(_space(), constraint=_SumCost(3), seed=2)):
      name = type(controller).__name__
      for _ in range(3):
        batch = controller.next_archs(3)
        self.assertLen(batch, 3)
        self.assertLen({tuple(t) for t in batch}, 3, name)
        self.assertTrue(all(sum(t) <= 3 for t in batch), name)
        self.assertEqual(controller.next_archs(3), batch)  # pending until rewarded
        with self.assertRaisesRegex(ValueError, "2 scores for 3 pending candidates"):
          controller.reward([0.1, 0.2])
        accepted = controller.reward([sum(t) / 10 for t in batch])
        self.assertLen(accepted, 3)
        self.assertEqual([h["tokens"] for h in controller.history[-3:]], batch)
      self.assertEqual(controller.step, 9)
      self.assertEqual([h["step"] for h in controller.history], list(range(9)))
    sa = nas.SANAS(_space(), init_tokens=[1, 1, 0])
    self.assertEqual(sa.next_archs(2)[0], [1, 1, 0])  # the first batch starts at init_tokens

  def test_too_many_distinct_candidates_for_the_space_is_an_error(self):
    with self.assertRaisesRegex(RuntimeError, "fewer than 25 distinct candidates"):
      nas.RandomSearch(_space(), max_resample=100).next_archs(25)  # the space has 24

  def test_a_scored_candidate_is_not_trained_again(self):
    for cls in (functools.partial(nas.SANAS, init_temperature=10.0),  # both still exploring
                functools.partial(nas.RLNAS, learning_rate=0.2), nas.RandomSearch):
      trained = []

      def score(values, trained=trained):
        trained.append(tuple(values.values()))
        return values["a"] * 0.3 + values["b"] * 0.1 - values["c"] * 0.2

      controller = cls(_space(), seed=4)
      nas.search(controller, score, 12, progress=False)
      self.assertLen(trained, 12)
      name = type(controller).__name__
      self.assertLen(set(trained), 12, name)  # half the space, nothing twice
      self.assertGreater(controller.revisited, 0, name)  # it did propose repeats
    # Past the whole space (24), known candidates are trained again rather than an error.
    exhausted = nas.RandomSearch(_space(), seed=0, max_resample=30)
    nas.search(exhausted, lambda values: 0.5, 26, progress=False)
    self.assertLen({tuple(h["tokens"]) for h in exhausted.history}, 24)
    self.assertLen(exhausted.history, 26)

  def test_interrupted_search_resumes_with_the_same_candidates(self):
    for cls in (nas.SANAS, nas.RLNAS, nas.RandomSearch):
      def score(values):
        return values["a"] * 0.3 + values["b"] * 0.1 - values["c"] * 0.2

      tmp = self.create_tempdir().full_path
      whole = cls(_space(), seed=7)
      nas.search(whole, score, 12, progress=False)
      first = cls(_space(), seed=7, checkpoint=f"{tmp}/ckpt.json")
      nas.search(first, score, 5, log=f"{tmp}/log.jsonl", progress=False)
      first.next_archs()  # proposed, then "killed" before its reward
      resumed = cls(_space(), seed=7, checkpoint=f"{tmp}/ckpt.json")
      self.assertEqual(resumed.step, 5)
      best = nas.search(resumed, score, 12, log=f"{tmp}/log.jsonl", progress=False)
      self.assertEqual([h["tokens"] for h in resumed.history],
                       [h["tokens"] for h in whole.history], cls.__name__)
      self.assertEqual(best, (whole.best_tokens, whole.best_reward))
      lines = [json.loads(l) for l in open(f"{tmp}/log.jsonl")]
      self.assertEqual([l["step"] for l in lines], list(range(12)))

  def test_rl_checkpoint_without_a_feasible_rate_resumes(self):
    path = f"{self.create_tempdir().full_path}/ckpt.json"
    first = nas.RLNAS(_space(), constraint=_SumCost(100), seed=3, checkpoint=path)
    nas.search(first, lambda values: values["a"] * 0.1, 4, progress=False)
    data = json.loads(open(path).read())
    self.assertIsNotNone(data["state"].pop("feasible_rate"))
    with open(path, "w") as f:
      json.dump(data, f)
    resumed = nas.RLNAS(_space(), constraint=_SumCost(100), seed=3, checkpoint=path)
    self.assertEqual(resumed.step, 4)
    self.assertIsNone(resumed.feasible_rate)
    np.testing.assert_allclose(resumed.logits[0], first.logits[0])
    nas.search(resumed, lambda values: values["a"] * 0.1, 6, progress=False)
    self.assertEqual(resumed.feasible_rate, 1.0)  # restarted from the next proposal

  def test_checkpoint_of_another_controller_is_refused(self):
    path = f"{self.create_tempdir().full_path}/ckpt.json"
    sa = nas.SANAS(_space(), checkpoint=path)
    sa.next_archs()
    sa.reward(0.5)
    with self.assertRaisesRegex(ValueError, "is a SANAS checkpoint, not a RLNAS one"):
      nas.RLNAS(_space(), checkpoint=path)


if __name__ == "__main__":
  absltest.main()
