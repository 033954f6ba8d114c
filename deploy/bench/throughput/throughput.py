"""Run with: make bench-throughput   (or python3 deploy/bench/throughput/throughput.py [--jobs 4] [--steps 10]
                                                                          [--providers cpu upscaler=openvino])

Images per hour of one worker under a steady backlog, with cross-request batching off
(`max_batch = 1`) and on (`max_batch = --jobs`), on the paper's Table 6 model (random weights;
`deploy/export/export_table6.py`), 256 → 1024 px, fp32, 2 threads. `--providers` repeats both modes
for each worker provider mix: `cpu`, or `worker.part_providers` overrides such as
`unet=openvino,upscaler=openvino` (those need `bash deploy/setup.sh --openvino`). A mix may also
set the worker's ESRGAN tile and precision, e.g.
`unet=openvino,vae_decoder=openvino,upscaler=openvino,upscale_tile=0,precision=bf16`, and the model
directory the worker runs under the name `table6`, e.g. `model=.cache/models/table6-winograd` (the
Winograd rewrite, deploy/export/winograd.py).

Each mode runs the real fleet code in one process (`rapid-scheduler standalone`: API, planner,
in-memory queue and state, the worker's consumer, local folder for the bucket). All jobs are
submitted before the first one starts, so the worker never waits for work; the rate is the jobs
done between the first `started` event and the last `succeeded` event of the request's event log.

A full 50-step backlog takes about an hour on 2 cores, so the backlog runs `--steps` steps (10 by
default) and the 50-step rate is extrapolated from the same runs' per-stage timings (the U-Net per
call from the run, the per-image stages as measured), which the results file says.
Writes deploy/bench/throughput/THROUGHPUT.md and throughput.json. Standard library only.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "common"))  # machine.py
import standalone  # noqa: E402
from machine import cpu_model, isa  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
MODEL = ROOT / ".cache/models/table6"
SCHEDULER = ROOT / "target/release/rapid-scheduler"
PROMPTS = ["一件红色的丝绸连衣裙，白色纽扣，摄影棚照片", "a linen summer shirt, studio photo"]
PER_IMAGE_STAGES = ["tokenize", "text_encoder", "vae", "upscale", "mark", "encode"]


def worker_settings(providers: str) -> str:
    """`upscaler=openvino,unet=openvino,upscale_tile=0,precision=bf16` → `[worker]` lines: the TOML
    inline table of `worker.part_providers`, and `upscale_tile` and `precision` when the mix sets them.
    `cpu` (every part on the CPU provider) and `model=DIR` (`model_dir`) add no line here."""
    pairs = [pair.split("=", 1) for pair in providers.split(",") if pair != "cpu"]
    pairs = [(key, value) for key, value in pairs if key != "model"]
    settings = {"upscale_tile": lambda value: str(int(value)), "precision": lambda value: f'"{value}"'}
    parts = [(part, provider) for part, provider in pairs if part not in settings]
    # Named, not `auto`: each mix is the setup under test (and `auto` refuses part_providers).
    lines = ['execution_provider = "cpu"',
             "part_providers = { " + ", ".join(f'{part} = "{provider}"' for part, provider in parts) + " }"]
    return "\n".join(lines + [f"{key} = {settings[key](value)}" for key, value in pairs if key in settings])


def model_dir(providers: str) -> Path:
    """The mix's `model=DIR` (relative to the repository), or the plain Table 6 export."""
    chosen = [value for key, value in (pair.split("=", 1) for pair in providers.split(",") if "=" in pair)
              if key == "model"]
    return ROOT / chosen[-1] if chosen else MODEL


def config(output_dir: Path, port: int, max_batch: int, providers: str) -> str:
    return f"""
[standalone]
workers = 1
output_dir = "{output_dir}"
[scheduler]
listen = "127.0.0.1:{port}"
callback_secret = "bench"
default_model = "table6"
[scheduler.models.table6]
width = 256
height = 256
[worker]
threads = 2
max_batch = {max_batch}
batch_window_ms = 20
{worker_settings(providers)}
[worker.models]
table6 = "{model_dir(providers)}"
[[tenants]]
name = "bench"
api_key_sha256 = "{standalone.key_hash(SCHEDULER)}"
"""


def run_backlog(jobs: int, steps: int, max_batch: int, providers: str, work: Path) -> dict:
    """One standalone fleet, one request of `jobs` images; returns its event-log measurements."""
    port = standalone.free_port()
    name = f"batch-{max_batch}-{providers.replace('=', '-').replace(',', '_').replace('/', '_')}"
    config_path = work / f"{name}.toml"
    config_path.write_text(config(work / f"out-{name}", port, max_batch, providers))
    per_prompt = jobs // len(PROMPTS)
    body = {"prompts": PROMPTS, "images_per_prompt": per_prompt, "steps": steps, "seed": 1,
            "sampler": "pndm", "upscale": True}
    view, succeeded, seconds = standalone.backlog(SCHEDULER, config_path, port, work / f"{name}.log", body,
                                                  f"max_batch {max_batch}", poll_s=2)
    timings = [dict(e["timings_ms"]) for e in succeeded]
    return {
        "providers": providers,
        "max_batch": max_batch,
        "jobs": len(succeeded),
        "batch_sizes": sorted(j["batch_size"] for j in view["jobs"]),
        "seconds": seconds,
        "images_per_hour": len(succeeded) * 3600 / seconds,
        # A batch's U-Net calls carry every member: per image, a call costs unet_per_step / batch.
        "unet_call_ms_per_image": statistics.median(
            t["unet_per_step"] / j["batch_size"] for t, j in zip(timings, view["jobs"])),
        "per_image_ms": {stage: statistics.median(t[stage] for t in timings) for stage in PER_IMAGE_STAGES},
        # Other work on the machine during the run skews the rate; the 1-minute load shows it.
        "load_average_after": round(os.getloadavg()[0], 2),
    }


def extrapolate(run: dict, calls: int) -> float:
    """Images per hour at `calls` U-Net calls per image: the same per-image stages, more calls."""
    per_image_ms = sum(run["per_image_ms"].values()) + calls * run["unet_call_ms_per_image"]
    return 3600e3 / per_image_ms


def write_results(runs: list, args, generated=None, machine=None) -> None:
    """`generated` and `machine` are given when rewriting a saved run, which may come from another machine."""
    calls_measured, calls_full = args.steps + 1, 51  # PNDM: N steps are N + 1 U-Net calls
    rows = []
    for run in runs:
        rows.append(
            f"| {run.get('providers', 'cpu')} | {run['max_batch']} | {run['jobs']} | {run['batch_sizes']} | {run['load_average_after']} | {run['seconds']:.1f} | "
            f"{run['images_per_hour']:.1f} | {run['unet_call_ms_per_image']:.0f} | "
            f"{sum(run['per_image_ms'].values()):.0f} | {extrapolate(run, calls_full):.1f} |")
    gains = []
    for index in range(0, len(runs), 2):
        off, on = runs[index:index + 2]
        gain = on["images_per_hour"] / off["images_per_hour"]
        gain_full = extrapolate(on, calls_full) / extrapolate(off, calls_full)
        unet_gain = off["unet_call_ms_per_image"] / on["unet_call_ms_per_image"]
        gains.append(f"- `{off.get('providers', 'cpu')}`: batching on / off **{gain:.2f}×** images per hour at "
                     f"{args.steps} steps (measured), **{gain_full:.2f}×** at 50 steps (extrapolated); the U-Net "
                     f"alone does **{unet_gain:.2f}×** more image-steps per second batched.")
    generated = generated or time.strftime('%Y-%m-%d %H:%M')
    cpu, isa_name = machine or (cpu_model(), isa())
    text = f"""# Throughput: one worker under a steady backlog, cross-request batching off and on

Generated by `python3 deploy/bench/throughput/throughput.py --jobs {args.jobs} --steps {args.steps} --providers {' '.join(args.providers)}{' --name ' + args.name if args.name else ''}` on {generated} UTC.
Machine: {cpu} ({isa_name}), {os.cpu_count()} cores, Python {platform.python_version()}, worker `threads = 2`.
Model: the paper's Table 6 model with **random weights** (`deploy/export/export_table6.py`), 256 → 1024 px
with ESRGAN, PNDM, guidance 7.5, PNG. Each mode is one `rapid-scheduler standalone` process (the real
planner, queue, consumer and engine) given a request of {args.jobs} images ({len(PROMPTS)} prompts) before the
first job starts; the rate counts from the first job's start to the last job's success.

The backlog runs **{args.steps} steps ({calls_measured} U-Net calls)** per image, not 50: a 50-step backlog of
{args.jobs} images takes about an hour here. The last column extrapolates to 50 steps (51 calls) with
the same run's per-image stage times and U-Net time per image per call.

| providers | max_batch | images | batch sizes | load after | backlog time (s) | images/hour ({args.steps} steps, measured) | U-Net ms per image per call | other stages ms per image | images/hour (50 steps, extrapolated) |
|---|---:|---:|---|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

{chr(10).join(gains)}
"""
    stem = f"-{args.name}" if args.name else ""
    notes = ROOT / f"deploy/bench/throughput/THROUGHPUT-NOTES{stem}.md"
    if notes.exists():
        text += "\n" + notes.read_text()
    (ROOT / f"deploy/bench/throughput/THROUGHPUT{stem}.md").write_text(text)
    (ROOT / f"deploy/bench/throughput/throughput{stem}.json").write_text(json.dumps(
        {"steps": args.steps, "jobs": args.jobs, "providers": args.providers, "machine": cpu, "isa": isa_name, "generated": generated, "runs": runs}, indent=2) + "\n")
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--jobs", type=int, default=4, help="images in the backlog (even; one batch when on)")
    parser.add_argument("--steps", type=int, default=10, help="PNDM steps per image in the backlog")
    parser.add_argument("--providers", nargs="+", default=["cpu"],
                        help="worker provider mixes to compare: cpu, or PART=PROVIDER[,PART=PROVIDER]")
    parser.add_argument("--name", default="",
                        help="write THROUGHPUT-NAME.md and throughput-NAME.json (with THROUGHPUT-NOTES-NAME.md)")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite THROUGHPUT.md from throughput.json (after editing THROUGHPUT-NOTES.md)")
    args = parser.parse_args()
    if args.report_only:
        saved = json.loads((ROOT / f"deploy/bench/throughput/throughput{'-' + args.name if args.name else ''}.json").read_text())
        args.steps, args.jobs, args.providers = saved["steps"], saved["jobs"], saved.get("providers", ["cpu"])
        write_results(saved["runs"], args, saved.get("generated"), (saved["machine"], saved["isa"]))
        return
    if not (MODEL / "unet/model.onnx").exists():
        sys.exit(f"{MODEL} is missing: run `make fixtures-env` and "
                 "`.venv-fixtures/bin/python deploy/export/export_table6.py` first")
    if not SCHEDULER.exists():
        sys.exit(f"{SCHEDULER} is missing: run `cargo build --release -p rapid-scheduler -p rapid-worker`")
    if any("openvino" in providers for providers in args.providers) and \
            not (ROOT / ".cache/onnxruntime/openvino/libonnxruntime.so").exists():
        sys.exit("an openvino mix needs the OpenVINO build of ONNX Runtime: run `bash deploy/setup.sh --openvino`")
    for providers in args.providers:
        if not (model_dir(providers) / "unet/model.onnx").exists():
            sys.exit(f"{model_dir(providers) / 'unet/model.onnx'} (from `{providers}`) is missing: export it "
                     "first (deploy/export/export_table6.py, then deploy/export/winograd.py for a rewrite)")
    if args.jobs < 2 or args.jobs % len(PROMPTS):
        sys.exit(f"--jobs must be an even number ≥ 2 (got {args.jobs})")
    with tempfile.TemporaryDirectory(prefix="rapid-throughput-") as work:
        runs = [run_backlog(args.jobs, args.steps, max_batch, providers, Path(work))
                for providers in args.providers for max_batch in (1, args.jobs)]
    write_results(runs, args)


if __name__ == "__main__":
    main()
