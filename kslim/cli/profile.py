"""kslim-profile: per-layer parameters and MACs of a saved Keras model or a reference model."""

from absl import app, flags

from kslim.profiling import profile
from kslim.cli._common import define_model_flags, start

_load_model = define_model_flags("A saved tf_keras model", "Profile")


def main(argv):
  start(argv)
  model = _load_model()
  print(profile(model))


def run():
  """Console-script entry point."""
  app.run(main)


if __name__ == "__main__":
  run()
