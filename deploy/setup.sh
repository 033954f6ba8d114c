#!/usr/bin/env bash
# Run with: bash deploy/setup.sh [--gpu | --openvino]
#
# Installs what the binaries and tests need that cargo does not fetch, into project-local folders
# (both git-ignored), idempotently:
#   .venv/                 Python for the test helpers (invisible-watermark's reference decoder)
#   .cache/onnxruntime/    the ONNX Runtime shared library, taken from the PyPI wheel
# The engine looks for the library in .cache/onnxruntime/<flavour>/ by default (see
# worker/engine/src/runtime/mod.rs), so nothing has to be exported by hand.
set -euo pipefail

ORT_VERSION=1.31.1
# The newest onnxruntime-openvino on PyPI; the engine asks ort for API 24 so that it loads.
OPENVINO_ORT_VERSION=1.24.1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
cache="$root/.cache/onnxruntime"

flavour=cpu
wheel=onnxruntime
version=$ORT_VERSION
case "${1:-}" in
  "") ;;
  --gpu) flavour=gpu wheel=onnxruntime-gpu ;;
  --openvino) flavour=openvino wheel=onnxruntime-openvino version=$OPENVINO_ORT_VERSION ;;
  *) echo "setup: unknown option ${1}; use --gpu or --openvino" >&2; exit 2 ;;
esac

if [[ ! -x "$venv/bin/python" ]]; then
  echo "setup: creating $venv" >&2
  python3 -m venv "$venv"
fi

stamp="$venv/.rapid-setup-$(sha256sum "$root/deploy/requirements-test.txt" | cut -c1-16)"
if [[ ! -e "$stamp" ]]; then
  echo "setup: installing Python test requirements" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/deploy/requirements-test.txt"
  # invisible-watermark's declared dependencies pull in torch (for RivaGAN, which we do not use);
  # its DWT-DCT code needs only what requirements-test.txt already installed.
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps invisible-watermark==0.2.0
  touch "$stamp"
fi

lib="$cache/$flavour/libonnxruntime.so"
if [[ ! -e "$lib" ]]; then
  echo "setup: fetching $wheel==$version from PyPI" >&2
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$venv/bin/pip" download --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: --dest "$tmp" "$wheel==$version"
  mkdir -p "$cache/$flavour"
  (cd "$tmp" && python3 -m zipfile -e ./*.whl unpacked >/dev/null)
  cp -a "$tmp"/unpacked/onnxruntime/capi/libonnxruntime*.so* "$cache/$flavour/"
  # The GPU wheel's provider libraries (CUDA, TensorRT) are loaded from beside the main library.
  cp -a "$tmp"/unpacked/onnxruntime/capi/libonnxruntime_providers_*.so "$cache/$flavour/" 2>/dev/null || true
  # The OpenVINO provider loads OpenVINO and its CPU plugin (and TBB) from the same folder.
  if [[ $flavour == openvino ]]; then
    cp -a "$tmp"/unpacked/onnxruntime/capi/lib{openvino,tbb}*.so* "$cache/$flavour/"
  fi
  real=$(ls "$cache/$flavour"/libonnxruntime.so.* | head -n1)
  ln -sf "$(basename "$real")" "$lib"
fi
echo "setup: ONNX Runtime at $lib" >&2
