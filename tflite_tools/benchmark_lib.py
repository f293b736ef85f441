"""Latency measurement of TFLite models with LiteRT: warm-up, then timed runs, percentiles."""

import dataclasses
import time

import numpy as np

from tflite_tools.runner import TFLiteRunner

__all__ = ["LatencyStats", "measure_latency", "random_inputs"]


@dataclasses.dataclass(frozen=True)
class LatencyStats:
  """Latency of one model at one thread count, in milliseconds."""
  threads: int
  xnnpack: bool
  init_ms: float
  min_ms: float
  median_ms: float
  p90_ms: float
  mean_ms: float
  std_ms: float
  runs: int

  def to_dict(self):
    return dataclasses.asdict(self)


def random_inputs(runner, seed=0):
  """Batch-1 inputs matching the model's signature, in each input tensor's own dtype."""
  rng = np.random.default_rng(seed)
  arrays = []
  for detail in runner.input_details:
    shape = [1] + list(detail["shape"][1:])
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.integer):
      info = np.iinfo(dtype)
      arrays.append(rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype))
    else:
      arrays.append(rng.random(shape, dtype=np.float32).astype(dtype))
  return arrays


def measure_latency(model, threads=1, warmup=20, runs=100, use_xnnpack=True, seed=0):
  """Times single-example inference of a TFLite model.

  Args:
    model: a .tflite path or its bytes.
    threads: interpreter thread count.
    warmup: untimed runs first (caches, XNNPACK packing).
    runs: timed runs.
    use_xnnpack: False disables LiteRT's default XNNPACK delegate.
    seed: for the generated inputs.

  Returns:
    `LatencyStats`; `init_ms` is interpreter creation plus tensor allocation.
  """
  start = time.perf_counter()
  runner = TFLiteRunner(model, num_threads=threads, use_xnnpack=use_xnnpack)
  runner.resize(1)
  init_ms = (time.perf_counter() - start) * 1e3
  interpreter = runner.interpreter
  for array, detail in zip(random_inputs(runner, seed), runner.input_details):
    interpreter.set_tensor(detail["index"], array)
  for _ in range(warmup):
    interpreter.invoke()
  times = np.empty(runs)
  for i in range(runs):
    start = time.perf_counter()
    interpreter.invoke()
    times[i] = (time.perf_counter() - start) * 1e3
  return LatencyStats(threads, use_xnnpack, init_ms, float(times.min()), float(np.median(times)),
                      float(np.percentile(times, 90)), float(times.mean()), float(times.std()),
                      runs)
