#!/usr/bin/env bash
# README command 2: set up (idempotent, Bazel and the emulated aarch64 Python included) and run
# every test with pytest (one worker per core, at most 8: pytest-xdist), then check the Bazel
# side offline: `bazel build //...` builds every target and `bazel test //tests:bazel_smoke` runs
# one test per package under Bazel (`bazel test //...` runs every test there too).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh --bazel
bash scripts/aarch64_env.sh   # ARM kernels under QEMU for tests/tflite_tools
export TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2

echo "== pytest"
status=0
workers=$(nproc)
(( workers > 8 )) && workers=8
.venv/bin/python -m pytest -q -n "${KSLIM_TEST_WORKERS:-$workers}" --dist loadfile "$@" || status=$?
# Exit code 5 means pytest collected nothing: for this suite that is a failure too.
[[ $status -eq 0 ]] || { echo "pytest failed (exit $status)"; exit 1; }

echo "== bazel build //..."
bash scripts/bazel.sh build //...
echo "== bazel test //tests:bazel_smoke"
bash scripts/bazel.sh test //tests:bazel_smoke
