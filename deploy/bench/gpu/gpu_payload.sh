#!/usr/bin/env bash
# Run with: make gpu-payload   (or bash deploy/bench/gpu/gpu_payload.sh [DIR], default .gpu/)
#
# Fills DIR with what deploy/bench/gpu/gpu.sh needs on a GPU machine that has CUDA 13 and PyTorch but
# no Rust toolchain, no diffusers, no onnxruntime-gpu and no network, in under 64 MiB (the most
# the lent GPU machine takes per transfer). Needs `make fixtures-env` and the Table 6 export.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
dir=${1:-$root/.gpu}
ort_version=1.31.1
arch=90  # H100 and H200
python=$root/.venv-fixtures/bin/python
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$dir"

echo "gpu-payload: binaries" >&2
cargo build --release --quiet -p rapid-worker -p rapid-scheduler --manifest-path "$root/Cargo.toml"
tests=$(cargo test --release --quiet -p rapid-engine --features cuda --lib --no-run --message-format=json \
  --manifest-path "$root/Cargo.toml" | "$python" -c '
import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if message.get("reason") == "compiler-artifact" and message.get("executable") and message["profile"]["test"]:
        print(message["executable"])')
parity=$(cargo test --release --quiet -p rapid-engine --test gpu_parity --no-run --message-format=json \
  --manifest-path "$root/Cargo.toml" | "$python" -c '
import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if message.get("reason") == "compiler-artifact" and message.get("executable") and message["profile"]["test"]:
        print(message["executable"])')
for binary in "$root/target/release/rapid-worker" "$root/target/release/rapid-scheduler" "$tests" "$parity"; do
  name=$(basename "$binary" | sed 's/-[0-9a-f]\{16\}$/-tests/')
  strip -o "$work/$name" "$binary"
  xz -9 -T2 -c "$work/$name" > "$dir/$name.xz"
done

sum_file=$dir/ort-gpu-sm$arch.tar.xz.sha256
if [[ -e $sum_file && $(cat "$dir"/ort-gpu-sm$arch.tar.xz.a? | sha256sum | cut -d' ' -f1) == $(cat "$sum_file") ]]; then
  echo "gpu-payload: ONNX Runtime parts already made" >&2
else
  echo "gpu-payload: ONNX Runtime $ort_version GPU libraries, sm_$arch only (xz takes about 5 minutes)" >&2
  "$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 -d "$work" "onnxruntime-gpu==$ort_version"
  unzip -q "$work"/onnxruntime_gpu-*.whl 'onnxruntime/capi/lib*' -d "$work/wheel"
  mkdir "$work/lib"
  capi=$work/wheel/onnxruntime/capi
  cp "$capi/libonnxruntime.so.$ort_version" "$capi/libonnxruntime_providers_shared.so" \
    "$capi/libonnxruntime_providers_tensorrt.so" "$work/lib/"
  # Why zeroed and not removed: deploy/bench/gpu/fatbin_keep.py.
  "$python" "$root/deploy/bench/gpu/fatbin_keep.py" "$capi/libonnxruntime_providers_cuda.so" \
    "$work/lib/libonnxruntime_providers_cuda.so" --arch "$arch"
  tar -cf - -C "$work/lib" . | xz -9e -T2 > "$work/ort.tar.xz"
  # Parts, so that each fits one transfer beside the rest; gpu.sh checks the sum of what arrived.
  rm -f "$dir"/ort-gpu-sm$arch.tar.xz.*
  sha256sum < "$work/ort.tar.xz" | cut -d' ' -f1 > "$sum_file"
  split -b 48M "$work/ort.tar.xz" "$dir/ort-gpu-sm$arch.tar.xz."
fi

echo "gpu-payload: Python wheels" >&2
"$python" -m pip download --quiet --no-deps --only-binary=:all: -d "$dir" diffusers==0.42.1 importlib_metadata==10.2.0

echo "gpu-payload: the Table 6 model without its weights" >&2
model=$root/.cache/models/table6
"$python" "$root/deploy/export/weightless.py" strip --model "$model" --out "$dir/table6"
# A rewrite `make prepare-model` added for CPU workers (unet/winograd/, CPU-provider operators) has
# no place on the GPU, and weightless.py copies only its config.
rm -rf "$dir/table6/unet/winograd"
# Attention as com.microsoft.MultiHeadAttention (flash attention on the CUDA provider); then fp16.
"$python" "$root/deploy/export/fuse_attention.py" --model "$model" --out "$work/fused" --fused ort
"$python" "$root/deploy/export/weightless.py" strip --model "$work/fused" --out "$dir/table6-fused"
"$python" "$root/deploy/export/fp16.py" --model "$work/fused" --out "$work/fp16"
"$python" "$root/deploy/export/weightless.py" strip --model "$work/fused" --out "$dir/table6-fp16" \
  --part "unet=$work/fp16/unet/model.onnx" --part "upscaler=$work/fp16/upscaler/model.onnx"
du -sh "$dir"
