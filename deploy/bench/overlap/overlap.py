"""Run with: make bench-overlap   (or python3 deploy/bench/overlap/overlap.py [--jobs 12] [--steps 10]
                                                  [--size 256] [--threads 1 2] [--rounds 2]
                                                  [--provider cpu] [--model DIR] [--scheduler BIN] [--out DIR])

Images per second of one worker under a backlog, with each group's marking, PNG encoding, upload and
acknowledgement done in turn (`worker.overlap_finishing = 0`) and beside the next group's
generation (`= 1`, the default).

On a GPU worker the engine's time is the GPU's and that CPU work is the host's: in the H100 runs
(deploy/bench/gpu/GPU.md) marking and encoding a 1024-px image took 423–556 ms, as long as the
generation. No GPU is needed to show the effect: with `--threads 1` ONNX Runtime computes on one
core, standing in for the GPU, and the other core is the host's. `--threads 2` is the CPU worker
as deployed (ONNX Runtime on every core), to show what overlapping costs where both halves want the
same cores.

The model is the bundled `models/rapid-mini`, asked for `--size` px (256 by default: 1024 px after
ESRGAN, the size of the H100 runs' images). Its pictures at that size are not what it was trained
for; only the times matter here. Each setting is one `rapid-scheduler standalone` process (the
real planner, queue, consumer and engine) given one request of `--jobs` images before the first
starts; the rate counts from the first job's start to the last job's success. The settings run in
turns, `--rounds` times, so that the machine's drift falls on both.

On a GPU machine (deploy/bench/gpu/gpu.sh, step `overlap`) the same comparison runs with
`--provider cuda` on the Table 6 model, where the engine's time is the GPU's.

Writes overlap.json and OVERLAP.md (with NOTES.md appended) into --out (deploy/bench/overlap/ by
default). Standard library only.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "common"))  # machine.py, standalone.py
import standalone  # noqa: E402
from machine import cpu_model, isa  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
HERE = ROOT / "deploy/bench/overlap"
MODEL = ROOT / "models/rapid-mini"
SCHEDULER = ROOT / "target/release/rapid-scheduler"
PROMPT = "a crimson silk evening dress with white dots"
STAGES = ["unet_total", "vae", "upscale", "mark", "encode"]


def config(args, output_dir: Path, port: int, threads: int, overlap: int) -> str:
    return f"""
[standalone]
workers = 1
output_dir = "{output_dir}"
[scheduler]
listen = "127.0.0.1:{port}"
callback_secret = "bench"
default_model = "bench"
[scheduler.models.bench]
width = {args.size}
height = {args.size}
[worker]
# Named, so that both settings run the same setup (`auto` could choose differently per start).
execution_provider = "{args.provider}"
threads = {threads}
max_batch = 1
overlap_finishing = {overlap}
[worker.models]
bench = "{args.model.resolve()}"
[[tenants]]
name = "bench"
api_key_sha256 = "{standalone.key_hash(args.scheduler)}"
"""


def run_backlog(args, threads: int, overlap: int, work: Path) -> dict:
    """One standalone fleet, one request of `args.jobs` images; its rate and stage medians."""
    port = standalone.free_port()
    name = f"threads-{threads}-overlap-{overlap}"
    config_path = work / f"{name}.toml"
    config_path.write_text(config(args, work / f"out-{name}", port, threads, overlap))
    body = {"prompts": [PROMPT], "images_per_prompt": args.jobs, "steps": args.steps, "seed": 1,
            "sampler": "euler", "upscale": True, "format": "png"}
    _, succeeded, seconds = standalone.backlog(args.scheduler, config_path, port, work / f"{name}.log", body, name,
                                               poll_s=0.5, start_timeout_s=900)
    timings = [dict(e["timings_ms"]) for e in succeeded]
    return {
        "threads": threads,
        "overlap_finishing": overlap,
        "images": len(succeeded),
        "seconds": seconds,
        "images_per_second": len(succeeded) / seconds,
        "stage_ms": {stage: statistics.median(t[stage] for t in timings) for stage in STAGES},
        "load_average_after": round(os.getloadavg()[0], 2),
    }


def write_results(saved: dict, out: Path) -> None:
    rows, summary = [], []
    for threads in saved["threads"]:
        pair = {}
        for overlap in (0, 1):
            runs = [r for r in saved["runs"] if r["threads"] == threads and r["overlap_finishing"] == overlap]
            rates = [r["images_per_second"] for r in runs]
            stages = {s: statistics.median(r["stage_ms"][s] for r in runs) for s in STAGES}
            engine = stages["unet_total"] + stages["vae"] + stages["upscale"]
            finish = stages["mark"] + stages["encode"]
            pair[overlap] = statistics.median(rates)
            rows.append(f"| {threads} | {overlap} | {len(runs)} | {' / '.join(f'{x:.3f}' for x in rates)} | "
                        f"**{statistics.median(rates):.3f}** | {engine:.0f} | {finish:.0f} | "
                        f"{1000 / engine:.3f} | {1000 / (engine + finish):.3f} |")
        summary.append(f"- `threads = {threads}`: overlapping on / off **{pair[1] / pair[0]:.2f}×** images per second "
                       f"({pair[1]:.3f} against {pair[0]:.3f}).")
    text = f"""# Overlapping the CPU work after generation with the next job's generation

Generated by `python3 deploy/bench/overlap/overlap.py --jobs {saved['jobs']} --steps {saved['steps']} --size {saved['size']} --threads {' '.join(map(str, saved['threads']))} --rounds {saved['rounds']} --provider {saved.get('provider', 'cpu')}` on {saved['generated']} UTC.
Machine: {saved['machine']} ({saved['isa']}), {saved['cores']} cores, Python {saved['python']}{', ' + saved['gpu'] if saved.get('gpu') else ''}.
Model: `{saved.get('model', 'models/rapid-mini')}` on `{saved.get('provider', 'cpu')}`, {saved['size']} px → {saved['size'] * 4} px with ESRGAN, {saved['steps']} Euler
steps, guidance 4, PNG, `max_batch = 1`. One `rapid-scheduler standalone` process per run, a backlog of
{saved['jobs']} images; the settings ran in turns. `threads` is ONNX Runtime's; with 1 it stands in for a
GPU (the engine on one core, the host's work on the other).

| threads | overlap_finishing | runs | images/s per run | images/s (median) | engine ms per image (U-Net + VAE + ESRGAN) | mark + encode ms per image | engine-bound images/s | in-turn bound images/s |
|---:|---:|---:|---|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

{chr(10).join(summary)}

"Engine-bound" is what the engine alone allows (1 / its time per image); "in-turn bound" what doing
the finishing after it allows (1 / both). Stage times are medians of the jobs' own timings; with
both halves on the same cores they include the time each waited for the other.
"""
    notes = out / "NOTES.md"
    if notes.exists():
        text += "\n" + notes.read_text()
    (out / "OVERLAP.md").write_text(text)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--jobs", type=int, default=12, help="images in the backlog")
    parser.add_argument("--steps", type=int, default=10, help="Euler steps per image")
    parser.add_argument("--size", type=int, default=256, help="generated side in px, before ESRGAN ×4")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="ONNX Runtime threads to compare")
    parser.add_argument("--rounds", type=int, default=2, help="turns of every setting")
    parser.add_argument("--provider", default="cpu", help="the worker's execution_provider (cuda on a GPU)")
    parser.add_argument("--model", type=Path, default=MODEL, help="model directory (default: the bundled one)")
    parser.add_argument("--scheduler", type=Path, default=SCHEDULER, help="rapid-scheduler binary")
    parser.add_argument("--out", type=Path, default=HERE, help="folder for overlap.json and OVERLAP.md")
    parser.add_argument("--report-only", action="store_true", help="rewrite OVERLAP.md from overlap.json")
    args = parser.parse_args()
    if args.report_only:
        write_results(json.loads((args.out / "overlap.json").read_text()), args.out)
        return
    if not args.scheduler.exists():
        sys.exit(f"{args.scheduler} is missing: run `cargo build --release -p rapid-scheduler`")
    runs = []
    with tempfile.TemporaryDirectory(prefix="rapid-overlap-") as work:
        for round_index in range(args.rounds):
            for threads in args.threads:
                for overlap in (0, 1):
                    run = run_backlog(args, threads, overlap, Path(work))
                    print(f"round {round_index + 1}: threads {threads}, overlap {overlap}: "
                          f"{run['images_per_second']:.3f} images/s", flush=True)
                    runs.append(run)
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                         text=True).stdout.strip() if shutil.which("nvidia-smi") else ""
    model = args.model.resolve()
    saved = {"jobs": args.jobs, "steps": args.steps, "size": args.size, "threads": args.threads,
             "provider": args.provider, "gpu": gpu,
             "model": str(model.relative_to(ROOT)) if model.is_relative_to(ROOT) else str(model),
             "rounds": args.rounds, "generated": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
             "machine": cpu_model(), "isa": isa(), "cores": os.cpu_count(), "python": platform.python_version(),
             "runs": runs}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "overlap.json").write_text(json.dumps(saved, indent=2) + "\n")
    write_results(saved, args.out)


if __name__ == "__main__":
    main()
