"""Run with: make bench-startup   (or python3 deploy/bench/startup/startup.py [--rounds 2])

How long a worker takes from start until it is ready for its first job, on the Table 6 model
(random weights), 2 threads: `rapid-worker generate --warm-up --timings` with one step. Per
configuration:

- `load`: creating the sessions (the command's wall time minus the warm-up and the image's stages);
- `warm_up`: one step at 256 px, the VAE, and one ESRGAN call on the 136-px tile shape, as
  `worker.warm_up` does before the first job;
- `ready`: the two together.

Configurations: the CPU provider without a session cache, with an empty cache (the first start
writes the optimized graphs), with a filled cache (every later start), and the U-Net and ESRGAN on
OpenVINO (the mix ../throughput/THROUGHPUT.md found fastest on Zen 5) without and with a filled
cache (the cache then covers the text encoder and the VAE, which stay on the CPU provider).
Rounds take turns through the configurations; medians are reported.

Writes deploy/bench/startup/startup.json. Holds /tmp/rapid-bench.lock while timing. Needs the Table 6
model and `bash deploy/setup.sh --openvino`.
"""

import argparse
import shutil
import tempfile
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "common"))  # machine.py, worker_run.py
from machine import cpu_model, isa  # noqa: E402
from worker_run import commit, generate, medians, pipeline_ms, prepare, save  # noqa: E402

STAGES = ["load", "warm_up", "ready"]
OPENVINO_MIX = ["--part-provider", "unet=openvino", "--part-provider", "upscaler=openvino"]


def run_once(arguments, tmp):
    stages, wall_ms = generate(1, 2, Path(tmp), ["--warm-up", *arguments])
    load = wall_ms - pipeline_ms(stages) - stages["warm_up"]
    return {"load": load, "warm_up": stages["warm_up"], "ready": load + stages["warm_up"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    prepare("startup.py")
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "sessions"
        filled = ["--session-cache", str(cache)]
        # Untimed: puts the 3.4 GB of U-Net weights in the page cache for every configuration alike.
        run_once([], tmp)
        for round_ in range(args.rounds):
            shutil.rmtree(cache, ignore_errors=True)
            configurations = {
                "cpu": [],
                "cpu, empty cache (first start)": filled,
                "cpu, filled cache": filled,
                "cpu + openvino unet and upscaler": OPENVINO_MIX,
                "cpu + openvino unet and upscaler, filled cache": OPENVINO_MIX + filled,
            }
            for name, arguments in configurations.items():
                run = run_once(arguments, tmp)
                runs.setdefault(name, []).append(run)
                print(f"round {round_ + 1}/{args.rounds} {name:48} " +
                      "  ".join(f"{stage} {run[stage]:7.0f}" for stage in STAGES), flush=True)
            cache_bytes = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file())
    results = medians(runs, STAGES)
    report = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "isa": isa(), "commit": commit(),
              "model": "Table 6, random weights", "threads": 2, "rounds": args.rounds, "unit": "ms",
              "cache_gib": round(cache_bytes / 2**30, 2), "results": results, "runs": runs}
    save(report, "startup/startup.json", STAGES)
    print(f"session cache: {report['cache_gib']} GiB")


if __name__ == "__main__":
    main()
