"""tflite-compare: a Keras model against its .tflite file on a dataset: the accuracy of each,
how often their top-1 predictions agree, and how far their outputs differ.

  python -m tflite_tools.compare --keras=model.keras --tflite=model_int8.tflite
  python -m tflite_tools.compare --keras=m.keras --tflite=m.tflite --dataset=data.npz --json=c.json

Example:
  >>> print(compare(model, "model_int8.tflite", x_test, y_test))
"""

import dataclasses
import json
import os

import numpy as np
from absl import app, flags

from tflite_tools.runner import TFLiteRunner

__all__ = ["Comparison", "compare"]


@dataclasses.dataclass(frozen=True)
class Comparison:
  """How a TFLite file reproduces its Keras model on `examples` inputs.

  The accuracies are None without labels; differences are over every output element.
  """
  examples: int
  keras_accuracy: float
  tflite_accuracy: float
  top1_agreement: float
  max_abs_diff: float
  mean_abs_diff: float

  def to_dict(self):
    return dataclasses.asdict(self)

  def __str__(self):
    def pct(value):
      return "-" if value is None else f"{value:.2%}"
    return (f"{self.examples} examples: Keras accuracy {pct(self.keras_accuracy)}, TFLite "
            f"accuracy {pct(self.tflite_accuracy)}, top-1 agreement {pct(self.top1_agreement)}, "
            f"max |diff| {self.max_abs_diff:.4g}, mean |diff| {self.mean_abs_diff:.4g}")


def compare(keras_model, tflite, x, y=None, batch_size=256):
  """Runs both models on `x` and compares them.

  Args:
    keras_model: a tf_keras model.
    tflite: a .tflite path or bytes (integer inputs/outputs are (de)quantized).
    x: inputs (one array).
    y: integer labels, or None.
    batch_size: examples per run.

  Raises:
    ValueError: the models' outputs differ in shape, or `x` does not fit the TFLite input
      (the message names the input).
  """
  got = TFLiteRunner(tflite).predict(x, batch_size=batch_size)
  want = keras_model.predict(x, batch_size=batch_size, verbose=0)
  if got.shape != want.shape:
    raise ValueError(f"the TFLite model outputs shape {got.shape[1:]}, the Keras model "
                     f"{want.shape[1:]}: are they the same model?")
  diff = np.abs(got - want)
  accuracy = (lambda p: float(np.mean(p.argmax(-1) == np.ravel(y)))) if y is not None else (
      lambda p: None)
  return Comparison(examples=len(x), keras_accuracy=accuracy(want),
                    tflite_accuracy=accuracy(got),
                    top1_agreement=float(np.mean(got.argmax(-1) == want.argmax(-1))),
                    max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.mean()))


def _test_split(spec):
  """(x_test, y_test or None) of --dataset."""
  from kslim.cli import _common  # pylint: disable=import-outside-toplevel  # TF: only when run
  if spec == "fashion_mnist":
    return _common.load_dataset(spec)[1]
  if not spec.endswith(".npz") or not os.path.isfile(spec):
    raise app.UsageError(f"--dataset: expected 'fashion_mnist' or an existing .npz file, got "
                         f"{spec!r}")
  with np.load(spec) as data:
    if "x_test" not in data:
      raise app.UsageError(f"--dataset: {spec} has no x_test array (it has {list(data)})")
    return data["x_test"].astype(np.float32), data["y_test"] if "y_test" in data else None


def main(argv):
  from kslim import quantization  # pylint: disable=import-outside-toplevel
  from kslim.cli import _common  # pylint: disable=import-outside-toplevel
  _common.start(argv)
  options = flags.FLAGS
  x, y = _test_split(options.dataset)
  if options.num_examples:
    x, y = x[:options.num_examples], None if y is None else y[:options.num_examples]
  with quantization.scope():
    model = _common.load_model(options.keras, "keras")
  try:
    result = compare(model, options.tflite, x, y)
  except (FileNotFoundError, ValueError) as e:
    raise app.UsageError(str(e)) from e
  print(result)
  if options.json:
    with open(options.json, "w") as f:
      json.dump(result.to_dict(), f, indent=2)


def run():
  """Console-script entry point; the flags exist only here, so importing the library defines
  none."""
  flags.DEFINE_string("keras", None, "The tf_keras model (.keras, .h5 or SavedModel).",
                      required=True)
  flags.DEFINE_string("tflite", None, "The .tflite file.", required=True)
  flags.DEFINE_string("dataset", "fashion_mnist", "'fashion_mnist' (its test split) or a .npz "
                      "with x_test and, for accuracy, y_test.")
  flags.DEFINE_integer("num_examples", 0, "Use the first N examples (0: all).", lower_bound=0)
  flags.DEFINE_string("json", None, "Also write the comparison as JSON here.")
  app.run(main)


if __name__ == "__main__":
  run()
