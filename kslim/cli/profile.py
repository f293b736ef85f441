"""kslim-profile: per-layer parameters and MACs of a saved Keras model or a reference model."""

from absl import app, flags

from kslim import models
from kslim.profiling import profile
from kslim.cli._common import load_model, quiet_tensorflow

_MODEL = flags.DEFINE_string("model", None, "A saved tf_keras model (.keras, .h5 or SavedModel "
                             "folder).")
_REFERENCE = flags.DEFINE_enum("reference", None, sorted(models.REFERENCE_MODELS),
                               "Profile a reference model instead of a file.")
flags.mark_flags_as_mutual_exclusive(["model", "reference"], required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  quiet_tensorflow()
  if _REFERENCE.value:
    model = models.get(_REFERENCE.value)
  else:
    model = load_model(_MODEL.value, "model")
  print(profile(model))


def run():
  """Console-script entry point."""
  app.run(main)


if __name__ == "__main__":
  run()
