#!/usr/bin/env bash
# Run with: bash deploy/bench/common/unet_variants.sh OUT.json CALLS NAME=MODEL_DIR...
#
# One Table 6 U-Net call in several model directories (the plain export and rewrites of it), timed
# in one process (worker/engine/examples/unet_timing.rs, which loads every variant and calls them in
# turn): batch 2, 32×32 latent, 32 text tokens, 2 threads, median of CALLS timed calls after one
# warm-up each; each variant's output is compared with the first's. Writes OUT.json (machine facts +
# timings) and prints a summary. Holds /tmp/rapid-bench.lock while timing. Used by attention/attention.sh
# and winograd/winograd.sh, which make the rewritten copies first.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$root"
out=$1 calls=$2
shift 2

cargo build --release --quiet -p rapid-engine --example unet_timing
timings=$(mktemp)
trap 'rm -f "$timings"' EXIT
flock /tmp/rapid-bench.lock ./target/release/examples/unet_timing --threads 2 --calls "$calls" \
  --batch 2 --latent 32 --tokens 32 --width 768 "$@" >"$timings"

library=$(readlink -f .cache/onnxruntime/cpu/libonnxruntime.so)
python3 - "$timings" "$library" >"$out" <<'PY'
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
python3 - "$out" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
base = r["timing"]["variants"][0]["median_s"]
for v in r["timing"]["variants"]:
    print(f"{v['name']:12} median {v['median_s']:.3f} s  min {v['min_s']:.3f} s  "
          f"speed-up {base / v['median_s']:.3f}x  max|diff| vs {r['timing']['variants'][0]['name']} {v['max_abs_diff_vs_first']:.1e}")
PY
