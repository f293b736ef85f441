"""tflite-benchmark: .tflite files side by side on this CPU, a board, an emulated aarch64 Python
or an Android device.

  python -m tflite_tools.benchmark float.tflite int8.tflite --threads=1,2,4 --json=bench.json
  python -m tflite_tools.benchmark model.tflite --remote="ssh board"
  python -m tflite_tools.benchmark model.tflite --arch=aarch64-emulated   # ARM kernels, x86 host
  python -m tflite_tools.benchmark model.tflite --adb --benchmark_binary=./benchmark_model

Prints a table with latency and size ratios against the first model; remote and emulated runs
also compare their outputs with this machine's (max |diff|, top-1 agreement).
"""

import numpy as np
from absl import app, flags

from tflite_tools import benchmark_lib, targets
from tflite_tools.adb import Adb
from tflite_tools.targets import Local

targets.define_flags()

_THREADS = flags.DEFINE_list("threads", ["1"], "Thread counts, e.g. 1,2,4.")
_XNNPACK = flags.DEFINE_list("xnnpack", ["on"], "XNNPACK settings to measure: on, off or on,off.")
_WARMUP = flags.DEFINE_integer("warmup", 20, "Untimed runs before timing.", lower_bound=0)
_RUNS = flags.DEFINE_integer("runs", 100, "Timed runs.", lower_bound=1)
_MIN_MS = flags.DEFINE_float("min_ms", benchmark_lib.MIN_MS, "Warm up, then time, for at least "
                             "this many ms as well as --warmup/--runs runs.", lower_bound=0)
_INPUTS = flags.DEFINE_list("inputs", None, "One .npy file per model input (batch 1, the "
                            "input's dtype); default: random inputs from the signature.")
_JSON = flags.DEFINE_string("json", None, "Write the results as JSON here.")
_CSV = flags.DEFINE_string("csv", None, "Write the results as CSV here.")
_ADB = flags.DEFINE_bool("adb", False, "Run TFLite's benchmark_model on an Android device.")
_BINARY = flags.DEFINE_string("benchmark_binary", None, "The device's benchmark_model (--adb).")
_SERIAL = flags.DEFINE_string("adb_serial", None, "Device serial for --adb.")
_AGREEMENT = flags.DEFINE_integer("agreement_examples", 64, "With --remote or --arch, compare "
                                  "outputs with this machine on this many random examples (0: "
                                  "skip).", lower_bound=0)


@flags.multi_flags_validator(["adb", "remote", "arch"],
                             message="--adb, --remote and --arch=aarch64-emulated exclude each "
                             "other: pick one target")
def _one_target(values):
  return sum([values["adb"], bool(values["remote"]), values["arch"] != "native"]) <= 1


@flags.multi_flags_validator(["adb", "benchmark_binary"],
                             message="--adb needs --benchmark_binary (TFLite's benchmark_model "
                             "built for the device)")
def _adb_binary(values):
  return not values["adb"] or bool(values["benchmark_binary"])


@flags.validator("threads", message="--threads must be positive integers, e.g. 1,2,4")
def _valid_threads(values):
  return all(v.isdigit() and int(v) > 0 for v in values)


@flags.validator("xnnpack", message="--xnnpack takes on and/or off, e.g. on,off")
def _valid_xnnpack(values):
  return bool(values) and all(v in ("on", "off") for v in values)


def _target():
  if _ADB.value:
    return Adb(_BINARY.value, serial=_SERIAL.value)
  options = flags.FLAGS
  return targets.from_options(options.remote, options.remote_python, options.arch)


def main(argv):
  models = argv[1:]
  if not models:
    raise app.UsageError("name one or more .tflite files")
  inputs = [np.load(p) for p in _INPUTS.value] if _INPUTS.value else None
  try:
    target = _target()
    results = benchmark_lib.benchmark(
        models, threads=[int(t) for t in _THREADS.value],
        xnnpack=[v == "on" for v in _XNNPACK.value], warmup=_WARMUP.value, runs=_RUNS.value,
        inputs=inputs, target=target, min_ms=_MIN_MS.value)
    agreement_rows = []
    if not isinstance(target, (Local, Adb)) and _AGREEMENT.value:
      agreement_rows = benchmark_lib.agreement(models, target, examples=_AGREEMENT.value)
  except (FileNotFoundError, ValueError) as e:
    raise app.UsageError(str(e)) from e
  except targets.TargetError as e:
    raise SystemExit(f"tflite-benchmark: {e}") from e
  print(benchmark_lib.format_table(results, agreement_rows))
  if _JSON.value:
    benchmark_lib.write_json(results, _JSON.value, agreement_rows)
  if _CSV.value:
    benchmark_lib.write_csv(results, _CSV.value)


def run():
  """Console-script entry point."""
  app.run(main)


if __name__ == "__main__":
  run()
