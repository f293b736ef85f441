"""pytest glue: lets absltest features (create_tempdir, flagsaver, the default test tmpdir) run
outside absltest.main."""

import os
import tempfile

from absl import flags


def pytest_configure(config):
  del config
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  # absltest's default tmpdir is a fixed /tmp/absl_testing that nothing creates under pytest
  # and that xdist workers writing the same files would share: give every process (each
  # worker runs this hook too) a fresh one. Under Bazel (TEST_SRCDIR set) keep Bazel's.
  if "TEST_SRCDIR" not in os.environ:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    os.environ["TEST_TMPDIR"] = tempfile.mkdtemp(prefix=f"kslim_tests_{worker}_")
