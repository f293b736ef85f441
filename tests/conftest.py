"""pytest glue: lets absltest features (create_tempdir, flagsaver) run outside absltest.main."""

from absl import flags


def pytest_configure(config):
  del config
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
