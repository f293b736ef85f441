"""`recalibrate_batch_norm`: exact batch-norm statistics for a model whose running statistics
are unreliable — a subnet extracted from a supernet (their running statistics mix every
subnet), or a candidate trained too briefly for the moving averages to settle."""

import numpy as np

from kslim._keras import keras

__all__ = ["recalibrate_batch_norm"]


def recalibrate_batch_norm(model, x):
  """Sets every BatchNormalization's moving mean and variance in `model` to the statistics of
  its input over the images `x`, as it sees them at inference.

  One forward pass in training mode over all of `x` as a single batch, with every layer's
  momentum at 0: each layer normalizes with, and stores, the exact statistics of its input,
  and those inputs come from earlier layers normalized exactly as they will be at inference.
  (The fused kernel stores the unbiased variance; it is scaled back to the biased one that
  normalizes.)

  Args:
    model: a tf_keras model; every BatchNormalization layer in it, nested models included,
      is updated.
    x: the calibration images, all in one batch (a thousand images suffice).

  Returns:
    `model`, updated in place.
  """
  bns = [l for l in model.submodules if isinstance(l, keras.layers.BatchNormalization)]
  momenta = [bn.momentum for bn in bns]
  for bn in bns:
    bn.momentum = 0.0
  try:
    model(x, training=True)
  finally:
    for bn, momentum in zip(bns, momenta):
      bn.momentum = momentum
  for bn in bns:
    if bn.fused:
      count = len(x) * int(np.prod(bn.input.shape[1:-1]))
      bn.moving_variance.assign(bn.moving_variance * ((count - 1) / count))
  return model
