"""TFLite deployment tooling: run, benchmark and inspect .tflite files with LiteRT."""

from tflite_tools.benchmark_lib import LatencyStats, measure_latency
from tflite_tools.runner import TFLiteRunner, load_model_bytes

__all__ = ["LatencyStats", "TFLiteRunner", "load_model_bytes", "measure_latency"]
