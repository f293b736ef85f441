"""What every kslim binary shares."""

import logging
import os

import tensorflow as tf

__all__ = ["quiet_tensorflow"]

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
