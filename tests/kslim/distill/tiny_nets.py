"""Tiny teacher/student networks and data for the distillation tests."""

import numpy as np

from kslim._keras import keras

L = keras.layers


def tiny_net(width, name, seed=0, classes=3, batch_norm=True):
  """Conv-BN-ReLU (``feat1``) -> Conv-ReLU (``feat2``) -> Conv stride 2 (``feat3``) -> logits.

  ``feat1`` and ``feat2`` are 8x8 maps of `width` channels, ``feat3`` a 4x4 map. Without
  `batch_norm` the BN layer is an identity (so per-replica batch statistics play no part).
  """
  keras.utils.set_random_seed(seed)
  inputs = keras.Input((8, 8, 2), name="image")
  x = L.Conv2D(width, 3, padding="same", use_bias=False, name="conv1")(inputs)
  x = L.BatchNormalization(name="bn1")(x) if batch_norm else L.Identity(name="bn1")(x)
  x = L.ReLU(name="feat1")(x)
  x = L.Conv2D(width, 3, padding="same", activation="relu", name="feat2")(x)
  x = L.Conv2D(width, 3, strides=2, padding="same", activation="relu", name="feat3")(x)
  x = L.GlobalAveragePooling2D(name="pool")(x)
  return keras.Model(inputs, L.Dense(classes, name="logits")(x), name=name)


def data(n=64, seed=0, classes=3):
  """`n` random images and labels that depend on them (so training has something to learn)."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 8, 8, 2)).astype(np.float32)
  y = (x[:, :4].mean(axis=(1, 2, 3)) > 0).astype(np.int64) + (x[..., 1].mean((1, 2)) > 0)
  return x, np.minimum(y, classes - 1)


def log_softmax(z):
  z = z - z.max(axis=-1, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def soft_kl(teacher_logits, student_logits, temperature):
  """numpy reference of Hinton's T^2 * KL(p_t || p_s) at temperature T, batch mean."""
  lt = log_softmax(np.asarray(teacher_logits, np.float64) / temperature)
  ls = log_softmax(np.asarray(student_logits, np.float64) / temperature)
  return temperature ** 2 * np.mean(np.sum(np.exp(lt) * (lt - ls), axis=-1))
