"""One `rapid-worker generate --timings` image of the Table 6 model, run the way the bench scripts
time the worker. Standard library only, so the system Python (providers/providers.py) and the virtual
environments (speed/bench.py) import the same code."""

import fcntl
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
MODEL = ROOT / ".cache/models/table6"
BINARY = ROOT / "target/release/rapid-worker"
PROMPT = "一件红色的丝绸连衣裙，白色纽扣，摄影棚照片"
# The generation itself; the rest of a command's time is loading the model.
PIPELINE_KEYS = ["tokenize", "text_encoder", "unet_total", "vae", "upscale", "mark", "encode"]


def build():
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "rapid-worker"], cwd=ROOT, check=True)


def generate(steps, threads, work: Path, extra_args=(), model=MODEL, binary=BINARY):
    """One image, seed 1; returns the worker's stage timings (ms) and the command's wall time (ms)."""
    timings = work / "timings.json"
    started = time.perf_counter()
    subprocess.run([str(binary), "generate", "--model", str(model), "--prompt", PROMPT, "--steps", str(steps),
                    "--seed", "1", "--threads", str(threads), "--timings", str(timings), "--out", str(work / "x.png"),
                    *extra_args], check=True, stdout=subprocess.DEVNULL)
    return json.loads(timings.read_text()), (time.perf_counter() - started) * 1e3


def pipeline_ms(stages):
    return sum(stages[key] for key in PIPELINE_KEYS)


def prepare(script):
    """What the scripts that time the worker on both libraries need first: the Table 6 model, the
    OpenVINO build of ONNX Runtime, a current binary, and /tmp/rapid-bench.lock, held until the
    process exits."""
    if not (MODEL / "unet/model.onnx").exists():
        sys.exit(f"{script}: no Table 6 model; run `make fixtures-env` and "
                 "`.venv-fixtures/bin/python deploy/export/export_table6.py`")
    if not (ROOT / ".cache/onnxruntime/openvino/libonnxruntime.so").exists():
        sys.exit(f"{script}: no OpenVINO build of ONNX Runtime; run `bash deploy/setup.sh --openvino`")
    build()
    lock = open("/tmp/rapid-bench.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    _HELD.append(lock)


_HELD = []  # the bench lock's file, open (so locked) for the life of the process


def medians(runs, stages):
    """Per configuration, the median of each stage over its runs."""
    return {name: {stage: round(statistics.median(run[stage] for run in name_runs), 1) for stage in stages}
            for name, name_runs in runs.items()}


def save(report, file_name, stages):
    """Writes `report` to deploy/bench/`file_name` (the experiment's folder and file, e.g.
    `providers/providers.json`) and prints its medians as a table."""
    out = ROOT / "deploy/bench" / file_name
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\n| configuration | {' | '.join(stages)} |\n|---|{'---:|' * len(stages)}")
    for name, row in report["results"].items():
        print(f"| {name} | " + " | ".join(f"{row[stage]:.0f}" for stage in stages) + " |")
    print(f"wrote {out.relative_to(ROOT)}")


def commit():
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
