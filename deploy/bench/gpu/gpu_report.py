"""Run with: python3 deploy/bench/gpu/gpu_report.py RESULTS_DIR [RESULTS_DIR ...]

Turns what deploy/bench/gpu/gpu.sh left in each RESULTS_DIR (gpu.json, cuda-tests.txt, tensorrt.txt:
its $OUT) into deploy/bench/gpu/gpu.json (all of it, kept) and deploy/bench/gpu/GPU.md (a table per run,
beside the paper's A100 figures from Table 3).
"""

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
# The paper's Table 3 (NVIDIA A100 80GB, 50 steps, 256 → 1024): U-Net is its 50-step total.
PAPER = {
    "Torch Native (paper, A100)": {"text_encoder": 0.012, "unet_50": 1900, "vae": 0.04, "upscale": 54.5, "total": 3129},
    "Rapid Diffusion w/o FA (paper, A100)": {"text_encoder": 0.004, "unet_50": 994, "vae": 0.02, "total": 2042},
    "Rapid Diffusion w/ FA (paper, A100)": {"unet_50": 759, "total": 1807},
}


def cell(value, digits=1):
    return "–" if value is None else f"{value:.{digits}f}"


def run_table(run, number):
    rows, calls = run["rows"], run["unet_calls"]
    lines = [
        f"## Run {number}: {run['gpu']}",
        "",
        f"PyTorch {run['torch']} (CUDA {run['cuda']}), {run['steps']} PNDM steps ({calls} U-Net calls); worker "
        f"rows are the median of {max(len(r.get('runs', [])) for r in rows.values()) if rows else 0} run(s).",
        "",
        f"| configuration | text encoder | U-Net / call | U-Net × {calls} | VAE | ESRGAN | total | worker marking + PNG |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        marking = row["mark"] + row["encode"] if "mark" in row else None
        lines.append(f"| {name} | {cell(row['text_encoder'], 2)} | {cell(row['unet_per_step'])} | "
                     f"{cell(calls * row['unet_per_step'], 0)} | {cell(row['vae'])} | {cell(row['upscale'])} | "
                     f"{cell(row['total'], 0)} | {cell(marking, 0)} |")
    for name, row in PAPER.items():
        lines.append(f"| {name} | {cell(row.get('text_encoder'), 3)} | – | {cell(row.get('unet_50'), 0)} | "
                     f"{cell(row.get('vae'), 2)} | {cell(row.get('upscale'))} | {cell(row['total'], 0)} | – |")
    lines += ["", "Speed-ups (total, PyTorch time ÷ worker time; the paper's was 1.73× on an A100):", ""]
    for name, row in rows.items():
        if name.startswith("worker"):
            for dtype in ["fp32", "fp16"]:
                peer = rows.get(f"pytorch eager {dtype}")
                if peer:
                    lines.append(f"- {name} against PyTorch eager {dtype}: **{peer['total'] / row['total']:.2f}×** "
                                 f"(U-Net call {peer['unet_per_step'] / row['unet_per_step']:.2f}×)")
    if run.get("errors"):
        lines += ["", "Rows that could not run: " + "; ".join(f"{k}: {v}" for k, v in run["errors"].items())]
    return lines


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: gpu_report.py RESULTS_DIR [RESULTS_DIR ...]  (each as deploy/bench/gpu/gpu.sh left it)")
    runs, tests, trt = [], [], []
    for directory in map(Path, sys.argv[1:]):
        if (directory / "gpu.json").exists():
            run = json.loads((directory / "gpu.json").read_text())
            run["source"] = directory.name
            runs.append(run)
        for name, into in [("cuda-tests.txt", tests), ("tensorrt.txt", trt)]:
            if (directory / name).exists():
                into.append((directory / name).read_text().strip().splitlines())
    (ROOT / "deploy/bench/gpu/gpu.json").write_text(json.dumps(
        {"runs": runs, "cuda_tests": tests, "tensorrt": trt}, indent=1) + "\n")

    lines = [
        "# GPU benchmark (issue 4, item 6)",
        "",
        "Written by `deploy/bench/gpu/gpu_report.py` from what `deploy/bench/gpu/gpu.sh` measured; the reading is in "
        "GPU-NOTES.md. ONNX Runtime 1.31.1 (onnxruntime-gpu wheel, CUDA provider, default options). Table 6 "
        "model with **random weights** (`deploy/export/weightless.py`), one image, 256 → 1024 px. All times in ms, "
        "warm (the worker ran `--warm-up`; PyTorch ran each stage once before the median of 10 calls). ESRGAN "
        "ran on the whole image on both sides. Total = text encoder + U-Net calls + VAE + ESRGAN: marking and "
        "PNG encoding run on the CPU and are outside the paper's figures (the worker's are listed apart).",
        "",
        "Configurations: `worker fp32` runs the exported graphs; `worker fp32-fused` has the U-Net's attention "
        "as `com.microsoft.MultiHeadAttention` (`fuse_attention.py --fused ort`); `worker fp16-fused` is that "
        "U-Net and ESRGAN in fp16 (`deploy/export/fp16.py`, fp32 at the graphs' edges); `worker fp16` the same "
        "without the attention fusion. PyTorch rows are "
        "diffusers' modules on the same configs with its default attention (`scaled_dot_product_attention`).",
        "",
    ]
    for number, run in enumerate(runs, 1):
        lines += run_table(run, number) + [""]
    summary = [line for line in (tests[-1] if tests else []) if line.startswith("test result") or "cuda" in line]
    lines += ["## CUDA flash-attention kernel", "",
              f"`rapid_engine-tests attention::` on the GPU, {len(tests)} time(s); the last:", "", "```",
              *summary, "```"]
    errors = [line for line in (trt[-1] if trt else []) if re.search(r"error|TensorRT|tensorrt", line)]
    lines += ["", "## TensorRT", "", "`rapid-worker generate --execution-provider tensorrt` on that machine:", "",
              "```", *errors[-5:], "```", ""]
    (ROOT / "deploy/bench/gpu/GPU.md").write_text("\n".join(lines))
    print("wrote deploy/bench/gpu/GPU.md and deploy/bench/gpu/gpu.json")


if __name__ == "__main__":
    main()
