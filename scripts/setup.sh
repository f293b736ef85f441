#!/usr/bin/env bash
# Sets up everything kslim needs on a fresh Debian machine, idempotently:
#   - Debian packages: the Fashion-MNIST dataset, and with --bazel the offline Bazel toolchain;
#   - a virtualenv in .venv with the pinned stack (requirements.txt) and kslim in editable mode.
# A second run only checks and returns (the venv is keyed by a hash of requirements.txt/setup.py).
# Usage: scripts/setup.sh [--bazel]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

want_bazel=0
[[ "${1:-}" == "--bazel" ]] && want_bazel=1

sudo_cmd=()
[[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)

python="${KSLIM_BASE_PYTHON:-python3}"
apt_packages=()
# Debian's own Python needs python3-venv for `python3 -m venv` (ensurepip).
"$python" -c "import ensurepip, venv" 2>/dev/null || apt_packages+=(python3-venv)
data_dir="${KSLIM_DATA_DIR:-/usr/share/datasets/fashion-mnist}"
[[ -f "$data_dir/t10k-labels-idx1-ubyte.gz" || -f "$data_dir/t10k-labels-idx1-ubyte" ]] \
  || apt_packages+=(dataset-fashion-mnist)
if [[ $want_bazel -eq 1 ]]; then
  command -v bazel >/dev/null || apt_packages+=(bazel-bootstrap)
  [[ -d /usr/share/bazel/rules/java ]] || apt_packages+=(bazel-rules-java)
fi
if [[ ${#apt_packages[@]} -gt 0 ]]; then
  echo "setup: installing Debian packages: ${apt_packages[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi

stamp=$(cat requirements.txt setup.py | sha256sum | cut -c1-16)
if [[ ! -x .venv/bin/python || "$(cat .venv/.kslim-stamp 2>/dev/null)" != "$stamp" ]]; then
  echo "setup: creating .venv with the pinned stack (requirements.txt)"
  rm -rf .venv
  "$python" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements.txt
  .venv/bin/pip install -q --no-deps -e .
  echo "$stamp" > .venv/.kslim-stamp
fi
echo "setup: ready ($(.venv/bin/python --version), kslim $(.venv/bin/python -c 'from kslim.version import __version__; print(__version__)'))"
