#!/usr/bin/env bash
# README command 1: set up (idempotent) and run the end-to-end demo on Fashion-MNIST.
# Extra arguments go to kslim-demo, e.g. `scripts/demo.sh --model=mini_mobilenet_v2`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
export TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2
exec .venv/bin/python -m kslim.cli.demo "$@"
