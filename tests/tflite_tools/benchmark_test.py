"""Tests for tflite_tools.benchmark_lib, .targets, .adb and the tflite-benchmark binary."""

import json
import os
import pathlib
import stat
import sys

import numpy as np
from absl.testing import absltest

from tests.binaries import run_binary
from tests.tflite_tools import tiny_models
from tflite_tools import adb, benchmark_lib, harness, targets

_TESTDATA = pathlib.Path(__file__).parent / "testdata"


def setUpModule():
  global _DIR, _MODEL, _FLOAT, _INT8  # pylint: disable=global-statement
  _DIR = absltest.get_default_test_tmpdir()
  _MODEL, _FLOAT, _INT8 = tiny_models.write_pair(_DIR)


class BenchmarkTest(absltest.TestCase):

  def test_every_model_thread_count_and_xnnpack_setting(self):
    results = benchmark_lib.benchmark([_FLOAT, _INT8], threads=(1, 2), xnnpack=(True, False),
                                      warmup=2, runs=12, min_ms=0)
    self.assertEqual([(r.model, r.threads, r.xnnpack) for r in results],
                     [(m, t, x) for m in ("float.tflite", "int8.tflite") for t in (1, 2)
                      for x in (True, False)])
    for r in results:
      self.assertEqual(r.runs, 12)
      self.assertTrue(0 < r.min_ms <= r.median_ms <= r.p90_ms, r)
      self.assertGreater(r.init_ms, 0)
      self.assertEqual(r.size_bytes, os.path.getsize(r.path))
      self.assertEqual((r.target, r.real_timings), ("local", True))
      # A fresh process per setting: the model's own interpreter, arena and XNNPACK packing.
      self.assertGreater(r.peak_memory_mb, 0.0)

  def test_table_ratios_are_against_the_first_model(self):
    results = benchmark_lib.benchmark([_FLOAT, _INT8], threads=(1,), warmup=2, runs=10)
    table = benchmark_lib.format_table(results)
    lines = table.splitlines()
    self.assertEqual(len(lines), 4)
    self.assertEqual(lines[3], f"cpu: {results[0].cpu}")
    want_latency = results[1].median_ms / results[0].median_ms
    want_size = results[1].size_bytes / results[0].size_bytes
    self.assertEqual(lines[2].split()[-2:], [f"{want_latency:.2f}", f"{want_size:.2f}"])
    self.assertEqual(lines[1].split()[-2:], ["1.00", "1.00"])

  def test_min_ms_keeps_timing_past_the_run_count(self):
    (short,) = benchmark_lib.benchmark([_FLOAT], threads=(1,), warmup=1, runs=5, min_ms=0)
    (timed,) = benchmark_lib.benchmark([_FLOAT], threads=(1,), warmup=1, runs=5, min_ms=30)
    self.assertEqual(short.runs, 5)
    self.assertGreater(timed.runs, 5)  # a ~10 us model: thousands of runs in 30 ms
    self.assertGreaterEqual(timed.runs * timed.mean_ms, 30)
    stats = benchmark_lib.measure_latency(_FLOAT, warmup=1, runs=5, min_ms=30)
    self.assertGreaterEqual(stats.runs * stats.mean_ms, 30)

  def test_json_and_csv_name_models_by_file(self):
    results = benchmark_lib.benchmark([_FLOAT], threads=(1,), warmup=1, runs=5)
    out = self.create_tempdir().full_path
    benchmark_lib.write_json(results, os.path.join(out, "b.json"))
    benchmark_lib.write_csv(results, os.path.join(out, "b.csv"))
    data = json.load(open(os.path.join(out, "b.json")))
    self.assertEqual(data["results"][0], results[0].to_dict())
    csv_lines = open(os.path.join(out, "b.csv")).read().splitlines()
    self.assertEqual(csv_lines[0].split(",")[:3], ["model", "path", "size_bytes"])
    self.assertTrue(csv_lines[1].startswith("float.tflite,"))

  def test_same_file_names_are_told_apart_by_folder(self):
    self.assertEqual(benchmark_lib.model_names(["a/m.tflite", "b/m.tflite", "b/n.tflite"]),
                     ["a/m.tflite", "b/m.tflite", "n.tflite"])

  def test_inputs_from_arrays_and_clear_errors(self):
    good = [np.zeros((1, 8, 8, 1), np.float32)]
    self.assertLen(benchmark_lib.benchmark([_FLOAT], inputs=good, warmup=0, runs=2), 1)
    with self.assertRaisesRegex(targets.TargetError, r"input 'serving_default_input_1:0' "
                                r"expects examples of shape \(8, 8, 1\), got \(9, 9, 1\)|"
                                r"expects examples of shape \(8, 8, 1\), got \(9, 9, 1\)"):
      benchmark_lib.benchmark([_FLOAT], inputs=[np.zeros((1, 9, 9, 1), np.float32)], runs=1)
    with self.assertRaisesRegex(FileNotFoundError, "missing.tflite not found"):
      benchmark_lib.benchmark([os.path.join(_DIR, "missing.tflite")])
    corrupt = self.create_tempfile("corrupt.tflite", content="garbage").full_path
    with self.assertRaisesRegex(ValueError, "corrupt.tflite is not a TFLite model"):
      benchmark_lib.benchmark([corrupt])

  def test_measure_latency_in_process(self):
    stats = benchmark_lib.measure_latency(_INT8, threads=1, warmup=2, runs=15, min_ms=0)
    self.assertEqual((stats.runs, stats.model, stats.size_bytes),
                     (15, "int8.tflite", os.path.getsize(_INT8)))
    self.assertTrue(0 < stats.min_ms <= stats.median_ms <= stats.p90_ms)

  def test_cpu_names_the_int8_dot_product_features(self):
    x86 = self.create_tempfile(content=(
        "processor\t: 0\nmodel name\t: Xeon X\nflags\t\t: fpu avx2 avx512_vnni\n\n"
        "processor\t: 1\nmodel name\t: Xeon X\nflags\t\t: fpu avx2 avx512_vnni\n"))
    arm = self.create_tempfile(content="processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\n")
    old = self.create_tempfile(content="model name\t: Core 2\nflags\t\t: fpu sse4_1\n")
    self.assertEqual(harness.cpu_name(x86.full_path), "Xeon X (avx512_vnni)")
    self.assertEqual(harness.cpu_name(arm.full_path).split(" (")[1], "asimddp, i8mm)")
    self.assertEqual(harness.cpu_name(old.full_path), "Core 2 (no int8 dot product)")
    self.assertEqual(harness.cpu_name(self.create_tempdir().full_path + "/none"),
                     harness.platform.machine())
    (result,) = benchmark_lib.benchmark([_FLOAT], threads=(1,), warmup=1, runs=3)
    self.assertEqual(result.cpu, harness.cpu_name())
    self.assertIn(f"cpu: {result.cpu}", benchmark_lib.format_table([result]))

  def test_random_inputs_follow_the_signature(self):
    interpreter = harness.make_interpreter(open(_INT8, "rb").read())
    (array,) = harness.random_inputs(interpreter.get_input_details(), batch=3)
    self.assertEqual((array.shape, array.dtype), ((3, 8, 8, 1), np.int8))
    self.assertLess(array.min(), -64)  # spans the int8 range
    self.assertGreater(array.max(), 64)


class RemoteTest(absltest.TestCase):
  """The --remote path, through a local shell standing in for ``ssh board``."""

  def test_remote_through_a_shell_matches_local(self):
    remote = targets.Remote("sh -c", python=sys.executable)
    results = benchmark_lib.benchmark([_INT8], threads=(1, 2), warmup=1, runs=5, target=remote)
    self.assertEqual([(r.target, r.threads, r.machine) for r in results],
                     [("sh -c", 1, os.uname().machine), ("sh -c", 2, os.uname().machine)])
    rows = benchmark_lib.agreement([_FLOAT, _INT8], remote, examples=16)
    for row in rows:
      self.assertEqual((row["max_abs_diff"], row["top1_agreement"], row["examples"]),
                       (0.0, 1.0, 16))

  def test_a_failing_remote_says_why(self):
    remote = targets.Remote("sh -c", python="/nonexistent/python3")
    with self.assertRaisesRegex(targets.TargetError, r"target 'sh -c' failed \(exit 127\)"):
      benchmark_lib.benchmark([_FLOAT], runs=1, target=remote)


class EmulatedAarch64Test(absltest.TestCase):
  """ARM kernels on every CI run: scripts/aarch64_env.sh builds the emulated Python."""

  def test_outputs_agree_with_x86(self):
    target = targets.EmulatedAarch64()
    results = benchmark_lib.benchmark([_FLOAT, _INT8], warmup=1, runs=3, target=target)
    self.assertEqual({(r.machine, r.real_timings) for r in results}, {("aarch64", False)})
    self.assertIn("not ARM latency", benchmark_lib.format_table(results))
    x = [tiny_models.CALIBRATION]
    float_row, int8_row = benchmark_lib.agreement([_FLOAT, _INT8], target, inputs=x)
    self.assertEqual((float_row["target_machine"], float_row["reference_machine"]),
                     ("aarch64", os.uname().machine))
    self.assertLess(float_row["max_abs_diff"], 1e-4)  # float reassociation only
    self.assertEqual(float_row["top1_agreement"], 1.0)
    # int8: NEON and x86 integer kernels may differ by a rounding step at most.
    step = harness.make_interpreter(open(_INT8, "rb").read()).get_output_details()[0][
        "quantization"][0]
    self.assertLessEqual(int8_row["max_abs_diff"], step * 1.001)
    self.assertGreaterEqual(int8_row["top1_agreement"], 0.9)

  def test_missing_environment_says_how_to_build_it(self):
    with self.assertRaisesRegex(targets.TargetError, r"bash scripts/aarch64_env.sh"):
      targets.EmulatedAarch64(root=self.create_tempdir().full_path)


class AdbTest(absltest.TestCase):

  def test_parses_stdout_of_older_releases(self):
    got = adb.parse_benchmark_model((_TESTDATA / "benchmark_model_stdout.txt").read_text())
    self.assertEqual(got, {"init_ms": 41.112, "min_ms": 9.29, "median_ms": None,
                           "p90_ms": None, "mean_ms": 9.60218, "std_ms": 0.434, "runs": 50,
                           "peak_memory_mb": 13.1406})

  def test_parses_logcat_with_percentiles_and_periodic_memory(self):
    got = adb.parse_benchmark_model((_TESTDATA / "benchmark_model_logcat.txt").read_text())
    self.assertEqual(got, {"init_ms": 3.2, "min_ms": 0.388, "median_ms": 0.397, "p90_ms": None,
                           "mean_ms": 0.4027, "std_ms": 0.023, "runs": 100,
                           "peak_memory_mb": 7.85938})

  def test_a_failed_run_quotes_the_log(self):
    with self.assertRaisesRegex(ValueError, r"(?s)no benchmark_model statistics.*Failed to mmap"):
      adb.parse_benchmark_model((_TESTDATA / "benchmark_model_failed.txt").read_text())

  def test_push_run_and_parse_through_a_fake_adb(self):
    """A stand-in `adb` that maps /data/local/tmp into a folder and runs `shell` locally."""
    tmp = pathlib.Path(self.create_tempdir().full_path)
    device = tmp / "device"
    device.mkdir()
    fake_adb = tmp / "adb"
    fake_adb.write_text(f"""#!{sys.executable}
import shutil, subprocess, sys
args = sys.argv[1:]
if args[:1] == ["-s"]:
  args = args[2:]
def local(path):
  return path.replace("/data/local/tmp", {str(device)!r})
if args[0] == "push":
  shutil.copy(args[1], local(args[2]))
elif args[0] == "shell":
  sys.exit(subprocess.call(local(" ".join(args[1:])), shell=True))
""")
    binary = tmp / "benchmark_model"
    binary.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp}/calls.log\n"
                      f"cat {_TESTDATA / 'benchmark_model_logcat.txt'}\n")
    for path in (fake_adb, binary):
      path.chmod(path.stat().st_mode | stat.S_IEXEC)
    target = adb.Adb(binary, serial="emulator-5554", adb=str(fake_adb))
    results = benchmark_lib.benchmark([_FLOAT], threads=(1, 4), xnnpack=(True, False),
                                      warmup=3, runs=7, target=target, min_ms=250)
    self.assertLen(results, 4)
    self.assertEqual({(r.target, r.median_ms, r.peak_memory_mb) for r in results},
                     {("adb:emulator-5554", 0.397, 7.85938)})
    calls = (tmp / "calls.log").read_text().splitlines()
    self.assertEqual(calls[1].replace(str(device), "/data/local/tmp").split(), [
        "--graph=/data/local/tmp/kslim/float.tflite", "--num_threads=1", "--use_xnnpack=false",
        "--warmup_runs=3", "--warmup_min_secs=0.25", "--num_runs=7", "--min_secs=0.25",
        "--report_peak_memory_footprint=true"])
    self.assertTrue((device / "kslim" / "float.tflite").is_file())
    with self.assertRaisesRegex(targets.TargetError, "takes no --inputs"):
      benchmark_lib.benchmark([_FLOAT], inputs=[np.zeros((1, 8, 8, 1))], target=target)

  def test_missing_binary(self):
    with self.assertRaisesRegex(targets.TargetError, r"benchmark_model binary /nope not found"):
      adb.Adb("/nope")


class BinaryTest(absltest.TestCase):

  def test_table_and_json(self):
    out = os.path.join(self.create_tempdir().full_path, "bench.json")
    proc = run_binary("tflite_tools.benchmark", _FLOAT, _INT8, "--threads=1,2", "--runs=5",
                      "--warmup=1", f"--json={out}")
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    self.assertRegex(proc.stdout, r"int8\.tflite\s+local\s+2\s+on")
    data = json.load(open(out))
    self.assertEqual([(r["model"], r["threads"]) for r in data["results"]],
                     [("float.tflite", 1), ("float.tflite", 2), ("int8.tflite", 1),
                      ("int8.tflite", 2)])

  def test_flag_errors(self):
    proc = run_binary("tflite_tools.benchmark", _FLOAT, "--adb")
    self.assertIn("--adb needs --benchmark_binary", proc.stderr)
    proc = run_binary("tflite_tools.benchmark", _FLOAT, "--remote=ssh b",
                      "--arch=aarch64-emulated")
    self.assertIn("pick one target", proc.stderr)
    proc = run_binary("tflite_tools.benchmark", _FLOAT, "--threads=0")
    self.assertIn("--threads must be positive integers", proc.stderr)
    proc = run_binary("tflite_tools.benchmark", _FLOAT, "--xnnpack=maybe")
    self.assertIn("--xnnpack takes on and/or off", proc.stderr)
    proc = run_binary("tflite_tools.benchmark")
    self.assertIn("name one or more .tflite files", proc.stderr)
    proc = run_binary("tflite_tools.benchmark", "/no/such.tflite")
    self.assertIn("TFLite file /no/such.tflite not found", proc.stderr)
    proc = run_binary("tflite_tools.benchmark", _FLOAT, "--adb", "--benchmark_binary=/no/bm")
    self.assertIn("tflite-benchmark: benchmark_model binary /no/bm not found", proc.stderr)
    bad = os.path.join(self.create_tempdir().full_path, "x.npy")
    np.save(bad, np.zeros((1, 5, 5, 1), np.float32))
    proc = run_binary("tflite_tools.benchmark", _FLOAT, f"--inputs={bad}")
    self.assertIn("expects examples of shape (8, 8, 1), got (5, 5, 1)", proc.stderr)
    self.assertNotEqual(proc.returncode, 0)


if __name__ == "__main__":
  absltest.main()
