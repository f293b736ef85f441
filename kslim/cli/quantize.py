"""kslim-quantize: quantization-aware fine-tuning of a saved model, exported to int8 TFLite.

Example:
  kslim-quantize --model=model.keras --epochs=1 --output_tflite=model_int8.tflite \\
      --output_keras=model_qat.keras --activation_quantizer=pact --activation_bits=4
"""

import pathlib
import time

from absl import app, flags, logging

from kslim._table import format_table
from kslim.cli._common import define_dataset_flag, define_model_flags, start
from kslim.conversion import convert
from kslim.quantization import QuantConfig, quantize, quantizers
from kslim.training import accuracy, finetune_schedule, fit_classifier, model_accuracy
from tflite_tools.runner import TFLiteRunner

_load_model = define_model_flags("The trained float tf_keras model", "Quantize")
_load_data = define_dataset_flag()
_EPOCHS = flags.DEFINE_integer("epochs", 1, "QAT fine-tuning epochs.", lower_bound=1)
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 2e-4, "Peak learning rate (cosine decay "
                                    "to 0).", lower_bound=0.0)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Training batch size.", lower_bound=1)
_WEIGHT_BITS = flags.DEFINE_integer("weight_bits", 8, "Weight bits.", lower_bound=2,
                                    upper_bound=8)
_ACTIVATION_BITS = flags.DEFINE_integer("activation_bits", 8, "Activation bits.", lower_bound=2,
                                        upper_bound=8)
_WEIGHT_QUANTIZER = flags.DEFINE_enum("weight_quantizer", "channel_wise_abs_max",
                                      quantizers.names("weights"), "Weight quantizer.")
_ACTIVATION_QUANTIZER = flags.DEFINE_enum("activation_quantizer", "moving_average_abs_max",
                                          quantizers.names("activations"),
                                          "Activation quantizer.")
_EDGE_BITS = flags.DEFINE_integer("edge_bits", None, "Bits of the first and last weighted "
                                   "layers and of the input/output ranges (low-bit recipes keep "
                                   "them at 8); default: the bits above.", lower_bound=2,
                                   upper_bound=8)
_IO_DTYPE = flags.DEFINE_enum("io_dtype", "int8", ["int8", "float32"], "TFLite input/output "
                              "dtype.")
_OUTPUT_TFLITE = flags.DEFINE_string("output_tflite", None, "Where to write the int8 .tflite.",
                                     required=True)
_OUTPUT_KERAS = flags.DEFINE_string("output_keras", None, "Where to save the QAT Keras model "
                                    "(.keras or .h5); load it inside kslim.quantization.scope().")
_REPORT = flags.DEFINE_bool("report", False, "Print the per-layer Keras-vs-TFLite parity.")
_SEED = flags.DEFINE_integer("seed", 0, "Training seed.")


@flags.validator("output_tflite", message="--output_tflite must end in .tflite")
def _tflite_suffix(value):
  return value is None or value.endswith(".tflite")


@flags.validator("output_keras", message="--output_keras must end in .keras or .h5")
def _keras_suffix(value):
  return value is None or value.endswith((".keras", ".h5"))


def main(argv):
  start(argv)
  (x_train, y_train), (x_test, y_test) = _load_data()
  model = _load_model(x_train)
  float_acc = model_accuracy(model, x_test, y_test)
  float_kb = len(convert(model, "float32")) / 1024
  config = QuantConfig(weight_bits=_WEIGHT_BITS.value, activation_bits=_ACTIVATION_BITS.value,
                       weight_quantizer=_WEIGHT_QUANTIZER.value,
                       activation_quantizer=_ACTIVATION_QUANTIZER.value,
                       edge_bits=_EDGE_BITS.value)
  qat = quantize(model, config)
  schedule = finetune_schedule(_LEARNING_RATE.value, _EPOCHS.value, len(x_train),
                               _BATCH_SIZE.value)
  began = time.perf_counter()
  fit_classifier(qat, x_train, y_train, _EPOCHS.value, _BATCH_SIZE.value, schedule, _SEED.value)
  logging.info("QAT fine-tuning took %.1f s", time.perf_counter() - began)
  content = convert(qat, "int8", output_path=_OUTPUT_TFLITE.value, io_dtype=_IO_DTYPE.value,
                    representative_data=x_train[:256], report=_REPORT.value)
  if _OUTPUT_KERAS.value:
    pathlib.Path(_OUTPUT_KERAS.value).parent.mkdir(parents=True, exist_ok=True)
    qat.save(_OUTPUT_KERAS.value)
  qat_acc = model_accuracy(qat, x_test, y_test)
  tflite_acc = accuracy(TFLiteRunner(content).predict(x_test), y_test)
  print(content.report)
  print(format_table(["model", "Keras acc", "TFLite acc", "TFLite KB"], [
      ["float32", f"{100 * float_acc:.2f}%", "-", f"{float_kb:.1f}"],
      [f"QAT w{config.weight_bits}a{config.activation_bits}", f"{100 * qat_acc:.2f}%",
       f"{100 * tflite_acc:.2f}%", f"{len(content) / 1024:.1f}"]]))


def run():
  """Console-script entry point."""
  app.run(main)


if __name__ == "__main__":
  run()
