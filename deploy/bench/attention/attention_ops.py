"""Run with: .venv-fixtures/bin/python deploy/bench/attention/attention_ops.py   (after attention.sh)

Where the U-Net's time goes, per operator type, for the plain graph and the `--fused ort` graph of the
Table 6 model, from ONNX Runtime's own profiler (batch 2, 32×32 latent, 32 tokens, 2 threads; the
first of 4 calls is dropped as warm-up). "attention core" is every node of an attention block other
than its four projections (the head-split reshapes and transposes, the scale, both batched MatMuls and
the Softmax; in the fused graph, the MultiHeadAttention node), so the two graphs' attention compare
directly. Python's ONNX Runtime cannot load the project's `ai.rapid` operator, so that variant is
timed at the U-Net level only (attention.sh).
"""

import collections
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unet-ops"))  # unet_ops.py
from unet_ops import timed_calls  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
MODELS = ROOT / ".cache/models"
CALLS = 4


def profile(model: Path, prefix: str) -> dict:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.enable_profiling = True
    options.profile_file_prefix = prefix
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {
        "sample": rng.standard_normal((2, 4, 32, 32)).astype(np.float32),
        "timestep": np.array([500, 500], dtype=np.int64),
        "encoder_hidden_states": rng.standard_normal((2, 32, 768)).astype(np.float32),
    }
    for _ in range(CALLS):
        session.run(None, feeds)
    path = session.end_profiling()
    runs, nodes = timed_calls(json.loads(Path(path).read_text()), path)
    per_op = collections.Counter()
    for e in nodes:
        per_op[e["args"]["op_name"]] += e["dur"]
        name = e["name"]
        if ("/attn1/" in name or "/attn2/" in name) and not any(p in name for p in ("to_q", "to_k", "to_v", "to_out")):
            per_op["attention core"] += e["dur"]
    timed = len(runs)
    return {
        "run_ms": [round(r["dur"] / 1000) for r in runs],
        "ms_per_call": {op: round(us / 1000 / timed, 1) for op, us in per_op.most_common(8)},
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        report = {name: profile(MODELS / directory / "unet/model.onnx", f"{tmp}/{name}")
                  for name, directory in [("plain", "table6"), ("ort-mha", "table6-ort")]}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
