"""kslim-profile: per-layer parameters and MACs of a saved Keras model or a reference model."""

from absl import app, flags

from kslim import models
from kslim.profiling import profile
from kslim.cli._common import input_model, start

_MODEL = flags.DEFINE_string("model", None, "A saved tf_keras model (.keras, .h5 or SavedModel "
                             "folder).")
_REFERENCE = flags.DEFINE_enum("reference", None, sorted(models.REFERENCE_MODELS),
                               "Profile a reference model instead of a file.")
flags.mark_flags_as_mutual_exclusive(["model", "reference"], required=True)


def main(argv):
  start(argv)
  model = input_model(_REFERENCE.value, _MODEL.value)
  print(profile(model))


def run():
  """Console-script entry point."""
  app.run(main)


if __name__ == "__main__":
  run()
