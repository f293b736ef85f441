"""The classifier training recipe shared by the demo, CLIs and benchmarks.

kslim's benchmarks compare techniques against a float model trained the same way: Adam at
2e-3, batch 128, sparse cross-entropy on logits. Keeping the recipe here keeps them fair.
"""

import sys

import numpy as np

from kslim._keras import check_model, keras

__all__ = ["compile_classifier", "fit_classifier", "fit_compiled", "finetune_schedule",
           "accuracy", "model_accuracy"]


def compile_classifier(model, learning_rate=2e-3):
  """Compiles `model` (logits out) with Adam and sparse categorical cross-entropy."""
  check_model(model, "kslim.training.compile_classifier")
  model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
  return model


def fit_classifier(model, x, y, epochs, batch_size=128, learning_rate=2e-3, seed=0,
                   validation_data=None, callbacks=None, verbose=None):
  """Compiles and trains `model` with the shared recipe; returns the Keras History.

  The seed fixes shuffling, so reruns are comparable; `verbose` as in `fit_compiled`.
  """
  keras.utils.set_random_seed(seed)
  compile_classifier(model, learning_rate)
  return fit_compiled(model, x, y, epochs, batch_size, validation_data, callbacks, verbose)


def fit_compiled(model, x, y, epochs, batch_size=128, validation_data=None, callbacks=None,
                 verbose=None):
  """Fits a compiled `model` (a classifier, a distiller) on shuffled batches; returns the
  History. `verbose` defaults to a progress bar on a terminal and one line per epoch in logs."""
  if verbose is None:
    verbose = 1 if sys.stdout.isatty() else 2
  return model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=True,
                   validation_data=validation_data, callbacks=callbacks, verbose=verbose)


def finetune_schedule(learning_rate, epochs, examples, batch_size=128):
  """Cosine decay from `learning_rate` to 0 over `epochs` of `examples`: the schedule every
  compression fine-tune (QAT, pruning, distillation) and its fair float baseline share."""
  steps = max(1, epochs * -(-examples // batch_size))
  return keras.optimizers.schedules.CosineDecay(learning_rate, steps)


def accuracy(logits, labels):
  """Top-1 accuracy of `logits` (N, C) against integer `labels` (N,)."""
  return float(np.mean(np.argmax(logits, axis=-1) == np.asarray(labels)))


def model_accuracy(model, x, y, batch_size=512):
  """Top-1 accuracy of a Keras `model`'s predictions on images `x` against labels `y`."""
  return accuracy(model.predict(x, batch_size=batch_size, verbose=0), y)
