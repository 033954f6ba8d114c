"""Run with: .venv/bin/python deploy/bench/samplers/samplers.py   [--seeds 8] [--jobs 2] [--binary PATH]

The fewer-step sampler study (issue 4, item 3): how closely DPM-Solver++ 2M, DDIM, Euler and PNDM at
fewer steps follow 50-step PNDM (the product default) on the same seeds, and what the saved U-Net
calls buy on the paper's model.

- Images: `rapid-worker generate` (release binary) on the bundled tiny models, which have RANDOM
  weights; the same seeds, prompts and guidance for every sampler, `--no-upscale` and
  `--no-visible-mark` (the label would otherwise be the same pixels in every image and inflate the
  similarity), one ONNX Runtime thread per run so every run does the same arithmetic.
- Quality: with random weights there is no perceptual quality to measure, so "quality" is the
  distance from a reference on the same seed: PSNR (dB) and mean SSIM on the 8-bit image. That still
  measures what matters here: how closely a solver at N steps follows the probability-flow ODE.
  Two references: 50-step PNDM (what users get today) and a converged solve (DDIM at 500 steps).
- Cost: U-Net calls, read back from each run's timings (unet_total / unet_per_step), converted into
  time on the paper's Table 6 model with the per-call and per-stage times of the worker's 50-step
  PNDM run in deploy/bench/speed/results.json (`make bench`).
Writes deploy/bench/samplers/SAMPLERS.md and samplers.json beside it (keeping SAMPLERS.md's
hand-written section); exits non-zero if a sanity check fails: a rerun that is not bit-identical, a
U-Net call count that is not the sampler's, a "converged" reference that other solvers do not
reach, or DPM++ error that does not fall as steps rise. About 12 minutes on 2 cores; on a shared
machine, wrap it in `flock /tmp/rapid-bench.lock` so it does not disturb timing runs.
"""

import argparse
import hashlib
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "common"))  # machine.py
from machine import cpu_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
HERE = ROOT / "deploy/bench/samplers"
MODELS = ["tiny-sd-clip", "tiny-sd-bert"]
PROMPTS = [
    "a red silk evening dress with white buttons, studio photo",
    "一盘宫保鸡丁，白色瓷盘，俯拍",
]
DPM_STEPS = [10, 15, 20, 25, 30]


@dataclass(frozen=True)
class Config:
    sampler: str
    steps: int
    karras: bool = False

    @property
    def name(self):
        return f"{self.sampler}{' karras' if self.karras else ''} {self.steps}"

    @property
    def slug(self):
        return self.name.replace(" ", "-")

    @property
    def expected_calls(self):
        # PNDM with skip_prk_steps repeats one timestep: N steps are N + 1 U-Net calls.
        return self.steps + 1 if self.sampler == "pndm" else self.steps


REFERENCE = Config("pndm", 50)
CONVERGED = Config("ddim", 500)
# 500-step solves of the other samplers: they show whether each converges to the same image as the
# converged reference (DDIM), or to another one (a different start or end of its noise schedule).
CONVERGENCE_CHECKS = [Config("euler", 500), Config("dpmpp-2m", 500), Config("dpmpp-2m", 500, karras=True)]
CANDIDATES = (
    [Config("dpmpp-2m", n) for n in DPM_STEPS + [50]]
    + [Config("dpmpp-2m", n, karras=True) for n in DPM_STEPS + [50]]
    + [Config("ddim", 20), Config("ddim", 50), Config("euler", 20), Config("euler", 50)]
    + [Config("pndm", 20), Config("pndm", 25)]
)
ALL_CONFIGS = [REFERENCE, CONVERGED] + CONVERGENCE_CHECKS + CANDIDATES


# ---------------------------------------------------------------------------------------------
# Running the worker


def generate(binary, model, prompt, seed, config, out_dir, tag=""):
    """One image from the CLI; returns (uint8 HxWx3 array, U-Net calls it made)."""
    png = out_dir / f"{model}-p{PROMPTS.index(prompt)}-s{seed}-{config.slug}{tag}.png"
    timings = png.with_suffix(".json")
    command = [
        str(binary), "generate", "--model", str(ROOT / "tests/fixtures/models" / model),
        "--prompt", prompt, "--seed", str(seed), "--steps", str(config.steps),
        "--sampler", config.sampler, "--karras-sigmas", str(config.karras).lower(),
        "--no-upscale", "--no-visible-mark", "--threads", "1",
        "--timings", str(timings), "--out", str(png),
    ]  # fmt: skip
    if config.sampler not in ("euler", "dpmpp-2m"):
        del command[command.index("--karras-sigmas") : command.index("--karras-sigmas") + 2]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"samplers: {' '.join(command)} failed:\n{result.stderr}")
    t = json.loads(timings.read_text())
    calls = round(t["unet_total"] / t["unet_per_step"])
    with Image.open(png) as image:
        return np.asarray(image.convert("RGB")), calls


def run_all(binary, seeds, jobs, out_dir):
    """Every (model, prompt, seed, config) image, `jobs` processes at a time."""
    keys = [(m, p, s, c) for m in MODELS for p in PROMPTS for s in seeds for c in ALL_CONFIGS]
    with ThreadPoolExecutor(jobs) as pool:
        results = list(pool.map(lambda k: generate(binary, *k, out_dir), keys))
    return dict(zip(keys, results))


# ---------------------------------------------------------------------------------------------
# Image distances


def psnr(a, b):
    """PSNR in dB over all pixels and channels of two 8-bit images; inf when identical."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def gaussian_filter_valid(x, sigma=1.5, radius=5):
    """Separable Gaussian blur of a 2-D array, 'valid' part only (no padding effects)."""
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    windows = np.lib.stride_tricks.sliding_window_view
    x = windows(x, taps.size, axis=0) @ taps
    return windows(x, taps.size, axis=1) @ taps


def ssim(a, b):
    """Mean SSIM of Wang et al. (2004): 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03, L 255,
    per channel, averaged over the valid windows and the channels. scikit-image is not in the
    project's .venv; this equals its `structural_similarity(channel_axis=2, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=255)` (checked against 0.26 to 1e-15)."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    scores = []
    for ch in range(a.shape[2]):
        x, y = a[..., ch].astype(np.float64), b[..., ch].astype(np.float64)
        mx, my = gaussian_filter_valid(x), gaussian_filter_valid(y)
        vx = gaussian_filter_valid(x * x) - mx * mx
        vy = gaussian_filter_valid(y * y) - my * my
        cxy = gaussian_filter_valid(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        scores.append(s.mean())
    return float(np.mean(scores))


# ---------------------------------------------------------------------------------------------
# Aggregation and the time model


def compare(images, seeds, config, reference):
    """PSNR and SSIM of `config` against `reference` for every model, prompt and seed."""
    pairs = [(m, p, s) for m in MODELS for p in PROMPTS for s in seeds]
    return {
        "psnr": [psnr(images[(m, p, s, config)][0], images[(m, p, s, reference)][0]) for m, p, s in pairs],
        "ssim": [ssim(images[(m, p, s, config)][0], images[(m, p, s, reference)][0]) for m, p, s in pairs],
    }


def summarise(scores):
    """Median and worst over the seeds (and models and prompts): the worst is the lowest."""
    return {k: {"median": statistics.median(v), "worst": min(v)} for k, v in scores.items()}


def time_model(results_json):
    """Predicted generation ms on the paper's model as a function of U-Net calls: the worker's
    per-call U-Net time times the calls, plus its other stages, which do not depend on the sampler."""
    worker = json.loads(results_json.read_text())["results"]["worker"]
    fixed = sum(worker[k] for k in ("text_encoder", "vae", "upscale", "mark_encode"))
    per_call = worker["unet_per_step"]
    return (lambda calls: fixed + calls * per_call), {"unet_per_call_ms": per_call, "other_stages_ms": fixed}


# ---------------------------------------------------------------------------------------------
# Sanity checks: the script must be able to fail


def check_determinism(binary, images, seeds, out_dir):
    """A second 50-step PNDM run of the first seed must give the very same pixels (PSNR inf);
    otherwise every distance below would include run-to-run noise."""
    failures = []
    for m in MODELS:
        for p in PROMPTS:
            again, _ = generate(binary, m, p, seeds[0], REFERENCE, out_dir, tag="-rerun")
            value = psnr(again, images[(m, p, seeds[0], REFERENCE)][0])
            if value != math.inf:
                failures.append(f"{m} seed {seeds[0]}: PNDM-50 rerun differs from the first run (PSNR {value:.1f} dB)")
    return failures


def check_calls(images):
    """The U-Net call count each run reports must be the one its sampler promises."""
    return [
        f"{c.name} on {m}: {calls} U-Net calls, expected {c.expected_calls}"
        for (m, _, _, c), (_, calls) in images.items()
        if calls != c.expected_calls
    ]


def check_reference_converged(rows):
    """The converged reference must be one: Euler and DPM++ 2M Karras at 500 steps, other
    discretisations of the same ODE, must reach a median PSNR of 50 dB against DDIM at 500 steps."""
    failures = []
    for config in (Config("euler", 500), Config("dpmpp-2m", 500, karras=True)):
        median = rows[config.name]["vs_converged"]["psnr"]["median"]
        if median < 50:
            failures.append(f"{config.name} is {median:.1f} dB from {CONVERGED.name}: the reference is not converged")
    return failures


def check_dpm_converges(rows):
    """DPM++ 2M error against the converged reference must fall as steps rise: over 10..30 steps
    (and 50 with Karras sigmas) the median PSNR may not drop by more than 0.5 dB from one step
    count to the next (past ~50 dB the images differ by about one 8-bit level, as much as rounding
    moves them), and must gain 3 dB from 10 to 30 steps. Plain DPM++ at 50 and 500 steps is left
    out: it starts below timestep 999 and does not converge (see dpm_leading_start)."""
    failures = []
    for karras, counts in ((False, DPM_STEPS), (True, DPM_STEPS + [50])):
        label = f"dpmpp-2m{' karras' if karras else ''}"
        db = {n: rows[Config("dpmpp-2m", n, karras).name]["vs_converged"]["psnr"]["median"] for n in counts}
        for fewer, more in zip(counts, counts[1:]):
            if db[more] < db[fewer] - 0.5:
                failures.append(
                    f"{label}: median PSNR vs converged falls from {db[fewer]:.2f} dB at {fewer} steps"
                    f" to {db[more]:.2f} at {more}"
                )
        if db[30] < db[10] + 3:
            failures.append(f"{label}: median PSNR vs converged gains under 3 dB, 10 → 30 steps ({db[10]:.2f} → {db[30]:.2f})")
    return failures


def dpm_leading_start(steps, train=1000, offset=1):
    """First timestep of DPM++ 2M with the models' `leading` spacing (diffusers' formula, which the
    engine reproduces): N * (train // (N + 1)) + offset. It is below 999, the timestep the initial
    noise belongs to, and falls as N grows past ~30: 961 at 30 steps, 951 at 50, 501 at 500."""
    return steps * (train // (steps + 1)) + offset


def smallest_dpm_steps(rows, karras):
    """The fewest DPM++ 2M steps whose images are at least as close to the converged solve as
    50-step PNDM's are (median and worst PSNR), i.e. no further from the ODE's solution."""
    bar = rows[REFERENCE.name]["vs_converged"]["psnr"]
    for n in DPM_STEPS:
        mine = rows[Config("dpmpp-2m", n, karras).name]["vs_converged"]["psnr"]
        if mine["median"] >= bar["median"] and mine["worst"] >= bar["worst"]:
            return n
    return None


# ---------------------------------------------------------------------------------------------
# Report


def machine_and_versions(binary):
    cpu = cpu_model()
    lib = Path(os.environ.get("ORT_DYLIB_PATH", ROOT / ".cache/onnxruntime/cpu/libonnxruntime.so")).resolve()
    git = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True)
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pillow": Image.__version__,
        "onnxruntime_library": lib.name,
        "rustc": rustc.stdout.strip(),
        "repository": git.stdout.strip(),
        "binary": str(binary),
        "binary_sha256": hashlib.sha256(Path(binary).read_bytes()).hexdigest()[:16],
    }


def fmt_db(x):
    return "∞" if x in (math.inf, "inf") else f"{x:.1f}"


def finite_json(obj):
    """JSON has no infinity: identical images (PSNR inf) are written as the string "inf"."""
    if isinstance(obj, float) and math.isinf(obj):
        return "inf"
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite_json(v) for v in obj]
    return obj


NOTES_HEADING = "## What this run says (written by hand; the text above is regenerated by every run)"


def hand_written_notes(path):
    """The hand-written section of an existing SAMPLERS.md, kept across reruns."""
    if path.exists() and NOTES_HEADING in path.read_text():
        return path.read_text().split(NOTES_HEADING, 1)[1].strip()
    return "(to be written after reading the table)"


def markdown(report, notes):
    m, t = report["machine"], report["time_model"]
    lines = [
        "# Fewer-step samplers against 50-step PNDM (issue 4, item 3)",
        "",
        f"Reproduce: `{report['command']}` ({report['minutes']:.1f} min here).",
        "",
        "**The models have random weights** (`tests/fixtures/models/{tiny-sd-clip,tiny-sd-bert}`): the",
        "images are structured noise, so nothing below is perceptual quality. Each number is a distance",
        "from a reference image made from the same seed, prompt and guidance (7.5): how closely a sampler",
        "at N steps follows the probability-flow ODE that 50-step PNDM approximates.",
        f"{len(report['seeds'])} seeds × {len(PROMPTS)} prompts × {len(MODELS)} models = {report['samples']} images",
        f"per row, {report['image_px']} px, no upscaling, no visible label; median and worst (lowest) over them.",
        "PSNR on the 8-bit RGB image; SSIM: Gaussian window 11×11, σ 1.5, mean over channels.",
        f"Converged reference: {CONVERGED.name.replace(' ', ' at ')} steps.",
        "",
        "Predicted time: the paper's Table 6 model (256 → 1024 px, CPU, `deploy/bench/speed/results.json`):",
        f"{t['unet_per_call_ms']:.0f} ms per U-Net call × calls + {t['other_stages_ms']:.0f} ms for the",
        "text encoder, VAE, ESRGAN and marking; speed-up against 50-step PNDM (51 calls).",
        "",
        "| sampler | steps | U-Net calls | PSNR vs PNDM-50 dB (median / worst) | SSIM vs PNDM-50 (median / worst) "
        "| PSNR vs converged dB | SSIM vs converged | predicted s | speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in report["rows"].items():
        a, b = row["vs_pndm50"], row["vs_converged"]
        sampler = name.rsplit(" ", 1)[0]
        lines.append(
            f"| {sampler} | {row['steps']} | {row['unet_calls']} "
            f"| {fmt_db(a['psnr']['median'])} / {fmt_db(a['psnr']['worst'])} "
            f"| {a['ssim']['median']:.4f} / {a['ssim']['worst']:.4f} "
            f"| {fmt_db(b['psnr']['median'])} / {fmt_db(b['psnr']['worst'])} "
            f"| {b['ssim']['median']:.4f} / {b['ssim']['worst']:.4f} "
            f"| {row['predicted_ms'] / 1e3:.1f} | {row['speedup_vs_pndm50']:.2f}× |"
        )
    starts = ", ".join(f"{n}: {t}" for n, t in report["dpm_leading_first_timestep"].items())
    smallest = report["smallest_dpm_steps_as_close_as_pndm50"]
    lines += [
        "",
        "`karras`: `--karras-sigmas true`. The models' scheduler config is SD 1.x's (PNDM, `leading`",
        "spacing, `steps_offset` 1), which every sampler inherits, as diffusers' `from_config` does.",
        "With it, plain DPM++ 2M starts at timestep N·⌊1000/(N+1)⌋+1, not 999 (diffusers' formula,",
        f"reproduced by the engine), by step count N: {starts}.",
        "Karras sigmas span the whole schedule.",
        "",
        "Fewest DPM++ 2M steps whose images are at least as close to the converged solve as 50-step",
        f"PNDM's (median and worst PSNR): plain {smallest['dpmpp-2m'] or 'none of ' + str(DPM_STEPS)},",
        f"Karras {smallest['dpmpp-2m karras'] or 'none of ' + str(DPM_STEPS)}.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores (shared). Versions: python {m['python']}, numpy {m['numpy']},",
        f"Pillow {m['pillow']}, {m['onnxruntime_library']}, {m['rustc']}; repository {m['repository']};",
        f"binary {m['binary']} (sha256 {m['binary_sha256']}…).",
        "",
        "Sanity checks (the script exits non-zero if one fails): a second 50-step PNDM run is",
        "bit-identical to the first (PSNR ∞); every run made the U-Net calls its sampler promises; Euler",
        "and DPM++ 2M Karras at 500 steps reach 50 dB PSNR against DDIM at 500 (it is converged);",
        "DPM++ 2M's median PSNR against it does not drop by over 0.5 dB as steps rise (10–30, and 50",
        "with Karras) and gains at least 3 dB from 10 to 30 steps.",
        "",
        NOTES_HEADING,
        "",
        notes,
        "",
    ]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--seeds", type=int, default=8, help="seeds 0..N-1 (8)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes at a time, 1 thread each (2)")
    parser.add_argument("--binary", type=Path, default=ROOT / "target/release/rapid-worker")
    parser.add_argument("--results", type=Path, default=ROOT / "deploy/bench/speed/results.json",
                        help="the speed benchmark's results")
    parser.add_argument("--out", type=Path, default=HERE, help="folder for SAMPLERS.md and samplers.json")
    parser.add_argument("--report-only", action="store_true", help="rewrite SAMPLERS.md from samplers.json")
    args = parser.parse_args()
    md = args.out / "SAMPLERS.md"
    if args.report_only:
        md.write_text(markdown(json.loads((args.out / "samplers.json").read_text()), hand_written_notes(md)))
        return
    if not args.binary.exists():
        sys.exit(f"samplers: {args.binary} is missing; build it with `cargo build --release -p rapid-worker`")
    started = time.perf_counter()
    seeds = list(range(args.seeds))
    predict, time_facts = time_model(args.results)

    with tempfile.TemporaryDirectory(prefix="rapid-samplers-") as tmp:
        images = run_all(args.binary, seeds, args.jobs, Path(tmp))
        failures = check_determinism(args.binary, images, seeds, Path(tmp)) + check_calls(images)

    rows = {}
    for config in ALL_CONFIGS:
        calls = config.expected_calls  # what every run reported, or check_calls fails
        rows[config.name] = {
            "sampler": config.sampler,
            "karras": config.karras,
            "steps": config.steps,
            "unet_calls": calls,
            "vs_pndm50": summarise(compare(images, seeds, config, REFERENCE)),
            "vs_converged": summarise(compare(images, seeds, config, CONVERGED)),
            "predicted_ms": predict(calls),
            "speedup_vs_pndm50": predict(REFERENCE.expected_calls) / predict(calls),
        }
    failures += check_reference_converged(rows) + check_dpm_converges(rows)

    report = {
        "command": shlex.join([".venv/bin/python", "deploy/bench/samplers/samplers.py", *sys.argv[1:]]),
        "weights": "random (tests/fixtures tiny models): distances only, no perceptual quality",
        "models": MODELS,
        "prompts": PROMPTS,
        "seeds": seeds,
        "samples": len(MODELS) * len(PROMPTS) * len(seeds),
        "image_px": "×".join(map(str, next(iter(images.values()))[0].shape[1::-1])),
        "reference": REFERENCE.name,
        "converged_reference": CONVERGED.name,
        "time_model": time_facts,
        "machine": machine_and_versions(args.binary),
        "rows": rows,
        "dpm_leading_first_timestep": {n: dpm_leading_start(n) for n in DPM_STEPS + [50, 500]},
        "smallest_dpm_steps_as_close_as_pndm50": {
            "dpmpp-2m": smallest_dpm_steps(rows, karras=False),
            "dpmpp-2m karras": smallest_dpm_steps(rows, karras=True),
        },
        "sanity_failures": failures,
        "minutes": (time.perf_counter() - started) / 60,
    }
    report = finite_json(report)
    (args.out / "samplers.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    md.write_text(markdown(report, hand_written_notes(md)))
    if failures:
        sys.exit("samplers: sanity check failed:\n  " + "\n  ".join(failures))
    print(f"samplers: wrote {args.out / 'SAMPLERS.md'} and samplers.json")


if __name__ == "__main__":
    main()
