"""One `rapid-worker generate --timings` image of the Table 6 model, run the way the bench scripts
time the worker. Standard library only, so the system Python (providers.py) and the virtual
environments (bench.py) import the same code."""

import json
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / ".cache/models/table6"
BINARY = ROOT / "target/release/rapid-worker"
PROMPT = "一件红色的丝绸连衣裙，白色纽扣，摄影棚照片"
# The generation itself; the rest of a command's time is loading the model.
PIPELINE_KEYS = ["tokenize", "text_encoder", "unet_total", "vae", "upscale", "mark", "encode"]


def build():
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "rapid-worker"], cwd=ROOT, check=True)


def generate(steps, threads, work: Path, extra_args=()):
    """One image, seed 1; returns the worker's stage timings (ms) and the command's wall time (ms)."""
    timings = work / "timings.json"
    started = time.perf_counter()
    subprocess.run([str(BINARY), "generate", "--model", str(MODEL), "--prompt", PROMPT, "--steps", str(steps),
                    "--seed", "1", "--threads", str(threads), "--timings", str(timings), "--out", str(work / "x.png"),
                    *extra_args], check=True, stdout=subprocess.DEVNULL)
    return json.loads(timings.read_text()), (time.perf_counter() - started) * 1e3


def pipeline_ms(stages):
    return sum(stages[key] for key in PIPELINE_KEYS)
