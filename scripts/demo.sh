#!/usr/bin/env bash
# README command 1: set up (idempotent) and run the end-to-end demo on Fashion-MNIST: the
# compression job examples/demo.yaml (train the reference CNN, QAT, int8 TFLite, benchmark).
# Extra arguments go to kslim-compress, e.g. `scripts/demo.sh --set=strategies.0.quantize.epochs=2`
# or `scripts/demo.sh --config=examples/prune_qat.yaml`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
export TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2
exec .venv/bin/python -m kslim.cli.compress --config=examples/demo.yaml --workdir=runs/demo "$@"
