"""Writes a benchmark's JSON in the one format benchmarks/readme_table.py renders."""

import json
import os
import pathlib
import platform

__all__ = ["write_results", "rows_for"]


def write_results(path, benchmark, recipe, rows, **extra):
  """Writes ``{"benchmark", "machine", "recipe", "results": rows, **extra}`` to `path`; prints
  where. README tables render the ``results`` rows only."""
  out = pathlib.Path(path)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({
      "benchmark": benchmark,
      "machine": {"processor": platform.processor() or platform.machine(),
                  "cpu": _cpu_model(), "cores": os.cpu_count(),
                  "python": platform.python_version()},
      "recipe": recipe,
      "results": rows,
      **extra,
  }, indent=2) + "\n")
  print(f"wrote {out}")


def _cpu_model():
  """The CPU's model name (Linux), or None: latencies, and int8's gain over float, differ
  between CPUs of the same architecture (e.g. AMX / VNNI int8 kernels)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return None


def rows_for(models, benchmark_model):
  """The result rows of ``benchmark_model(name)`` for every model name, in order."""
  rows = []
  for name in models:
    rows += benchmark_model(name)
  return rows

