"""Android devices over adb: TFLite's own `benchmark_model` binary, parsed into harness rows.

The user supplies the binary built for the device (``bazel build -c opt
--config=android_arm64 //tensorflow/lite/tools/benchmark:benchmark_model``, or the prebuilt
nightly). `Adb` pushes it and the models to the device, runs one benchmark per model, thread
count and XNNPACK setting, and parses the log into the same fields the local harness reports.

Example:
  >>> target = Adb("/path/to/benchmark_model", serial="emulator-5554")
  >>> benchmark_lib.benchmark(["model.tflite"], threads=(1, 4), target=target)
"""

import base64
import pathlib
import re
import shlex
import subprocess
import tempfile

from tflite_tools.targets import Target, TargetError

__all__ = ["Adb", "parse_benchmark_model"]

_NUMBER = r"([0-9.]+(?:e[+-]?[0-9]+)?)"
# The steady-state line: "count=50 first=.. curr=.. min=.. max=.. avg=.. std=.." and, in
# newer releases, "p5=.. median=.. p95=..". The warm-up line before it has no min=.
_STATS = re.compile(r"count=(\d+) first=\S+ curr=\S+ min=" + _NUMBER + r" max=\S+ avg=" +
                    _NUMBER + r" std=" + _NUMBER + r"(?: p5=\S+ median=" + _NUMBER + r")?")
_SUMMARY = re.compile(r"Inference timings in us: Init: " + _NUMBER + r", First inference: " +
                      _NUMBER)
# Peak memory, most specific first: periodic monitoring (newest), then the two end-of-run forms.
_MEMORY = (re.compile(r"Overall peak memory footprint \(MB\) via periodic monitoring: " +
                      _NUMBER),
           re.compile(r"Peak memory footprint \(MB\): init=\S+ overall=" + _NUMBER),
           re.compile(r"Memory footprint delta from the start of the tool \(MB\): init=\S+ "
                      r"overall=" + _NUMBER))


def parse_benchmark_model(log):
  """The timings of one `benchmark_model` run, from its log (stdout, or logcat lines).

  Returns:
    ``{"init_ms", "min_ms", "median_ms", "p90_ms", "mean_ms", "std_ms", "runs",
    "peak_memory_mb"}``; ``median_ms`` is None for releases that print no percentiles, and
    ``p90_ms`` is always None (benchmark_model reports p5/median/p95 only).

  Raises:
    ValueError: the log has no steady-state statistics (the run failed; the message quotes
      the log's last lines).
  """
  stats = _STATS.findall(log)
  summary = _SUMMARY.search(log)
  if not stats or summary is None:
    tail = "\n".join(log.strip().splitlines()[-5:])
    raise ValueError(f"no benchmark_model statistics in its output; it ended with:\n{tail}")
  count, minimum, mean, std, median = stats[-1]
  memory = next((float(m.group(1)) for m in (p.search(log) for p in _MEMORY) if m), None)
  return {"init_ms": float(summary.group(1)) / 1e3, "min_ms": float(minimum) / 1e3,
          "median_ms": float(median) / 1e3 if median else None, "p90_ms": None,
          "mean_ms": float(mean) / 1e3, "std_ms": float(std) / 1e3, "runs": int(count),
          "peak_memory_mb": memory}


class Adb(Target):
  """An Android device running TFLite's `benchmark_model` over adb.

  Args:
    binary: path of the device's `benchmark_model` on this machine.
    serial: the device serial (``adb -s``); None for the only device.
    adb: the adb executable.
    device_dir: where model and binary go on the device.
  """

  def __init__(self, binary, serial=None, adb="adb", device_dir="/data/local/tmp/kslim"):
    self.binary = pathlib.Path(binary)
    if not self.binary.is_file():
      raise TargetError(f"benchmark_model binary {self.binary} not found (--benchmark_binary)")
    self.adb = [adb] + (["-s", serial] if serial else [])
    self.device_dir = device_dir
    self.name = f"adb:{serial}" if serial else "adb"

  def _adb(self, *args):
    try:
      done = subprocess.run(self.adb + list(args), capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
      raise TargetError(f"cannot run {self.adb[0]!r}: {e}") from e
    if done.returncode != 0:
      raise TargetError(f"`{' '.join(self.adb + list(args[:2]))}` failed (exit "
                        f"{done.returncode}): {(done.stderr or done.stdout).strip()[-1000:]}")
    return done.stdout + done.stderr

  def run(self, request):
    if request.get("inputs") or request.get("predict"):
      raise TargetError("the adb target runs benchmark_model on its generated inputs; it takes "
                        "no --inputs and cannot return outputs for an agreement check")
    binary = f"{self.device_dir}/benchmark_model"
    self._adb("shell", f"mkdir -p {shlex.quote(self.device_dir)}")
    self._adb("push", str(self.binary), binary)
    self._adb("shell", f"chmod 755 {shlex.quote(binary)}")
    results, min_secs = [], request.get("min_ms", 0) / 1000
    with tempfile.TemporaryDirectory() as local:
      for model in request["models"]:
        name = pathlib.PurePath(model["name"]).name
        path = pathlib.Path(local) / name
        path.write_bytes(base64.b64decode(model["content"]))
        remote = f"{self.device_dir}/{name}"
        self._adb("push", str(path), remote)
        for threads in request.get("threads", [1]):
          for use_xnnpack in request.get("xnnpack", [True]):
            command = [binary, f"--graph={remote}", f"--num_threads={threads}",
                       f"--use_xnnpack={str(use_xnnpack).lower()}",
                       f"--warmup_runs={request.get('warmup', 20)}",
                       f"--warmup_min_secs={min_secs}",
                       f"--num_runs={request.get('runs', 100)}", f"--min_secs={min_secs}",
                       "--report_peak_memory_footprint=true"]
            log = self._adb("shell", " ".join(shlex.quote(c) for c in command))
            try:
              stats = parse_benchmark_model(log)
            except ValueError as e:
              raise TargetError(f"{self.name}: {name} at {threads} thread(s): {e}") from e
            results.append({"model": model["name"], "threads": threads, "xnnpack": use_xnnpack,
                            **stats})
    return {"machine": self._adb("shell", "uname -m").strip(), "python": None,
            "litert": "benchmark_model", "results": results, "outputs": {}}
