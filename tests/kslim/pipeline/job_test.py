"""Compression jobs end to end on tiny data: rows and files, resume after a kill between and
inside stages, idempotent re-runs, and changed strategies redone from where they change."""

import json
import os

from absl.testing import absltest

from kslim import pipeline
from kslim._keras import keras
from tests import fake_fashion_mnist
from tflite_tools import analyze


class _Recorder(keras.callbacks.Callback):
  """Records the index of every epoch any training in the job begins, and the names of the
  metrics each epoch ends with."""

  def __init__(self):
    super().__init__()
    self.epochs, self.metrics = [], []

  def on_epoch_begin(self, epoch, logs=None):
    self.epochs.append(epoch)

  def on_epoch_end(self, epoch, logs=None):
    self.metrics.append(set(logs))


class _KillAfter(keras.callbacks.Callback):
  """Raises at the end of the `n`-th epoch of the job (after BackupAndRestore has saved)."""

  def __init__(self, n):
    super().__init__()
    self.n, self.seen = n, 0

  def on_epoch_end(self, epoch, logs=None):
    self.seen += 1
    if self.seen == self.n:
      raise KeyboardInterrupt("killed")


class JobTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data = fake_fashion_mnist.write_npz(absltest.get_default_test_tmpdir(), n_train=192,
                                            n_test=64)

  def _config(self, qat_epochs=1):
    return {"model": {"reference": "reference_cnn", "train_epochs": 1}, "dataset": self.data,
            "training": {"batch_size": 64},
            "strategies": [{"prune": {"ratio": 0.5, "fine_tune_epochs": 2,
                                      "reconstruction_images": 64,
                                      "distill": {"losses": ["soft_label"]}}},
                           {"quantize": {"epochs": qat_epochs}},
                           {"export": {"modes": ["int8"]}},
                           {"benchmark": {"threads": [1], "runs": 3}}]}

  def test_pipeline_resumes_and_reruns_only_what_changed(self):
    workdir = self.create_tempdir().full_path
    stages = os.path.join(workdir, "stages")
    # Killed after the baseline's epoch and the first of the prune stage's two epochs.
    with self.assertRaises(KeyboardInterrupt):
      pipeline.run(self._config(), workdir, callbacks=[_KillAfter(2)])
    self.assertTrue(os.path.exists(os.path.join(stages, "00_baseline", "stage.json")))
    self.assertFalse(os.path.exists(os.path.join(stages, "01_prune", "stage.json")))

    recorder = _Recorder()
    report = pipeline.run(self._config(), workdir, callbacks=[recorder])
    # The baseline is reused; pruning resumes at its second epoch (index 1); QAT runs once.
    self.assertEqual(recorder.epochs, [1, 0])
    rows = report["rows"]
    self.assertEqual([r["stage"] for r in rows], ["00_baseline", "01_prune", "02_quantize",
                                                  "03_export:model_int8"])
    self.assertLess(rows[1]["params"], rows[0]["params"])
    self.assertEqual(rows[1]["macs"], rows[2]["macs"])
    for row in rows:
      self.assertTrue(os.path.exists(row["tflite_file"]), row["stage"])
      self.assertBetween(row["tflite_accuracy"], 0.0, 1.0)
      self.assertEqual(row["accuracy"], row["tflite_accuracy"])
      self.assertGreater(row["latency_ms"]["1"], 0.0)
    self.assertLess(rows[2]["tflite_kb"], rows[1]["tflite_kb"] / 2)  # int8 vs float32
    self.assertAlmostEqual(rows[2]["smaller"], rows[0]["tflite_kb"] / rows[2]["tflite_kb"])
    self.assertAlmostEqual(rows[1]["delta_points"],
                           100 * (rows[1]["accuracy"] - rows[0]["accuracy"]))
    for name in ("report.json", "report.md", "accuracy.png"):
      self.assertTrue(os.path.exists(os.path.join(workdir, name)), name)
    markdown = open(os.path.join(workdir, "report.md")).read()
    self.assertIn("| 02_quantize |", markdown)
    self.assertEqual(json.load(open(os.path.join(workdir, "report.json")))["rows"], rows)
    for stage in ("00_baseline", "01_prune", "02_quantize"):
      self.assertTrue(os.path.exists(os.path.join(stages, stage, "model.keras")), stage)
      self.assertFalse(os.path.exists(os.path.join(stages, stage, "backup")), stage)

    recorder = _Recorder()
    again = pipeline.run(self._config(), workdir, callbacks=[recorder])
    self.assertEqual(recorder.epochs, [])  # nothing redone
    self.assertEqual(again["rows"], rows)

    recorder = _Recorder()
    changed = pipeline.run(self._config(qat_epochs=2), workdir, callbacks=[recorder])
    self.assertEqual(recorder.epochs, [0, 1])  # only QAT (and what follows) redone
    def measured(row):  # latencies are measured again by the re-run benchmark strategy
      return {k: v for k, v in row.items() if k not in ("latency_ms", "speedup")}
    self.assertEqual([measured(r) for r in changed["rows"][:2]], [measured(r) for r in rows[:2]])
    self.assertNotEqual(measured(changed["rows"][2]), measured(rows[2]))

  def test_ptq_only_job_from_a_model_file(self):
    workdir = self.create_tempdir().full_path
    model_path = os.path.join(workdir, "model.keras")
    keras.utils.set_random_seed(0)
    from kslim import models  # pylint: disable=g-import-not-at-top
    models.reference_cnn().save(model_path)
    report = pipeline.run({"model": {"file": model_path}, "dataset": self.data,
                           "strategies": [{"ptq": {"mode": "int8", "num_samples": 64}},
                                          {"ptq": {"mode": "float16"}}]},
                          os.path.join(workdir, "job"))
    rows = report["rows"]
    self.assertEqual([r["stage"] for r in rows], ["00_baseline", "01_ptq", "02_ptq"])
    self.assertEqual(rows[1]["params"], rows[0]["params"])  # PTQ keeps the network
    self.assertLess(rows[1]["tflite_kb"], rows[2]["tflite_kb"])  # int8 < float16
    self.assertLess(rows[2]["tflite_kb"], rows[0]["tflite_kb"])  # float16 < float32
    self.assertEqual(rows[0]["latency_ms"], {})  # no benchmark strategy: not timed

  def test_qat_job_on_the_reference_lstm_exports_the_int8_lstm(self):
    workdir = self.create_tempdir().full_path
    report = pipeline.run({"model": {"reference": "row_lstm", "train_epochs": 1},
                           "dataset": self.data, "training": {"batch_size": 64},
                           "strategies": [{"quantize": {"epochs": 1}}]}, workdir)
    rows = report["rows"]
    self.assertEqual([r["stage"] for r in rows], ["00_baseline", "01_quantize"])
    self.assertEqual(rows[1]["macs"], rows[0]["macs"])
    self.assertEqual(rows[0]["macs"], 28 * 4 * 64 * (28 + 64) + 64 * 10)  # LSTM + Dense
    ops = analyze.analyze(rows[1]["tflite_file"]).ops_by_dtype
    self.assertIn("UNIDIRECTIONAL_SEQUENCE_LSTM", ops["int8"])
    self.assertLess(rows[1]["tflite_kb"], 0.4 * rows[0]["tflite_kb"])

  def test_quantization_aware_training_distills_from_the_baseline(self):
    workdir = self.create_tempdir().full_path
    recorder = _Recorder()
    report = pipeline.run({"model": {"reference": "reference_cnn", "train_epochs": 1},
                           "dataset": self.data, "training": {"batch_size": 64},
                           "strategies": [{"quantize": {"epochs": 1, "distill": {
                               "losses": ["soft_label"], "hard_label_weight": 0.5}}}]},
                          workdir, callbacks=[recorder])
    baseline_epoch, qat_epoch = recorder.metrics
    self.assertNotIn("soft_label_loss", baseline_epoch)
    self.assertIn("soft_label_loss", qat_epoch)  # the QAT epoch trained through the Distiller
    self.assertIn("hard_label_loss", qat_epoch)
    rows = report["rows"]
    self.assertEqual([r["stage"] for r in rows], ["00_baseline", "01_quantize"])
    self.assertIn("CONV_2D", analyze.analyze(rows[1]["tflite_file"]).ops_by_dtype["int8"])
    self.assertLess(rows[1]["tflite_kb"], 0.4 * rows[0]["tflite_kb"])

  def test_invalid_config_fails_before_any_work(self):
    workdir = self.create_tempdir().full_path
    config = self._config()
    config["strategies"][0]["prune"]["criterion"] = "l3"
    with self.assertRaisesRegex(pipeline.ConfigError, r"strategies\[0\].prune.criterion"):
      pipeline.run(config, workdir)
    self.assertEqual(os.listdir(workdir), [])


if __name__ == "__main__":
  absltest.main()
