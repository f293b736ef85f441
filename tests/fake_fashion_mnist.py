"""Tiny, learnable Fashion-MNIST look-alikes written as real IDX files, for fast tests.

Class k draws a bright 6x6 square at a class-specific place over noise, so a small CNN learns it
in one short epoch; the files go through the same loader as the real data.
"""

import gzip
import pathlib

import numpy as np

__all__ = ["idx_bytes", "make_split", "write_dataset"]


def idx_bytes(array):
  """The IDX encoding of a uint8 array: magic 0x0000 08 <ndim>, big-endian dims, data."""
  array = np.asarray(array, np.uint8)
  header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
      int(d).to_bytes(4, "big") for d in array.shape)
  return header + array.tobytes()


def make_split(n, seed):
  """`n` images (n, 28, 28) uint8 and labels (n,) uint8."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 10, n).astype(np.uint8)
  images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
  for i, k in enumerate(labels):
    row, col = 2 + 8 * (k // 4), 2 + 6 * (k % 4)
    images[i, row:row + 6, col:col + 6] = 230
  return images, labels


def write_dataset(directory, n_train=256, n_test=128, compress=True, seed=0):
  """Writes the four Fashion-MNIST IDX files into `directory`; returns the arrays."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  train, test = make_split(n_train, seed), make_split(n_test, seed + 1)
  for prefix, (images, labels) in (("train", train), ("t10k", test)):
    for stem, array in ((f"{prefix}-images-idx3-ubyte", images),
                        (f"{prefix}-labels-idx1-ubyte", labels)):
      data = idx_bytes(array)
      if compress:
        (directory / (stem + ".gz")).write_bytes(gzip.compress(data))
      else:
        (directory / stem).write_bytes(data)
  return train, test


def write_npz(directory, n_train=96, n_test=64, seed=0):
  """Writes ``data.npz`` (x_train, y_train, x_test, y_test; images in [0, 1] with a channel
  axis), the --dataset file the kslim binaries take; returns its path."""
  (x_train, y_train), (x_test, y_test) = make_split(n_train, seed), make_split(n_test, seed + 1)
  path = pathlib.Path(directory) / "data.npz"
  np.savez(path, x_train=x_train[..., None] / 255.0, y_train=y_train,
           x_test=x_test[..., None] / 255.0, y_test=y_test)
  return str(path)
