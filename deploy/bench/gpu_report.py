"""Run with: python3 deploy/bench/gpu_report.py RESULTS_DIR

Turns what deploy/bench/gpu.sh left in RESULTS_DIR (gpu.json, cuda-tests.txt, tensorrt.txt) into
deploy/bench/gpu.json (all of it, kept) and deploy/bench/GPU.md (the table, beside the paper's
A100 figures from Table 3).
"""

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAGES = ["text_encoder", "unet_per_step", "vae", "upscale", "total"]
# The paper's Table 3 (NVIDIA A100 80GB, 50 steps, 256 → 1024): U-Net is its 50-step total.
PAPER = {
    "Torch Native (paper, A100)": {"text_encoder": 0.012, "unet_50": 1900, "vae": 0.04, "upscale": 54.5, "total": 3129},
    "Rapid Diffusion w/o FA (paper, A100)": {"text_encoder": 0.004, "unet_50": 994, "vae": 0.02, "total": 2042},
    "Rapid Diffusion w/ FA (paper, A100)": {"unet_50": 759, "total": 1807},
}


def cell(value, digits=1):
    return "–" if value is None else f"{value:.{digits}f}"


def main():
    results = Path(sys.argv[1])
    report = json.loads((results / "gpu.json").read_text())
    for name in ["cuda-tests.txt", "tensorrt.txt"]:
        path = results / name
        report[name.removesuffix(".txt")] = path.read_text().strip().splitlines() if path.exists() else None
    (ROOT / "deploy/bench/gpu.json").write_text(json.dumps(report, indent=1) + "\n")

    rows = report["rows"]
    calls = report["unet_calls"]
    lines = [
        "# GPU benchmark (issue 4, item 6)",
        "",
        f"Machine: {report['gpu']}; PyTorch {report['torch']} (CUDA {report['cuda']}); ONNX Runtime 1.31.1 "
        "(onnxruntime-gpu wheel). Table 6 model with **random weights** (`deploy/export/weightless.py`); "
        f"{report['steps']} PNDM steps ({calls} U-Net calls), 256 → 1024 px, one image. All times in ms, "
        "warm (each stage run once before it is timed). Regenerate on a GPU machine with `make gpu-payload` "
        "here, then `bash deploy/bench/gpu.sh` there, then `python3 deploy/bench/gpu_report.py RESULTS_DIR`.",
        "",
        f"Total = text encoder + {calls} × U-Net + VAE + ESRGAN (marking and PNG encoding run on the CPU and are "
        "outside the paper's figures; the worker's are listed apart).",
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
    eager = {dtype: rows.get(f"pytorch eager {dtype}") for dtype in ["fp32", "fp16"]}
    speedups = []
    for name, row in rows.items():
        if name.startswith("worker"):
            for dtype, peer in eager.items():
                if peer:
                    speedups.append(f"- {name} against PyTorch eager {dtype}: **{peer['total'] / row['total']:.2f}×** "
                                    f"(U-Net call {peer['unet_per_step'] / row['unet_per_step']:.2f}×)")
    lines += ["", "Speed-ups (total, PyTorch time ÷ worker time; the paper's was 1.73× on an A100):", "", *speedups]
    if report.get("errors"):
        lines += ["", "Rows that could not run: " + "; ".join(f"{k}: {v}" for k, v in report["errors"].items())]
    tests = report.get("cuda-tests") or []
    summary = [line for line in tests if line.startswith("test result") or "cuda" in line]
    lines += ["", "## CUDA flash-attention kernel", "", "`rapid_engine-tests attention::` on this GPU:", "", "```",
              *summary, "```"]
    trt = report.get("tensorrt") or []
    errors = [line for line in trt if re.search(r"error|TensorRT|tensorrt", line)]
    lines += ["", "## TensorRT", "", "`rapid-worker generate --execution-provider tensorrt` on this machine:", "",
              "```", *errors[-5:], "```", ""]
    (ROOT / "deploy/bench/GPU.md").write_text("\n".join(lines))
    print("wrote deploy/bench/GPU.md and deploy/bench/gpu.json")


if __name__ == "__main__":
    main()
