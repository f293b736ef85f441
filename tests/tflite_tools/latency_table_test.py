"""Tests for tflite_tools.latency_table (tflite-latency-table)."""

import base64
import json
import os
from unittest import mock

import numpy as np
from absl.testing import absltest

from kslim._keras import keras
from tests.binaries import run_binary
from tests.tflite_tools import tiny_models
from tflite_tools import harness
from tflite_tools import latency_table as lt
from tflite_tools import targets


def setUpModule():
  global _MODEL, _FLOAT, _INT8  # pylint: disable=global-statement
  _MODEL, _FLOAT, _INT8 = tiny_models.write_pair(absltest.get_default_test_tmpdir())


class SignatureTest(absltest.TestCase):

  def test_signatures_and_work_of_the_tiny_model(self):
    rows = lt.op_signatures(_FLOAT)
    self.assertEqual([name for _, name, _, _ in rows],
                     ["CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "RESHAPE",
                      "FULLY_CONNECTED"])
    conv, depthwise, pool, _, dense = rows
    self.assertTrue(conv[0].startswith("CONV_2D(float32[1, 8, 8, 1];float32[4, 3, 3, 1];"
                                       "float32[4])->(float32[1, 6, 6, 4]){"), conv[0])
    self.assertIn("strideH=1", conv[0])
    # MACs: 6*6*4 outputs x 3*3*1 taps; depthwise 6*6*4 x 3*3; dense 3 x 36; pool: elements.
    self.assertEqual([conv[3], depthwise[3], dense[3], pool[3]], [1296, 1296, 108, 144])
    self.assertEqual({dtype for _, _, dtype, _ in lt.op_signatures(_INT8)}, {"int8"})

  def test_single_op_models_keep_weights(self):
    models = lt.single_op_models(_FLOAT)
    self.assertLen(models, 5)
    conv = models[0]
    self.assertEqual((conv.op, conv.dtype, conv.work), ("CONV_2D", "float32", 1296))
    x = tiny_models.CALIBRATION[:4]
    (got,) = harness.predict(conv.content, [x])
    want = keras.Model(_MODEL.inputs, _MODEL.layers[0].output).predict(x, verbose=0)
    np.testing.assert_allclose(got, want, atol=1e-5)
    # Every single-op model loads and holds exactly one op, of the signature it claims.
    for model in models:
      (row,) = lt.op_signatures(model.content)
      self.assertEqual(row[0], model.signature)

  def test_weight_bytes_count_every_constant_once(self):
    # Float32 parameters plus the int32[2] shape the Flatten's RESHAPE reads.
    self.assertEqual(lt.weight_bytes(_FLOAT), 4 * _MODEL.count_params() + 8)
    conv = lt.single_op_models(_FLOAT)[0]
    self.assertEqual(lt.weight_bytes(conv.content), 4 * _MODEL.layers[0].count_params())

  def test_copies_share_weights_and_compute_the_same(self):
    conv = lt.single_op_models(_FLOAT)[0]
    copies = lt._copies(conv.content, 3)  # pylint: disable=protected-access
    self.assertEqual([row[0] for row in lt.op_signatures(copies)], [conv.signature] * 3)
    self.assertEqual(lt.weight_bytes(copies), lt.weight_bytes(conv.content))
    self.assertLess(len(copies), len(conv.content) + 1024)  # weights stored once
    x = tiny_models.CALIBRATION[:2]
    (want,) = harness.predict(conv.content, [x])
    outputs = harness.predict(copies, [x])
    self.assertLen(outputs, 3)
    for got in outputs:
      np.testing.assert_array_equal(got, want)

  def test_in_context_models_wake_the_pool_and_write_each_input_with_an_add(self):
    for path in (_FLOAT, _INT8):
      for op in lt.single_op_models(path):
        writers, both = lt._in_context(op.content)  # pylint: disable=protected-access
        self.assertEqual([row[1] for row in lt.op_signatures(writers)], ["ADD", "ADD"])
        self.assertEqual([row[1] for row in lt.op_signatures(both)], ["ADD", "ADD", op.op])
        self.assertEqual(lt.op_signatures(both)[2][0], op.signature)
    x = tiny_models.CALIBRATION[:1] / 2
    size = lt._WAKER_ELEMENTS  # pylint: disable=protected-access
    wake = np.random.default_rng(0).random((1, size), dtype=np.float32)
    conv = lt.single_op_models(_INT8)[0]
    writers, _ = lt._in_context(conv.content)  # pylint: disable=protected-access
    written, woken = harness.predict(writers, [x, wake])  # int8: one quantization step of 2x
    self.assertLess(np.abs(written - 2 * x).max(), 2 * 1.01 * np.abs(x).max() / 127)
    np.testing.assert_array_equal(woken, 2 * wake)
    conv = lt.single_op_models(_FLOAT)[0]
    writers, both = lt._in_context(conv.content)  # pylint: disable=protected-access
    (want,) = harness.predict(conv.content, [2 * x])
    got, woken = harness.predict(both, [x, wake])
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_array_equal(woken, 2 * wake)

  def test_probe_op_is_a_1x1_convolution_with_its_weights(self):
    probe = lt._probe_op(channels=8, size=2)  # pylint: disable=protected-access
    self.assertEqual(lt.weight_bytes(probe), 4 * (8 * 8 + 8))
    weights = np.random.default_rng(0).normal(0, 0.05, (8, 8)).astype(np.float32)
    x = np.random.default_rng(1).random((1, 2, 2, 8), dtype=np.float32)
    (got,) = harness.predict(probe, [x])
    np.testing.assert_allclose(got, x @ weights.T, atol=1e-6)

  def test_grid(self):
    configs = lt.grid(ops=("conv2d", "dense", "max_pool"), sizes=(8,), channels=(8, 16),
                      kernels=(1, 3), strides=(1, 2), dtypes=("float32",))
    conv = [c for c in configs if c.op == "conv2d"]
    # 2 input widths x 2 kernels x 2 strides, filters = c or 2c (16 -> 16 only).
    self.assertLen(conv, 12)
    self.assertLen([c for c in configs if c.op == "dense"], 4)
    self.assertEqual({(c.kernel, c.stride) for c in configs if c.op == "max_pool"}, {(3, 1),
                                                                                    (3, 2)})


class TableTest(absltest.TestCase):

  def test_measure_estimate_and_round_trip(self):
    table = lt.LatencyTable.measure(lt.single_op_models(_FLOAT), runs=5, warmup=1, min_ms=1,
                                    probe_mib=(1, 4))
    self.assertLen(table.entries, 5)
    self.assertIn(table.cache_curve, ([], [[1.0, 0.0], [4.0, 1.0]]))
    # The tiny model's ops have under 64 KiB of weights each: none is timed cold.
    self.assertFalse([e for e in table.entries.values() if "cold_ms" in e])
    self.assertGreater(table.overhead_ms, 0)
    self.assertTrue(all(e["ms"] >= 0 and e["alone_ms"] >= 0 for e in table.entries.values()))
    estimate = table.estimate(_FLOAT)
    self.assertEqual((estimate.ops, estimate.exact, estimate.interpolated, estimate.missing),
                     (5, 5, 0, ()))
    self.assertAlmostEqual(estimate.total_ms, table.overhead_ms +
                           sum(e["ms"] for e in table.entries.values()))
    path = os.path.join(self.create_tempdir().full_path, "t.json")
    table.save(path)
    loaded = lt.LatencyTable.load(path)
    self.assertEqual((loaded.entries, loaded.overhead_ms, loaded.threads, loaded.cache_curve),
                     (table.entries, table.overhead_ms, 1, table.cache_curve))
    # The int8 model's ops are not in a float table: nothing to interpolate from.
    self.assertEqual(table.estimate(_INT8).missing,
                     ("CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "RESHAPE",
                      "FULLY_CONNECTED"))

  def test_models_are_timed_a_chunk_per_process_in_order(self):
    requests = []

    class Echo(targets.Target):
      """Answers each model with its content's length as its time; "bad" fails."""

      def run(self, request):
        requests.append(len(request["models"]))
        contents = [base64.b64decode(m["content"]) for m in request["models"]]
        return {"machine": "echo", "results": [
            {"error": "cannot run"} if c == b"bad" else {"median_ms": float(len(c))}
            for c in contents]}

    models = [(f"op {k}", content) for k, content in enumerate([b"a", b"bb", b"bad", b"dddd",
                                                                b"eeeee"])]
    with mock.patch.object(lt, "_CHUNK", 2), self.assertLogs(level="WARNING") as logs:
      machine, times = lt._time(models, Echo(), 1, 5, 1, 1.0, "test")  # pylint: disable=protected-access
    self.assertEqual((machine, requests), ("echo", [2, 2, 1]))
    np.testing.assert_array_equal(times, [1.0, 2.0, np.nan, 4.0, 5.0])
    self.assertIn("cannot time op 2 (cannot run)", logs.output[0])

  def test_ops_with_large_weights_are_timed_cold(self):
    dense = tiny_models.float_bytes(keras.Sequential([
        keras.Input((128,)), keras.layers.Dense(128), keras.layers.Dense(16)]))
    table = lt.LatencyTable.measure(lt.single_op_models(dense), runs=3, warmup=1, min_ms=1,
                                    probe_mib=())
    # 128x128 float32 weights are 64 KiB: that op alone gets a cold time.
    self.assertEqual([e["work"] for e in table.entries.values() if "cold_ms" in e],
                     [128 * 128])
    self.assertEqual(table.cache_curve, [])
    warm = lt.LatencyTable.measure(lt.single_op_models(dense), runs=3, warmup=1, min_ms=1,
                                   probe_mib=(1, 4), cold=False)
    self.assertEqual(([e for e in warm.entries.values() if "cold_ms" in e], warm.cache_curve),
                     ([], []))

  def test_cache_curve_and_streamed_share(self):
    curve = lt._cache_curve((1, 4, 16), [0.1, 0.3, 0.2])  # pylint: disable=protected-access
    self.assertEqual(curve, [[1.0, 0.0], [4.0, 1.0], [16.0, 1.0]])  # held non-decreasing
    self.assertEqual(lt._cache_curve((1, 4), [0.3, 0.3]), [])  # pylint: disable=protected-access
    table = lt.LatencyTable({}, 0.0, cache_curve=[[1, 0.0], [4, 1.0]])
    self.assertAlmostEqual(table.streamed_share(2.0), 0.5)  # halfway in log footprint
    self.assertEqual((table.streamed_share(0.5), table.streamed_share(64)), (0.0, 1.0))
    self.assertEqual(lt.LatencyTable({}, 0.0).streamed_share(64), 0.0)

  def test_estimate_adds_the_streamed_share_of_cold_penalties(self):
    rows = lt.op_signatures(_FLOAT)
    entries = {signature: {"op": name, "dtype": dtype, "work": work, "ms": 0.1 * (i + 1)}
               for i, (signature, name, dtype, work) in enumerate(rows)}
    entries[rows[0][0]].update(cold_ms=0.1 + 0.4, alone_ms=0.05)  # penalty: cold - alone
    entries[rows[4][0]]["cold_ms"] = 0.5 + 0.2  # a table without alone_ms: cold - ms
    mib = lt.weight_bytes(_FLOAT) / 2**20
    table = lt.LatencyTable(entries, 0.01, cache_curve=[[mib / 4, 0.0], [mib * 4, 1.0]])
    estimate = table.estimate(_FLOAT)
    self.assertAlmostEqual(estimate.weights_mib, mib)
    self.assertAlmostEqual(estimate.streamed_ms, 0.5 * (0.45 + 0.2))
    self.assertAlmostEqual(estimate.total_ms, 0.01 + 0.1 + 0.2 + 0.3 + 0.4 + 0.5 + 0.325)

  def test_interpolation_scales_the_nearest_entry_by_work(self):
    conv_only = tiny_models.float_bytes(keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu")]))
    ((signature, *_),) = lt.op_signatures(conv_only)
    options = signature[signature.index("{"):]

    def entry(work, ms):
      return {"op": "CONV_2D", "dtype": "float32", "work": work, "ms": ms}

    table = lt.LatencyTable({
        f"CONV_2D(a;float32[8, 3, 3, 1];b)->(c){options}": entry(1000.0, 0.5),
        f"CONV_2D(a;float32[8, 3, 3, 1];b)->(c){options[:-1]},other}}": entry(1290.0, 9.0),
        f"CONV_2D(a;float32[8, 1, 1, 1];b)->(c){options}": entry(1296.0, 7.0),
    }, overhead_ms=0.01)
    estimate = table.estimate(conv_only)
    # Only the first has the same options and 3x3 window: scaled by 1296 / 1000 MACs.
    self.assertEqual((estimate.exact, estimate.interpolated), (0, 1))
    self.assertAlmostEqual(estimate.total_ms, 0.01 + 0.5 * 1296 / 1000)

  def test_merge_and_load_errors(self):
    a = lt.LatencyTable({}, 0.001, machine="x86_64", threads=1)
    with self.assertRaisesRegex(ValueError, "cannot merge a table of aarch64 at 1"):
      a.merge(lt.LatencyTable({}, 0.001, machine="aarch64", threads=1))
    bad = self.create_tempfile("bad.json", content=json.dumps({"entries": {}})).full_path
    with self.assertRaisesRegex(ValueError, "bad.json is not a latency table"):
      lt.LatencyTable.load(bad)

  def test_grid_models_are_single_ops(self):
    configs = [lt.LayerConfig("depthwise_conv2d", (8, 8, 4), 4, 3, 2, "int8"),
               lt.LayerConfig("dense", (16,), 8)]
    models = lt.grid_models(configs)
    self.assertEqual([(m.op, m.dtype) for m in models],
                     [("DEPTHWISE_CONV_2D", "int8"), ("FULLY_CONNECTED", "float32")])
    self.assertEqual(models[0].work, 4 * 4 * 4 * 9)  # 4x4x4 outputs (stride 2) x 3x3 taps


class BinaryTest(absltest.TestCase):

  def test_measure_then_estimate(self):
    table = os.path.join(self.create_tempdir().full_path, "table.json")
    proc = run_binary("tflite_tools.latency_table", f"--models={_FLOAT}", "--runs=5",
                      f"--output={table}")
    with open(table) as f:
      curve = json.load(f)["cache_curve"]
    if curve:  # empty only where the probe's time per MiB never rose
      self.assertEqual([mib for mib, _ in curve], [float(m) for m in lt.PROBE_MIB])
      self.assertEqual((curve[0][1], curve[-1][1]), (0.0, 1.0))
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    self.assertIn("wrote 5 entries", proc.stdout)
    proc = run_binary("tflite_tools.latency_table", f"--table={table}", f"--estimate={_FLOAT}")
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    self.assertRegex(proc.stdout, r"float.tflite: estimated \d+\.\d{3} ms on \S+ at 1 "
                     r"thread\(s\) \(5/5 ops exact, 0 interpolated\); 0\.000 ms of it for "
                     r"0\.0 MiB of weights read from memory")

  def test_flag_errors(self):
    proc = run_binary("tflite_tools.latency_table", f"--estimate={_FLOAT}")
    self.assertIn("--estimate needs --table", proc.stderr)
    proc = run_binary("tflite_tools.latency_table", "--output=t.json")
    self.assertIn("nothing to measure: pass --grid and/or --models", proc.stderr)


if __name__ == "__main__":
  absltest.main()
