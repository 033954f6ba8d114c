#!/usr/bin/env bash
# Run with: bash deploy/bench/attention/attention.sh [CALLS]     (from anywhere; about 5 minutes on 2 cores)
#
# The U-Net's attention three ways on the Table 6 model (random weights): the plain graph
# (MatMul → Softmax → MatMul per head), ONNX Runtime's fused com.microsoft.MultiHeadAttention, and the
# project's ai.rapid::FlashAttention. The three model directories differ only in unet/ (the fused ones
# are written by deploy/export/fuse_attention.py and link every other part), and one process loads
# all three and calls them in turn (deploy/bench/common/unet_variants.sh): batch 2, 32×32 latent, 32 text
# tokens, 2 threads, median of CALLS timed calls (default 7) after one warm-up each.
# Writes deploy/bench/attention/attention.json (machine facts + timings); ATTENTION.md reads it by hand.
# Every heavy step holds /tmp/rapid-bench.lock so that it never overlaps another timing run.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
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

bash deploy/bench/common/unet_variants.sh deploy/bench/attention/attention.json "$calls" \
  plain=$models/table6 ort-mha=$models/table6-ort rapid-flash=$models/table6-rapid
