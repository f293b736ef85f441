"""Tests for the demo pipeline on a tiny budget of synthetic IDX data."""

import json
import os
import pathlib
from unittest import mock

import numpy as np
from absl.testing import absltest

from kslim import pipeline
from kslim._keras import keras
from tests import fake_fashion_mnist

_SETTINGS = pipeline.Settings(epochs=3, batch_size=32, train_examples=192, test_examples=96,
                              threads=(1,), latency_runs=5)
_DEMO = ["baseline", "export_float32", "evaluate"]


class PipelineTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data_dir = pathlib.Path(absltest.get_default_test_tmpdir()) / "pipeline_data"
    fake_fashion_mnist.write_dataset(cls.data_dir, n_train=256, n_test=128)
    cls.env = mock.patch.dict(os.environ, {"KSLIM_DATA_DIR": str(cls.data_dir)})
    cls.env.start()

  @classmethod
  def tearDownClass(cls):
    cls.env.stop()
    super().tearDownClass()

  def test_demo_stages_then_cached_rerun(self):
    workdir = pathlib.Path(self.create_tempdir().full_path)
    first = pipeline.run_stages(_DEMO, _SETTINGS, workdir)
    (row,) = first.results
    self.assertEqual(row.stage, "reference_cnn_float32")
    self.assertEqual(row.params, 70746)
    self.assertEqual(row.macs, 5532544)
    # The synthetic classes are easy: training loss falls every epoch and training accuracy
    # (batch statistics) beats chance (10%) by far; the 18 steps are too few for BN's moving
    # averages, so the evaluated accuracy is only checked against the TFLite file.
    loss = first.history["baseline"]["loss"]
    self.assertLen(loss, 3)
    self.assertTrue(loss[0] > loss[1] > loss[2], loss)
    self.assertGreater(first.history["baseline"]["accuracy"][-1], 0.5)
    # A float32 TFLite file computes the same function as the Keras model.
    self.assertAlmostEqual(row.tflite_accuracy, row.keras_accuracy, delta=1 / 96)
    self.assertEqual(row.tflite_kb, (workdir / "reference_cnn_float32.tflite").stat().st_size
                     / 1024)
    self.assertGreater(row.latency_ms[1], 0)
    saved = json.loads((workdir / "results.json").read_text())
    self.assertEqual(saved["results"][0]["params"], 70746)
    self.assertEqual(saved["settings"]["train_examples"], 192)
    self.assertEqual(saved["history"]["baseline"]["loss"], loss)

    # Same settings again: the cached baseline is loaded, not retrained.
    with mock.patch.object(keras.Model, "fit", side_effect=AssertionError("retrained")):
      second = pipeline.run_stages(_DEMO, _SETTINGS, workdir)
    for a, b in zip(first.model.get_weights(), second.model.get_weights()):
      np.testing.assert_array_equal(a, b)
    self.assertEqual(second.results[0].keras_accuracy, row.keras_accuracy)
    self.assertEqual(second.history, first.history)

  def test_qat_then_int8_export(self):
    workdir = pathlib.Path(self.create_tempdir().full_path)
    ctx = pipeline.run_stages(_DEMO + ["qat", "export_int8", "evaluate"], _SETTINGS, workdir)
    float_row, int8_row = ctx.results
    self.assertEqual(int8_row.stage, "reference_cnn_int8")
    self.assertLen(ctx.history["qat"]["loss"], 1)
    # The int8 file is about 4x smaller and computes what the fake-quant Keras model computes.
    self.assertLess(int8_row.tflite_kb, 0.4 * float_row.tflite_kb)
    self.assertEqual(int8_row.macs, float_row.macs)
    self.assertAlmostEqual(int8_row.tflite_accuracy, int8_row.keras_accuracy, delta=2 / 96)

  def test_table_shows_every_column(self):
    result = pipeline.StageResult("m_float32", 0.9, 0.875, 1234, 56789, 12.5, {1: 0.25, 4: 0.1})
    table = pipeline.format_table([result])
    self.assertIn("ms @1 thr", table)
    self.assertRegex(table, r"m_float32\s+90\.00%\s+87\.50%\s+1,234\s+56,789\s+12\.5\s+0\.250"
                     r"\s+0\.100")

  def test_unknown_stage_is_refused_before_any_work(self):
    workdir = pathlib.Path(self.create_tempdir().full_path)
    with self.assertRaisesRegex(ValueError, r"unknown stage\(s\) \['prnue'\]"):
      pipeline.run_stages(["baseline", "prnue"], _SETTINGS, workdir)
    self.assertFalse((workdir / "cache").exists())

  def test_stage_needing_a_model_says_which(self):
    with self.assertRaisesRegex(ValueError, r"stage 'evaluate' needs a model"):
      pipeline.run_stages(["evaluate"], _SETTINGS, self.create_tempdir().full_path)

  def test_stage_names_are_unique(self):
    with self.assertRaisesRegex(ValueError, r"stage 'baseline' is already registered"):
      pipeline.register_stage("baseline")(lambda ctx: None)


if __name__ == "__main__":
  absltest.main()
