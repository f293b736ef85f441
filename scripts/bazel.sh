#!/usr/bin/env bash
# Runs Debian's offline bazel with kslim's shims for the external repositories Bazel 4
# expects, and with the project's virtualenv Python so py_test targets see TensorFlow.
# Usage: scripts/bazel.sh build //...   |   scripts/bazel.sh test //...
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
python="${KSLIM_PYTHON:-$root/.venv/bin/python}"
cmd=$1
shift
exec bazel "$cmd" \
  --override_repository=rules_cc="$root/third_party/bazel/rules_cc" \
  --override_repository=rules_java=/usr/share/bazel/rules/java \
  --override_repository=remote_coverage_tools="$root/third_party/bazel/remote_coverage_tools" \
  --incompatible_use_python_toolchains=false \
  --python_path="$python" \
  --action_env=TF_USE_LEGACY_KERAS=1 \
  --action_env=KSLIM_DATA_DIR \
  --test_env=TF_USE_LEGACY_KERAS=1 \
  --test_env=TF_CPP_MIN_LOG_LEVEL=2 \
  --test_env=HOME \
  --test_env=KSLIM_AARCH64_ROOT \
  --test_output=errors \
  --local_test_jobs=2 \
  "$@"
