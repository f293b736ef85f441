"""Benchmarks .tflite files side by side on a target: latency, init time, peak memory, size,
per thread count and XNNPACK setting; and output agreement between two targets.

Example:
  >>> results = benchmark(["float.tflite", "int8.tflite"], threads=(1, 2))
  >>> print(format_table(results))      # ratios against the first model
  >>> write_json(results, "bench.json")
"""

import base64
import csv
import dataclasses
import json
import pathlib
import platform

import numpy as np

from tflite_tools import harness
from tflite_tools.runner import load_model_bytes
from tflite_tools.targets import Local

__all__ = ["BenchmarkResult", "benchmark", "measure_latency", "agreement", "format_table",
           "write_json", "write_csv", "model_names", "float_examples"]


@dataclasses.dataclass(frozen=True)
class BenchmarkResult:
  """One model at one thread count and XNNPACK setting on one target; times in milliseconds.

  `median_ms`/`p90_ms` are None where the target's tool does not report them (adb);
  `peak_memory_mb` is how far peak RSS rose while the model was loaded and run; `cpu` names
  the target's CPU and its int8 dot-product features ("" where the target does not say).
  """
  model: str
  path: str
  size_bytes: int
  target: str
  machine: str
  threads: int
  xnnpack: bool
  init_ms: float
  min_ms: float
  median_ms: float
  p90_ms: float
  mean_ms: float
  std_ms: float
  runs: int
  peak_memory_mb: float
  real_timings: bool = True
  cpu: str = ""

  def to_dict(self):
    return dataclasses.asdict(self)


def model_names(paths):
  """Each model's name: its file name, or parent/file name where two files share one."""
  paths = [pathlib.Path(p) for p in paths]
  names = [p.name for p in paths]
  return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name
          for p in paths]


def _request(path, name, **options):
  """A `harness` request for one model."""
  return {"models": [{"name": name, "content": base64.b64encode(
      load_model_bytes(path)).decode("ascii")}], **options}


# Warm up, and time, for at least this long: a fresh process's first ~20-50 ms can run up
# to 1.7x slower at 2 threads on a VM (a 0.06 ms model's 20 + 100 runs all fall inside it).
MIN_MS = 100.0


def benchmark(models, threads=(1,), xnnpack=(True,), warmup=20, runs=100, inputs=None,
              target=None, seed=0, min_ms=MIN_MS):
  """Benchmarks every model at every thread count and XNNPACK setting on `target`.

  Args:
    models: .tflite paths (names in the results are their file names).
    threads: thread counts.
    xnnpack: XNNPACK settings (True: LiteRT's default delegate; False: builtin kernels).
    warmup: untimed runs before timing.
    runs: timed runs.
    inputs: one array per model input, batch 1, in the input's dtype (e.g. loaded from .npy);
      None generates inputs from each model's signature.
    target: a `targets.Target` (default: this machine).
    seed: for generated inputs.
    min_ms: keep warming up until `warmup` runs and this many ms are done, then keep timing
      until `runs` runs and this many ms are.

  Returns:
    A list of `BenchmarkResult`, model-major.

  Raises:
    FileNotFoundError / ValueError: a model is missing or not a TFLite file (named).
    targets.TargetError: the target could not run the harness.
  """
  target = target or Local()
  paths = [str(m) for m in models]
  encoded = None if inputs is None else [harness.encode_array(a) for a in inputs]
  results = []
  for path, name in zip(paths, model_names(paths)):
    for thread_count in threads:
      for use_xnnpack in xnnpack:
        # One request per setting: a fresh process each, so peak memory is this run's own.
        request = _request(path, name, threads=[int(thread_count)], xnnpack=[bool(use_xnnpack)],
                           warmup=warmup, runs=runs, min_ms=min_ms, seed=seed,
                           inputs=encoded)
        reply = target.run(request)
        results += [BenchmarkResult(path=path, size_bytes=pathlib.Path(path).stat().st_size,
                                    target=target.name, machine=reply["machine"],
                                    cpu=reply.get("cpu", ""), real_timings=target.real_timings, **row)
                    for row in reply["results"]]
  return results


def measure_latency(model, threads=1, warmup=20, runs=100, use_xnnpack=True, seed=0,
                    min_ms=MIN_MS):
  """Times one model (a path or bytes) in this process (see `harness.measure`; `min_ms` as in
  `benchmark`).

  Returns:
    A `BenchmarkResult` (``path`` is ``"<bytes>"`` for in-memory models).
  """
  content = load_model_bytes(model)
  stats = harness.measure(content, threads, use_xnnpack, warmup, runs, seed=seed, min_ms=min_ms)
  is_path = not isinstance(model, (bytes, bytearray))
  return BenchmarkResult(model=pathlib.Path(model).name if is_path else "<bytes>",
                         path=str(model) if is_path else "<bytes>", size_bytes=len(content),
                         target="local", machine=platform.machine(), threads=threads,
                         xnnpack=use_xnnpack, cpu=harness.cpu_name(), **stats)


def float_examples(model, count, seed=1):
  """`count` random float examples per input of `model`: uniform in [0, 1) for float inputs,
  spanning the representable range for integer inputs."""
  details = harness.make_interpreter(load_model_bytes(model)).get_input_details()
  arrays = harness.random_inputs(details, seed=seed, batch=count)
  return [harness.dequantize(a, d) for a, d in zip(arrays, details)]


def agreement(models, target, inputs=None, examples=64, reference=None):
  """How closely `target` reproduces `reference` (default: this machine) on the same inputs.

  Args:
    models: .tflite paths.
    target: the `targets.Target` under test (e.g. `EmulatedAarch64()`).
    inputs: float arrays, one per model input, with a batch of examples; integer-input models
      get them quantized with the input's scale and zero point on both sides. None: `examples`
      random examples from each model's signature (`float_examples`).
    examples: how many random examples when `inputs` is None.
    reference: the `targets.Target` taken as truth.

  Returns:
    One dict per model: ``model``, ``max_abs_diff``, ``mean_abs_diff`` (over every output
    element), ``top1_agreement`` (argmax over the last axis of the first output), the number of
    examples, and both machines and LiteRT versions.
  """
  reference = reference or Local()
  rows = []
  for path, name in zip(models, model_names(models)):
    x = inputs if inputs is not None else float_examples(path, examples)
    request = _request(path, name, threads=[], predict=[harness.encode_array(a) for a in x])
    got, want = target.run(request), reference.run(request)
    a = [harness.decode_array(y) for y in got["outputs"][name]]
    b = [harness.decode_array(y) for y in want["outputs"][name]]
    diffs = np.concatenate([np.abs(p - q).ravel() for p, q in zip(a, b)])
    rows.append({"model": name, "target": target.name, "target_machine": got["machine"],
                 "target_litert": got["litert"], "reference": reference.name,
                 "reference_machine": want["machine"], "reference_litert": want["litert"],
                 "examples": int(len(x[0])), "max_abs_diff": float(diffs.max()),
                 "mean_abs_diff": float(diffs.mean()),
                 "top1_agreement": float(np.mean(a[0].argmax(-1) == b[0].argmax(-1)))})
  return rows


def _fmt(value, spec):
  return "-" if value is None else format(value, spec)


def format_table(results, agreement_rows=()):
  """A plain-text table of `results`; latency and size ratios are against the first model at
  the same thread count and XNNPACK setting."""
  first = {}
  for r in results:
    first.setdefault((r.threads, r.xnnpack), r)
  header = ("model", "target", "threads", "xnnpack", "size KB", "init ms", "min ms",
            "median ms", "p90 ms", "mean ms", "std ms", "peak MB", "latency x", "size x")
  rows = []
  for r in results:
    base = first[(r.threads, r.xnnpack)]
    latency = r.median_ms if r.median_ms is not None else r.mean_ms
    base_latency = base.median_ms if base.median_ms is not None else base.mean_ms
    rows.append((r.model, r.target, str(r.threads), "on" if r.xnnpack else "off",
                 f"{r.size_bytes / 1024:.1f}", f"{r.init_ms:.2f}", f"{r.min_ms:.3f}",
                 _fmt(r.median_ms, ".3f"), _fmt(r.p90_ms, ".3f"), f"{r.mean_ms:.3f}",
                 f"{r.std_ms:.3f}", _fmt(r.peak_memory_mb, ".1f"),
                 f"{latency / base_latency:.2f}", f"{r.size_bytes / base.size_bytes:.2f}"))
  widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
  lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
  lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
  cpus = sorted({r.cpu for r in results if r.cpu})
  if cpus:
    lines.append(f"cpu: {'; '.join(cpus)}")
  if any(not r.real_timings for r in results):
    lines.append("NOTE: timings under emulation are not ARM latency; use them for "
                 "correctness only.")
  for row in agreement_rows:
    lines.append(f"agreement {row['model']}: {row['target_machine']} vs "
                 f"{row['reference_machine']} on {row['examples']} examples: max |diff| "
                 f"{row['max_abs_diff']:.3g}, mean |diff| {row['mean_abs_diff']:.3g}, top-1 "
                 f"agreement {row['top1_agreement']:.2%}")
  return "\n".join(lines)


def write_json(results, path, agreement_rows=()):
  """Writes ``{"results": [...], "agreement": [...]}`` to `path`."""
  pathlib.Path(path).write_text(json.dumps(
      {"results": [r.to_dict() for r in results], "agreement": list(agreement_rows)},
      indent=2) + "\n")


def write_csv(results, path):
  """Writes one CSV row per result, columns as in `BenchmarkResult`."""
  fields = [f.name for f in dataclasses.fields(BenchmarkResult)]
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    writer.writerows(r.to_dict() for r in results)
