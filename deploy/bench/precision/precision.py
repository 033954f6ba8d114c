"""Run with: make bench-precision   (or .venv-fixtures/bin/python deploy/bench/precision/precision.py [--rounds 2] [--steps 50])

What `precision = "bf16"` buys and costs on this CPU: one warm image of the Table 6 model (random
weights), 50 PNDM steps, 256 → 1024 px, 2 threads, every part on OpenVINO and ESRGAN on the whole
image, in fp32 and in bf16, taking turns round by round; medians reported. The images of the first
round (same seed, same prompt) are compared pixel by pixel: the largest and mean difference in
levels of 255 and the PSNR of bf16 against fp32. On random weights an image is noise, so this
states how far bf16 moves the numbers, not how a trained model's picture looks; the tiny models'
distance to diffusers' fp32 references is checked by `worker/engine/tests/openvino.rs`.

Writes deploy/bench/precision/precision.json. Holds /tmp/rapid-bench.lock while timing. Needs the
Table 6 model, `bash deploy/setup.sh --openvino` and a CPU with avx512_bf16 or amx_bf16.
"""

import argparse
import json
import tempfile
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "common"))  # machine.py, worker_run.py
from machine import cpu_model, isa  # noqa: E402
from worker_run import commit, generate, medians, pipeline_ms, prepare, save  # noqa: E402

STAGES = ["text_encoder", "unet_per_step", "vae", "upscale", "total"]
ON_OPENVINO = ["--execution-provider", "openvino", "--tile-size", "0", "--warm-up"]
CONFIGURATIONS = {"openvino fp32": ON_OPENVINO, "openvino bf16": ON_OPENVINO + ["--precision", "bf16"]}


def difference(a: Path, b: Path) -> dict:
    x = np.asarray(Image.open(a).convert("RGB"), dtype=np.float64)
    y = np.asarray(Image.open(b).convert("RGB"), dtype=np.float64)
    error = np.abs(x - y)
    mse = float(np.mean(error ** 2))
    return {"max_levels": float(error.max()), "mean_levels": round(float(error.mean()), 3),
            "psnr_db": round(10 * np.log10(255.0 ** 2 / mse), 2) if mse else None}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    prepare("precision.py")
    runs = {name: [] for name in CONFIGURATIONS}
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        images = {}
        for round_number in range(args.rounds):
            for name, arguments in CONFIGURATIONS.items():
                work = Path(tmp) / f"{name.replace(' ', '-')}-{round_number}"
                work.mkdir()
                stages, _ = generate(args.steps, 2, work, arguments)
                runs[name].append({**{stage: stages[stage] for stage in STAGES[:-1]}, "total": pipeline_ms(stages)})
                images.setdefault(name, work / "x.png")
                print(f"round {round_number + 1}, {name}: {runs[name][-1]['total'] / 1e3:.1f} s", flush=True)
        compared = difference(images["openvino fp32"], images["openvino bf16"])
    report = {
        "machine": {"cpu": cpu_model(), "isa": isa(), "threads": 2}, "commit": commit(), "steps": args.steps,
        "rounds": args.rounds, "minutes": round((time.time() - started) / 60, 1), "runs": runs,
        "results": medians(runs, STAGES), "bf16_against_fp32": compared,
    }
    save(report, "precision/precision.json", STAGES)
    print(json.dumps(compared))


if __name__ == "__main__":
    main()
