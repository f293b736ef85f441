"""Tests for what kslim's binaries share."""

import logging

import numpy as np
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


class InputModelTest(absltest.TestCase):

  def test_a_reference_model_is_adapted_to_the_training_images_when_given(self):
    images = np.random.default_rng(0).random((32, 28, 28, 1), dtype=np.float32)
    adapted = _common.input_model("standardized_cnn", None, images).get_layer("standardize")
    np.testing.assert_allclose(adapted.mean.numpy(), images.mean(0, keepdims=True), atol=1e-5)
    untouched = _common.input_model("standardized_cnn", None).get_layer("standardize")
    self.assertFalse(untouched.is_adapted)


if __name__ == "__main__":
  absltest.main()
