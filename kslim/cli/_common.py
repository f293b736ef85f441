"""What every kslim binary shares."""

import logging
import os

import tensorflow as tf
from absl import app
from absl import flags

from kslim import datasets
from kslim import models
from kslim._keras import keras

__all__ = ["start", "quiet_tensorflow", "define_model_flags", "define_dataset_flag",
           "input_model", "load_model", "load_dataset"]

_TF_PACKAGES = tuple(os.sep + name + os.sep for name in ("tensorflow", "tf_keras"))


class _DropTensorFlowInfo(logging.Filter):
  """Drops records below WARNING that TensorFlow's own modules log through absl."""

  def filter(self, record):
    return record.levelno >= logging.WARNING or not any(
        p in record.pathname for p in _TF_PACKAGES)


def quiet_tensorflow():
  """Keeps TensorFlow's INFO chatter (SavedModel, converter) out of the binary's log.

  Only binaries call this: as a library, kslim leaves logging configuration to the user. TF
  logs both through its own logger and, in many modules, through absl's.
  """
  tf.get_logger().setLevel(logging.WARNING)
  logging.getLogger("absl").addFilter(_DropTensorFlowInfo())


def start(argv):
  """What every binary's `main` does first: refuse stray arguments, quiet TensorFlow."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  quiet_tensorflow()


def define_model_flags(what, verb):
  """Defines the mutually exclusive ``--model`` (a file) and ``--reference`` (a reference model).

  Args:
    what: what --model must hold, for its help (e.g. "The trained float tf_keras model").
    verb: what the binary does, for --reference's help (e.g. "Prune").

  Returns:
    A function that loads the chosen model (call it in ``main``), given the training images
    to adapt a reference model's input normalization to (optional).
  """
  model = flags.DEFINE_string("model", None, f"{what} (.keras, .h5 or SavedModel folder).")
  reference = flags.DEFINE_enum("reference", None, sorted(models.REFERENCE_MODELS),
                                f"{verb} an untrained reference model instead (for trials).")
  flags.mark_flags_as_mutual_exclusive(["model", "reference"], required=True)
  return lambda images=None: input_model(reference.value, model.value, images)


def define_dataset_flag():
  """Defines ``--dataset``; returns a function that loads it (see `load_dataset`)."""
  dataset = flags.DEFINE_string("dataset", "fashion_mnist", "'fashion_mnist' or a .npz file "
                                "with x_train, y_train, x_test, y_test.")
  return lambda: load_dataset(dataset.value)


def input_model(reference, path, images=None):
  """The untrained reference model named `reference` if given, else the one saved at `path`
  (the binaries' mutually exclusive ``--reference`` / ``--model`` flags). A reference model's
  input ``Normalization`` layers are adapted to `images` when given."""
  if not reference:
    return load_model(path, "model")
  model = models.get(reference)
  if images is not None:
    models.adapt_normalization(model, images)
  return model


def load_model(path, flag):
  """Loads a saved tf_keras model, or raises a UsageError naming `flag` and the file."""
  try:
    return keras.models.load_model(path, compile=False)
  except (OSError, ValueError) as e:
    raise app.UsageError(f"--{flag}: cannot load {path!r}: {e}") from e


def load_dataset(spec, flag="dataset"):
  """`kslim.datasets.load` of `spec`; a bad spec is a UsageError naming `flag`."""
  try:
    return datasets.load(spec)
  except ValueError as error:
    raise app.UsageError(f"--{flag}: {error}") from error
