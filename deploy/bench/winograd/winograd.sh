#!/usr/bin/env bash
# Run with: bash deploy/bench/winograd/winograd.sh [CALLS [KERNEL...]]   (from anywhere; about 3 minutes on 2 cores)
#
# One Table 6 U-Net call (random weights) as exported, and with its 3×3 convolutions on 16×16 and
# larger feature maps rewritten as ai.rapid::WinogradConv (deploy/export/winograd.py, written once
# into .cache/models/table6-winograd). Timed by deploy/bench/common/unet_variants.sh: one process, median
# of CALLS calls (default 5), outputs compared. Writes deploy/bench/winograd/winograd.json;
# deploy/bench/speed/NOTES.md reads it.
#
# KERNEL (auto, avx512, avx2, matrixmultiply; default auto) picks the products' kernel
# (RAPID_WINOGRAD_KERNEL); several time the rewrite once with each, as variants winograd-KERNEL.
#
# MIN_SIZES="16 8 4" instead times rewrites that reach down to each feature-map size (winograd.py
# --min-size; 8 adds the 8×8 level, 4 every level), auto kernel, → deploy/bench/winograd/winograd-levels.json.
# Each rewritten variant holds 5–12 GB; mind the machine's memory when timing several.
set -euo pipefail
shopt -s inherit_errexit

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$root"
calls=${1:-5}
kernels=("${@:2}")
[[ ${#kernels[@]} -gt 0 ]] || kernels=(auto)
models=.cache/models
python=.venv-fixtures/bin/python

if [[ ! -e $models/table6/unet/model.onnx ]]; then
  echo "winograd.sh: no Table 6 model; run \`make fixtures-env\` and \`$python deploy/export/export_table6.py\`" >&2
  exit 1
fi
# The rewrite down to SIZE, made once: table6-winograd for the default 16, table6-winogradSIZE else.
rewrite() {
  local size=$1 dir=$models/table6-winograd
  [[ $size == 16 ]] || dir=$models/table6-winograd$size
  if [[ ! -e $dir/unet/model.onnx ]]; then
    flock /tmp/rapid-bench.lock "$python" deploy/export/winograd.py --model $models/table6 --out "$dir" \
      --min-size "$size" >&2 || { echo "winograd.sh: the rewrite to $dir failed" >&2; return 1; }
  fi
  echo "$dir"
}

variants=()
if [[ -n ${MIN_SIZES:-} ]]; then
  out=deploy/bench/winograd/winograd-levels.json
  for size in $MIN_SIZES; do
    dir=$(rewrite "$size")
    variants+=("winograd-min$size=$dir")
  done
else
  out=deploy/bench/winograd/winograd.json
  dir=$(rewrite 16)
  for kernel in "${kernels[@]}"; do
    variants+=(--winograd-kernel "$kernel" "winograd-$kernel=$dir")
  done
fi
bash deploy/bench/common/unet_variants.sh "$out" "$calls" plain=$models/table6 "${variants[@]}"
