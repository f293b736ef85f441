"""Candidate scores: `TrainEvaluator` trains a candidate briefly and measures held-out accuracy
(the in-process trial of a search; short proxies rank architectures well enough to search);
`WeightSharingEvaluator` scores a subnet that arrives with a supernet's trained weights.

After a short training the batch-norm moving averages have not settled (with momentum 0.99,
a hundred steps leave a third of the initial statistics in them), which would score every
candidate near chance; they are recalibrated on training images before scoring."""

import numpy as np

from kslim.nas.batch_norm import recalibrate_batch_norm
from kslim.training import finetune_schedule, fit_classifier, model_accuracy

__all__ = ["LatencyReward", "TrainEvaluator", "WeightSharingEvaluator"]


class TrainEvaluator:
  """``evaluator(model) -> held-out accuracy`` after `epochs` of kslim's training recipe.

  Args:
    x_train, y_train: training images and labels.
    x_val, y_val: held-out images and labels the score is measured on (never the test set).
    epochs: training epochs per candidate.
    batch_size: batch size.
    learning_rate: peak learning rate, cosine decay to 0.
    seed: training seed, the same for every candidate so they are compared fairly.
    calibration_images: training images the batch-norm statistics are recalibrated on.
  """

  def __init__(self, x_train, y_train, x_val, y_val, epochs=1, batch_size=128,
               learning_rate=2e-3, seed=0, calibration_images=1000):
    self.x_train, self.y_train = np.asarray(x_train), np.asarray(y_train)
    self.x_val, self.y_val = np.asarray(x_val), np.asarray(y_val)
    self.epochs, self.batch_size = epochs, batch_size
    self.learning_rate, self.seed = learning_rate, seed
    self.calibration_images = calibration_images

  def __call__(self, model):
    schedule = finetune_schedule(self.learning_rate, self.epochs, len(self.x_train),
                                 self.batch_size)
    fit_classifier(model, self.x_train, self.y_train, self.epochs, self.batch_size, schedule,
                   self.seed, verbose=0)
    recalibrate_batch_norm(model, self.x_train[:self.calibration_images])
    return model_accuracy(model, self.x_val, self.y_val)


class WeightSharingEvaluator:
  """``evaluator(model) -> held-out accuracy`` of a candidate that arrives trained: a subnet
  decoded from a supernet (`OFASpace`) with the supernet's weights. Nothing trains; only the
  batch-norm statistics, which in a supernet mix every subnet's, are recalibrated first.

  Args:
    x_calib: training images the batch-norm statistics are recalibrated on (all in one
      batch; a thousand suffice).
    x_val, y_val: held-out images and labels the score is measured on (never the test set).
  """

  def __init__(self, x_calib, x_val, y_val):
    self.x_calib = np.asarray(x_calib)
    self.x_val, self.y_val = np.asarray(x_val), np.asarray(y_val)

  def __call__(self, model):
    recalibrate_batch_norm(model, self.x_calib)
    return model_accuracy(model, self.x_val, self.y_val)


class LatencyReward:
  """MnasNet's latency-aware reward: ``accuracy * (latency / target) ** exponent``.

  Use it instead of (or with) a hard latency `Constraint` when a slightly slower but much
  better network is welcome: with the default exponent, twice the target latency costs about
  5% of the reward, half of it gains about 5%.

  Args:
    evaluate: ``evaluate(model) -> accuracy`` (e.g. a `TrainEvaluator`).
    latency: ``latency(model) -> ms`` (e.g. a `TableLatencyEvaluator`).
    target: the target latency in ms.
    exponent: the trade-off weight (MnasNet: -0.07).

  Example:
    >>> reward = LatencyReward(TrainEvaluator(...), TableLatencyEvaluator("pixel7.json"), 2.0)
    >>> search(RLNAS(space), reward, steps=40)

  References:
    Tan et al., "MnasNet: Platform-Aware Neural Architecture Search for Mobile",
    https://arxiv.org/abs/1807.11626
  """

  def __init__(self, evaluate, latency, target, exponent=-0.07):
    if not target > 0:
      raise ValueError(f"LatencyReward: target must be > 0 ms, got {target!r}")
    self.evaluate, self.latency = evaluate, latency
    self.target, self.exponent = float(target), float(exponent)

  def __call__(self, model):
    ms = float(self.latency(model))  # before training: the cheap part first
    return float(self.evaluate(model)) * (ms / self.target) ** self.exponent
