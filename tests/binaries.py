"""Runs a kslim binary in a subprocess, as a user's shell would."""

import os
import subprocess
import sys


def run_binary(module, *args, timeout=300, env=None):
  """Runs ``python -m module args`` with tf_keras selected; returns the CompletedProcess."""
  env = dict(os.environ if env is None else env, TF_USE_LEGACY_KERAS="1",
             TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run([sys.executable, "-m", module, *args], env=env, capture_output=True,
                        text=True, timeout=timeout, check=False)
