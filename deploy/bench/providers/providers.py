"""Run with: make bench-providers   (or python3 deploy/bench/providers/providers.py [--rounds 3] [--steps 10])

Which execution provider should each part of the worker use on this CPU? Times one image of the
Table 6 model (random weights), 256 → 1024 px, 2 threads, with `rapid-worker generate --timings`
under each configuration below: every part on ONNX Runtime's CPU provider (its own library), every
part on OpenVINO, and the CPU provider with only ESRGAN on OpenVINO (`--part-provider
upscaler=openvino`, both from the `onnxruntime-openvino` library), each with ESRGAN in 128-px tiles
and whole; and the U-Net and ESRGAN on OpenVINO, the mix that serves a backlog fastest
(../throughput/THROUGHPUT.md). Configurations take turns round by round, so a slow minute on this
shared machine hits them all alike; medians are reported.

One process per image, as a restarted worker would be: each run pays session creation and every
first call (deploy/bench/openvino/openvino.py times warm calls). `load` is the command's wall time
minus the pipeline's stages. One untimed run first puts the model files in the page cache.

Writes deploy/bench/providers/providers.json. Holds /tmp/rapid-bench.lock while timing. Needs the
Table 6 model and `bash deploy/setup.sh --openvino`.
"""

import argparse
import tempfile
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "common"))  # machine.py, worker_run.py
from machine import cpu_model, isa  # noqa: E402
from worker_run import commit, generate, medians, pipeline_ms, prepare, save  # noqa: E402

STAGES = ["text_encoder", "unet_per_step", "vae", "upscale", "load", "total"]
UPSCALER_ON_OPENVINO = ["--part-provider", "upscaler=openvino"]
WHOLE = ["--tile-size", "0"]


CONFIGURATIONS = {
    "cpu": [],
    "cpu, whole": WHOLE,
    "openvino": ["--execution-provider", "openvino"],
    "openvino, whole": ["--execution-provider", "openvino"] + WHOLE,
    "cpu + openvino upscaler": UPSCALER_ON_OPENVINO,
    "cpu + openvino upscaler, whole": UPSCALER_ON_OPENVINO + WHOLE,
    "cpu + openvino unet and upscaler": ["--part-provider", "unet=openvino"] + UPSCALER_ON_OPENVINO,
}


def run_once(arguments, steps, tmp):
    stages, wall_ms = generate(steps, 2, Path(tmp), arguments)
    return {"text_encoder": stages["text_encoder"], "unet_per_step": stages["unet_per_step"], "vae": stages["vae"],
            "upscale": stages["upscale"], "load": wall_ms - pipeline_ms(stages), "total": wall_ms}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    prepare("providers.py")
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        # Untimed: the first process after an export or a reboot reads 3.4 GB of U-Net weights from
        # disk, which would land in the first configuration's `load` alone.
        run_once([], 1, tmp)
        for round_ in range(args.rounds):
            for name, arguments in CONFIGURATIONS.items():
                run = run_once(arguments, args.steps, tmp)
                runs.setdefault(name, []).append(run)
                print(f"round {round_ + 1}/{args.rounds} {name:38} " +
                      "  ".join(f"{stage} {run[stage]:7.0f}" for stage in STAGES), flush=True)
    results = medians(runs, STAGES)
    report = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "avx512": isa() == "AVX-512", "commit": commit(),
              "model": "Table 6, random weights", "threads": 2, "steps": args.steps, "rounds": args.rounds,
              "unit": "ms", "results": results, "runs": runs}
    save(report, "providers/providers.json", STAGES)


if __name__ == "__main__":
    main()
