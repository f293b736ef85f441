"""What every kslim binary shares."""

import logging

__all__ = ["quiet_tensorflow"]


def quiet_tensorflow():
  """Keeps TensorFlow's Python INFO chatter (SavedModel, converter) out of absl's log.

  Only binaries call this: as a library, kslim leaves logging configuration to the user.
  """
  logging.getLogger("tensorflow").setLevel(logging.WARNING)
