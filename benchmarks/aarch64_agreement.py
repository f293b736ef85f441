"""Check: the benchmark models' .tflite files give the same answers on ARM kernels as on x86.

Runs each file on an aarch64 Python with the aarch64 LiteRT wheel under QEMU user-mode
emulation (`tflite_tools.targets.EmulatedAarch64`, built by scripts/aarch64_env.sh) and on this
machine, on the first --examples Fashion-MNIST test images, and reports per model the max and
mean |output difference| and the top-1 agreement. Timings under emulation are not ARM latency
and are not reported. Prints a table and writes benchmarks/results/aarch64_agreement.json.

Usage: .venv/bin/python benchmarks/aarch64_agreement.py [--examples=500]
"""

from absl import app, flags

from _results import write_results

from kslim import datasets
from kslim._table import format_table
from tflite_tools import benchmark_lib
from tflite_tools.targets import EmulatedAarch64

_FILES = [f"runs/bench/{model}/{name}.tflite"
          for model in ("reference_cnn", "mini_mobilenet_v2")
          for name in (f"{model}_float32", "ptq_float16", "ptq_dynamic", "ptq_int8_minmax",
                       "ptq_int8_mse", "ptq_int16x8_minmax", "qat_kslim_QAT_int8",
                       "qat_tfmot_QAT_int8", "qat_PACT_w4a4")]

_EXAMPLES = flags.DEFINE_integer("examples", 500, "Test images per model.")
_OUTPUT = flags.DEFINE_string("output", "benchmarks/results/aarch64_agreement.json",
                              "JSON results.")


def main(argv):
  del argv
  _, (x_test, _) = datasets.load_fashion_mnist()
  x = datasets.normalize(x_test[:_EXAMPLES.value])
  rows = benchmark_lib.agreement(_FILES, EmulatedAarch64(), inputs=[x])
  for row, path in zip(rows, _FILES):
    row["tflite_file"] = path
  print(format_table(["model", "max |diff|", "mean |diff|", "top-1 agreement"],
                     [[r["tflite_file"], f"{r['max_abs_diff']:.3g}", f"{r['mean_abs_diff']:.3g}",
                       f"{r['top1_agreement']:.2%}"] for r in rows]))
  write_results(_OUTPUT.value, "aarch64_agreement",
                f"aarch64 LiteRT {rows[0]['target_litert']} under QEMU vs x86_64 LiteRT "
                f"{rows[0]['reference_litert']}, first "
                f"{_EXAMPLES.value} Fashion-MNIST test images, XNNPACK on both", rows)


if __name__ == "__main__":
  app.run(main)
