#!/usr/bin/env bash
# Run with: bash deploy/bench/attention.sh [CALLS]     (from anywhere; about 5 minutes on 2 cores)
#
# The U-Net's attention three ways on the Table 6 model (random weights): the plain graph
# (MatMul → Softmax → MatMul per head), ONNX Runtime's fused com.microsoft.MultiHeadAttention, and the
# project's ai.rapid::FlashAttention. The three model directories differ only in unet/ (the fused ones
# are written by deploy/export/fuse_attention.py and link every other part), and one process loads
# all three and calls them in turn (worker/engine/examples/unet_timing.rs): batch 2, 32×32 latent,
# 32 text tokens, 2 threads, median of CALLS timed calls (default 7) after one warm-up each.
# Writes deploy/bench/attention.json (machine facts + timings); ATTENTION.md reads it by hand.
# Every heavy step holds /tmp/rapid-bench.lock so that it never overlaps another timing run.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
calls=${1:-7}
models=.cache/models
python=.venv-fixtures/bin/python

if [[ ! -e $models/table6/unet/model.onnx ]]; then
  echo "attention.sh: no Table 6 model; run \`make fixtures-env\` and \`$python deploy/export/export_table6.py\`" >&2
  exit 1
fi
for mode in ort rapid; do
  if [[ ! -e $models/table6-$mode/unet/model.onnx ]]; then
    flock /tmp/rapid-bench.lock "$python" deploy/export/fuse_attention.py \
      --model $models/table6 --out $models/table6-$mode --fused $mode
  fi
done

cargo build --release --quiet -p rapid-engine --example unet_timing
timings=$(mktemp)
trap 'rm -f "$timings"' EXIT
flock /tmp/rapid-bench.lock ./target/release/examples/unet_timing --threads 2 --calls "$calls" \
  --batch 2 --latent 32 --tokens 32 --width 768 \
  plain=$models/table6 ort-mha=$models/table6-ort rapid-flash=$models/table6-rapid >"$timings"

library=$(readlink -f .cache/onnxruntime/cpu/libonnxruntime.so)
python3 - "$timings" "$library" >deploy/bench/attention.json <<'PY'
import json, platform, re, subprocess, sys
lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
flags = set(re.search(r"Flags:\s*(.*)", lscpu).group(1).split())
print(json.dumps({
    "machine": {
        "cpu": re.search(r"Model name:\s*(.*)", lscpu).group(1).strip(),
        "cores": int(re.search(r"^CPU\(s\):\s*(\d+)", lscpu, re.M).group(1)),
        "avx2": "avx2" in flags, "fma": "fma" in flags,
        "avx512": sorted(f for f in flags if f.startswith("avx512")),
        "onnxruntime": sys.argv[2].rsplit("libonnxruntime.so.", 1)[-1],
        "kernel": platform.release(),
    },
    "timing": json.load(open(sys.argv[1])),
}, indent=2))
PY
python3 - <<'PY'
import json
r = json.load(open("deploy/bench/attention.json"))
base = r["timing"]["variants"][0]["median_s"]
for v in r["timing"]["variants"]:
    print(f"{v['name']:12} median {v['median_s']:.3f} s  min {v['min_s']:.3f} s  "
          f"speed-up {base / v['median_s']:.3f}x  max|diff| vs plain {v['max_abs_diff_vs_first']:.1e}")
PY
