"""Tests for what kslim's binaries share."""

import logging

from absl.testing import absltest

from kslim.cli import _common


def _record(pathname, level):
  return logging.LogRecord("absl", level, pathname, 1, "msg", None, None)


class QuietTensorflowTest(absltest.TestCase):

  def test_filter_drops_only_tensorflow_info(self):
    f = _common._DropTensorFlowInfo()  # pylint: disable=protected-access
    tf_file = "/venv/lib/python3.11/site-packages/tensorflow/python/saved_model/save.py"
    keras_file = "/venv/lib/python3.11/site-packages/tf_keras/src/engine/training.py"
    self.assertFalse(f.filter(_record(tf_file, logging.INFO)))
    self.assertFalse(f.filter(_record(keras_file, logging.INFO)))
    self.assertTrue(f.filter(_record(tf_file, logging.WARNING)))
    self.assertTrue(f.filter(_record("/repo/kslim/pipeline/stages.py", logging.INFO)))


if __name__ == "__main__":
  absltest.main()
