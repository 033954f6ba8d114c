"""Run with: python3 deploy/bench/unet-ops/unet_ops.py [NAME=]PROFILE.json... > OUT.json

Where a U-Net call's time goes, by operator, from the profiles ONNX Runtime writes when
`worker/engine/examples/unet_timing.rs --profile DIR` ends (one file per session). The first call
of each session (the warm-up) is dropped; the rest are averaged. Convolutions are split by kernel
size (`Conv 3x3`, `Conv 1x1`) and the project's `WinogradConv` nodes counted on their own, so a
plain and a rewritten graph compare directly. MatMuls are also split into those against stored
weights (projections, feed-forward) and those between activations (attention scores and values),
with their rate in GFLOP/s, to compare with the machine's GEMM rate. Prints a JSON list, one entry
per profile (unet_timing's profiles are named by part and time, in the order the variants load).
"""

import collections
import json
import math
import sys
from pathlib import Path


def kernel_size(event: dict) -> str:
    shapes = event["args"].get("input_type_shape", [])
    if len(shapes) > 1:
        weight = next(iter(shapes[1].values()))
        if len(weight) == 4:
            return f" {weight[2]}x{weight[3]}"
    return ""


def shape(entry: dict) -> list:
    return next(iter(entry.values()))


def matmul_kind(event: dict) -> str:
    # ONNX Runtime prepacks a constant weight and records no shape for it, so a MatMul against
    # stored weights lists one input.
    return "against weights" if len(event["args"]["input_type_shape"]) < 2 else "between activations"


def timed_calls(events: list, source: str) -> tuple[list, list]:
    """A profile's calls after the first (the warm-up), and the node kernel events inside them.
    Shared with ../attention/attention_ops.py, which profiles sessions of its own."""
    runs = sorted((e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"),
                  key=lambda e: e["ts"])
    if len(runs) < 2:
        raise SystemExit(f"{source}: {len(runs)} call(s) profiled; time at least 2 (the first is the warm-up)")
    nodes = [e for e in events
             if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= runs[1]["ts"]]
    return runs[1:], nodes


def summarize(name: str, path: Path) -> dict:
    runs, nodes = timed_calls(json.loads(path.read_text()), str(path))
    per_op = collections.Counter()
    matmul_us, matmul_flops = collections.Counter(), collections.Counter()
    for e in nodes:
        op = e["args"]["op_name"]
        per_op[op + (kernel_size(e) if op in ("Conv", "FusedConv") else "")] += e["dur"]
        if op == "MatMul":
            a, out = shape(e["args"]["input_type_shape"][0]), shape(e["args"]["output_type_shape"][0])
            matmul_us[matmul_kind(e)] += e["dur"]
            matmul_flops[matmul_kind(e)] += 2 * math.prod(a) * out[-1]
    calls = len(runs)
    nodes_ms = sum(per_op.values()) / 1000 / calls
    return {
        "variant": name,
        "profile": path.name,
        "call_ms": [round(r["dur"] / 1000) for r in runs],
        "nodes_ms_per_call": round(nodes_ms, 1),
        "ms_per_call": {op: round(us / 1000 / calls, 1) for op, us in per_op.most_common()},
        "matmul": {kind: {"ms_per_call": round(us / 1000 / calls, 1),
                          "gflop_per_call": round(matmul_flops[kind] / 1e9 / calls, 1),
                          "gflop_per_s": round(matmul_flops[kind] / us / 1e3)}
                   for kind, us in matmul_us.items()},
    }


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    named = [argument.split("=", 1) if "=" in argument else [argument, argument] for argument in sys.argv[1:]]
    print(json.dumps([summarize(name, Path(path)) for name, path in named], indent=2))
