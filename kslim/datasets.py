"""Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package, read from IDX files.

Nothing is downloaded at run time: the loader reads the four IDX files (gzipped or not) from
``$KSLIM_DATA_DIR`` or ``/usr/share/datasets/fashion-mnist/``, checks their magic numbers and
sizes, and returns arrays shaped like ``keras.datasets.fashion_mnist.load_data()``.
"""

import gzip
import os
import pathlib

import numpy as np

__all__ = [
    "DEFAULT_DATA_DIR",
    "CLASS_NAMES",
    "load",
    "load_fashion_mnist",
    "normalize",
    "to_dataset",
]

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")

_INSTALL_HINT = ("Install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), "
                 "or set KSLIM_DATA_DIR to a folder holding the four Fashion-MNIST IDX files.")
# IDX magic: two zero bytes, the element type (0x08 = uint8), then the number of dimensions.
_UBYTE = 0x08
_SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IMAGE_SHAPE = (28, 28)


def _data_dir():
  return pathlib.Path(os.environ.get("KSLIM_DATA_DIR") or DEFAULT_DATA_DIR)


def _read_bytes(directory, stem):
  for path in (directory / (stem + ".gz"), directory / stem):
    if path.is_file():
      try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
          return path, f.read()
      except (OSError, EOFError) as e:
        raise ValueError(f"Fashion-MNIST file {path} is corrupt ({e}). {_INSTALL_HINT}") from e
  raise FileNotFoundError(
      f"Fashion-MNIST file {directory / (stem + '.gz')} not found. {_INSTALL_HINT}")


def _parse_idx(path, data, ndim):
  """Parses one uint8 IDX file of `ndim` dimensions, checking its magic number and length."""
  if len(data) < 4 + 4 * ndim:
    raise ValueError(f"Fashion-MNIST file {path} is corrupt: only {len(data)} bytes. "
                     f"{_INSTALL_HINT}")
  zeros, dtype, dims = data[0:2], data[2], data[3]
  if zeros != b"\x00\x00" or dtype != _UBYTE or dims != ndim:
    raise ValueError(
        f"Fashion-MNIST file {path} is corrupt: bad IDX magic number {data[:4].hex()} "
        f"(expected 0000{_UBYTE:02x}{ndim:02x}). {_INSTALL_HINT}")
  shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  payload = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
  if payload.size != int(np.prod(shape)):
    raise ValueError(f"Fashion-MNIST file {path} is corrupt: {payload.size} data bytes, expected "
                     f"{int(np.prod(shape))} (truncated?). {_INSTALL_HINT}")
  return payload.reshape(shape)


def load_fashion_mnist():
  """Loads Fashion-MNIST from the local IDX files.

  Returns:
    ``((x_train, y_train), (x_test, y_test))``: uint8 arrays of shapes (60000, 28, 28),
    (60000,), (10000, 28, 28) and (10000,), as ``keras.datasets.fashion_mnist.load_data()``.
    (A folder holding a consistent subset in the same format loads too: tests use that.)

  Raises:
    FileNotFoundError: a file is missing; the message names it and says how to install it.
    ValueError: a file is corrupt (bad magic number, header or length); the message names it.
  """
  directory = _data_dir()
  splits = []
  for split in ("train", "test"):
    image_stem, label_stem = _SPLITS[split]
    path, data = _read_bytes(directory, image_stem)
    images = _parse_idx(path, data, 3)
    if images.shape[1:] != _IMAGE_SHAPE:
      raise ValueError(f"Fashion-MNIST file {path} is corrupt: images of shape "
                       f"{images.shape[1:]}, expected {_IMAGE_SHAPE}. {_INSTALL_HINT}")
    path, data = _read_bytes(directory, label_stem)
    labels = _parse_idx(path, data, 1)
    if len(labels) != len(images):
      raise ValueError(f"Fashion-MNIST file {path} is corrupt: {len(labels)} labels for "
                       f"{len(images)} images. {_INSTALL_HINT}")
    if labels.max() >= len(CLASS_NAMES):
      raise ValueError(f"Fashion-MNIST file {path} is corrupt: label {labels.max()} out of "
                       f"range 0..9. {_INSTALL_HINT}")
    splits.append((images, labels))
  return tuple(splits)


_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def load(spec):
  """Training and test data, ready to train on: ``"fashion_mnist"`` (normalized to [0, 1]
  with a channel axis) or a .npz file with float images x_train, x_test and integer labels
  y_train, y_test.

  Returns:
    ((x_train, y_train), (x_test, y_test)).

  Raises:
    ValueError: `spec` is neither, or the .npz lacks one of the arrays.
  """
  if spec == "fashion_mnist":
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist()
    return ((normalize(x_train), y_train), (normalize(x_test), y_test))
  if not spec.endswith(".npz") or not os.path.isfile(spec):
    raise ValueError(f"expected 'fashion_mnist' or an existing .npz file, got {spec!r}")
  with np.load(spec) as data:
    missing = [k for k in _NPZ_KEYS if k not in data]
    if missing:
      raise ValueError(f"{spec} lacks the arrays {missing}; it needs {list(_NPZ_KEYS)}")
    arrays = {k: data[k] for k in _NPZ_KEYS}
  return ((arrays["x_train"].astype(np.float32), arrays["y_train"]),
          (arrays["x_test"].astype(np.float32), arrays["y_test"]))


def normalize(images):
  """Maps uint8 images (N, H, W) to float32 in [0, 1] with a channel axis: (N, H, W, 1)."""
  return (np.asarray(images, np.float32) / 255.0)[..., np.newaxis]


def to_dataset(images, labels, batch_size=128, shuffle=False, seed=None):
  """A batched ``tf.data.Dataset`` of normalized images and labels.

  Args:
    images: uint8 array (N, H, W).
    labels: int array (N,).
    batch_size: examples per batch.
    shuffle: reshuffle every epoch (training) or keep the order (evaluation).
    seed: shuffle seed, for reproducible runs.

  Returns:
    A dataset of ``(float32 (B, H, W, 1), int64 (B,))`` batches, prefetched.
  """
  import tensorflow as tf  # Deferred: the IDX loader itself must not pay for importing TF.

  ds = tf.data.Dataset.from_tensor_slices((normalize(images), np.asarray(labels, np.int64)))
  if shuffle:
    ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
  return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
