"""kslim-convert: a saved float model to TFLite in any mode, with kslim's calibrators.

Prints the conversion report (size, ops by dtype, what stayed float and why) and a table of
the float and converted models' accuracy and size on the dataset's test split.

Example:
  kslim-convert --model=model.keras --mode=int8 --calibration=kl --num_samples=512 \\
      --output=model_int8.tflite
"""

from absl import app, flags

from kslim._table import format_table
from kslim.cli._common import define_dataset_flag, define_model_flags, start
from kslim.conversion import Calibration, Mode, convert
from kslim.conversion.calibration import DEFAULT_PERCENTILE
from kslim.conversion.representative_data import MIN_SAMPLES
from kslim.training import accuracy, model_accuracy
from tflite_tools.runner import TFLiteRunner

_load_model = define_model_flags("The trained float tf_keras model", "Convert")
_MODE = flags.DEFINE_enum("mode", "int8", [m.value for m in Mode], "TFLite conversion mode.")
_CALIBRATION = flags.DEFINE_enum("calibration", "minmax", [c.value for c in Calibration],
                                 "How int8 activation ranges are chosen (minmax: TFLite's).")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 256, "Calibration examples, taken from the "
                                    "dataset's training split.", lower_bound=MIN_SAMPLES)
_PERCENTILE = flags.DEFINE_float("percentile", DEFAULT_PERCENTILE, "p for "
                                 "--calibration=percentile.", lower_bound=50.0,
                                 upper_bound=100.0)
_PER_CHANNEL = flags.DEFINE_bool("per_channel", True, "Per-output-channel int8 kernels.")
_BIAS_CORRECTION = flags.DEFINE_bool("bias_correction", False, "Empirical bias correction.")
_IO_DTYPE = flags.DEFINE_enum("io_dtype", None, ["int8", "int16", "float32"], "Input/output "
                              "dtype of an integer model (default: the mode's integer type).")
_load_data = define_dataset_flag()
_OUTPUT = flags.DEFINE_string("output", None, "Where to write the .tflite file.", required=True)


@flags.validator("output", message="--output must end in .tflite")
def _tflite_suffix(value):
  return value is None or value.endswith(".tflite")


@flags.multi_flags_validator(
    ["mode", "calibration", "bias_correction"],
    message="--calibration other than minmax and --bias_correction need --mode=int8")
def _calibration_needs_int8(values):
  custom = values["calibration"] != "minmax" or values["bias_correction"]
  return not custom or values["mode"] == "int8"


def main(argv):
  start(argv)
  (x_train, _), (x_test, y_test) = _load_data()
  model = _load_model(x_train)
  content = convert(model, _MODE.value, representative_data=x_train,
                    calibration=_CALIBRATION.value, num_samples=_NUM_SAMPLES.value,
                    per_channel=_PER_CHANNEL.value, bias_correction=_BIAS_CORRECTION.value,
                    io_dtype=_IO_DTYPE.value, output_path=_OUTPUT.value,
                    percentile=_PERCENTILE.value)
  float_kb = len(convert(model, "float32")) / 1024
  float_acc = model_accuracy(model, x_test, y_test)
  tflite_acc = accuracy(TFLiteRunner(content).predict(x_test), y_test)
  print(content.report)
  label = _MODE.value + (f" ({_CALIBRATION.value})" if _MODE.value in ("int8", "int16x8")
                         else "")
  print(format_table(["model", "accuracy", "TFLite KB"], [
      ["float32 (Keras)", f"{100 * float_acc:.2f}%", f"{float_kb:.1f}"],
      [label, f"{100 * tflite_acc:.2f}%", f"{len(content) / 1024:.1f}"]]))
  print(f"wrote {_OUTPUT.value}")


def run():
  """Console-script entry point."""
  app.run(main)


if __name__ == "__main__":
  run()
