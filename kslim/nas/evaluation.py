"""`TrainEvaluator`: scores a candidate by training it briefly and measuring held-out accuracy
(the in-process trial of a search; short proxies rank architectures well enough to search)."""

import numpy as np

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
  """

  def __init__(self, x_train, y_train, x_val, y_val, epochs=1, batch_size=128,
               learning_rate=2e-3, seed=0):
    self.x_train, self.y_train = np.asarray(x_train), np.asarray(y_train)
    self.x_val, self.y_val = np.asarray(x_val), np.asarray(y_val)
    self.epochs, self.batch_size = epochs, batch_size
    self.learning_rate, self.seed = learning_rate, seed

  def __call__(self, model):
    schedule = finetune_schedule(self.learning_rate, self.epochs, len(self.x_train),
                                 self.batch_size)
    fit_classifier(model, self.x_train, self.y_train, self.epochs, self.batch_size, schedule,
                   self.seed, verbose=0)
    return model_accuracy(model, self.x_val, self.y_val)
