"""`TrainEvaluator`: scores a candidate by training it briefly and measuring held-out accuracy
(the in-process trial of a search; short proxies rank architectures well enough to search).

After a short training the batch-norm moving averages have not settled (with momentum 0.99,
a hundred steps leave a third of the initial statistics in them), which would score every
candidate near chance; they are recalibrated on training images before scoring."""

import numpy as np

from kslim.nas.batch_norm import recalibrate_batch_norm
from kslim.training import finetune_schedule, fit_classifier, model_accuracy

__all__ = ["TrainEvaluator"]


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
