"""TFLite deployment tooling: run, benchmark, analyze and compare .tflite files with LiteRT,
on this CPU, a remote board, an emulated aarch64 Python or an Android device."""

from tflite_tools.benchmark_lib import BenchmarkResult, benchmark, measure_latency
from tflite_tools.runner import TFLiteRunner, load_model_bytes

__all__ = ["BenchmarkResult", "TFLiteRunner", "benchmark", "load_model_bytes",
           "measure_latency"]
