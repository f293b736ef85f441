#!/usr/bin/env bash
# Builds (once, cached) an aarch64 Python 3.11 with LiteRT that runs here under QEMU user-mode
# emulation, so tflite_tools can run models on ARM kernels (XNNPACK's NEON paths) on an x86
# machine: `tflite-benchmark --arch=aarch64-emulated`. Emulated timings are NOT ARM latency.
#
#   sysroot/  Debian bookworm arm64 packages (python3.11-minimal, libc6, ...) unpacked by dpkg -x
#   site/     the aarch64 wheels of ai-edge-litert and numpy (+ their pure-Python deps), unzipped
#
# Where: $KSLIM_AARCH64_ROOT, else ~/.cache/kslim/aarch64. A second run only checks the stamp.
# Needs root (or sudo) the first time, for qemu-user-static and the arm64 package lists.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest="${KSLIM_AARCH64_ROOT:-$HOME/.cache/kslim/aarch64}"
pip="${KSLIM_PIP:-$root/.venv/bin/pip}"

debs=(python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libgcc-s1 libstdc++6
      zlib1g libexpat1 libffi8 libssl3 libbz2-1.0 liblzma5 libcrypt1 libuuid1)
# ai-edge-litert 1.4.0 is the newest release with a cp311 aarch64 wheel (the x86 venv has 2.3.0).
wheels=(ai-edge-litert==1.4.0 numpy==2.4.6 flatbuffers==25.12.19 typing-extensions==4.16.0
        backports.strenum==1.2.8 tqdm==4.70.1)
stamp=$(printf '%s\n' "${debs[@]}" "${wheels[@]}" | sha256sum | cut -c1-16)
if [[ "$(cat "$dest/.stamp" 2>/dev/null)" == "$stamp" ]] && command -v qemu-aarch64-static >/dev/null; then
  echo "aarch64: ready in $dest"
  exit 0
fi

sudo_cmd=()
[[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
if ! command -v qemu-aarch64-static >/dev/null; then
  echo "aarch64: installing qemu-user-static"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq qemu-user-static >/dev/null
fi
if ! dpkg --print-foreign-architectures | grep -qx arm64 \
    || ! apt-cache show libc6:arm64 >/dev/null 2>&1; then
  echo "aarch64: adding Debian's arm64 package lists"
  "${sudo_cmd[@]}" dpkg --add-architecture arm64
  "${sudo_cmd[@]}" apt-get update -qq
fi

echo "aarch64: building the emulated Python in $dest"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/debs" "$work/wheels" "$work/sysroot" "$work/site"
(cd "$work/debs" && apt-get download -qq "${debs[@]/%/:arm64}" 2>/dev/null)
for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$work/sysroot"; done
"$pip" download -q --only-binary=:all: --no-deps --python-version 3.11 \
  --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 \
  --platform manylinux2014_aarch64 -d "$work/wheels" "${wheels[@]}"
for wheel in "$work"/wheels/*.whl; do
  (cd "$work/site" && "$root/.venv/bin/python" -m zipfile -e "$wheel" .)
done
rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
mkdir "$dest"
mv "$work/sysroot" "$work/site" "$dest/"
PYTHONPATH="$dest/site" qemu-aarch64-static -L "$dest/sysroot" "$dest/sysroot/usr/bin/python3.11" \
  -c "import platform, numpy; from ai_edge_litert import interpreter; assert platform.machine() == 'aarch64'"
echo "$stamp" > "$dest/.stamp"
echo "aarch64: ready in $dest"
