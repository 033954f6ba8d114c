"""Run with: make bench-session   (or .venv-fixtures/bin/python deploy/bench/session/session_sweep.py [--calls 5])

ONNX Runtime's session options, thread counts and arena settings, one at a time, on the three heavy
parts of the Table 6 model (random weights; `deploy/export/export_table6.py`), on this machine's
2 cores. The worker and this script load the same ONNX Runtime release (the `onnxruntime` wheel), so
what a setting does here is what it does in the worker's sessions.

Parts and inputs, as the worker calls them for one 256 → 1024 image:
- unet: batch 2 (guidance), 32×32 latent, 32 text tokens of width 768; 51 calls per image.
- vae: the decoder on one 32×32 latent; once per image.
- upscale: one ESRGAN tile of 136×136 px (a 128-px core with 8 px of context, the worker's default
  tiling); four per image.

Variants differ from `baseline` (what the worker does: 2 intra-op threads, ORT_ENABLE_ALL, the
CPU memory arena and memory patterns on, spinning threads) in one setting each, plus two that split
the same work across two concurrent 1-thread runs on one session (the two halves of the guidance
batch; two tiles at once). Every number is the median of `--calls` calls after one warm-up call.
By default each variant is loaded and timed in turn; `--interleave` loads the listed variants of a
part side by side and times them in rounds (one call each per round), so that a slow minute on a
shared machine hits every variant alike: use it to confirm a small difference the sweep found.
`--tilings 64/8,128/8,0/0` instead times whole 256 → 1024 ESRGAN images in each tiling (core/context
px; 0/0 = the whole image in one call), cut as the worker cuts them, with the baseline options.
Writes deploy/bench/session/session.json (or `--out`); SESSION.md is its hand-written reading. Holds
/tmp/rapid-bench.lock for the whole run so that no other timing run overlaps it.
"""

import argparse
import fcntl
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

# machine.py, and bench.py's timer (../speed/bench.py, which puts common/ on the path itself).
sys.path[:0] = [str(Path(__file__).resolve().parents[1] / part) for part in ("common", "speed")]
from machine import cpu_model, isa  # noqa: E402

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from bench import timed  # noqa: E402  (the speed benchmark's median-of-calls timer)

ROOT = Path(__file__).resolve().parents[3]
MODEL = ROOT / ".cache/models/table6"
OUT = ROOT / "deploy/bench/session/session.json"
TILE = 136


def inputs(part, batch):
    rng = np.random.default_rng(0)
    if part == "unet":
        return {
            "sample": rng.standard_normal((batch, 4, 32, 32), dtype=np.float32),
            "timestep": np.full((batch,), 981, dtype=np.int64),
            "encoder_hidden_states": rng.standard_normal((batch, 32, 768), dtype=np.float32),
        }
    if part == "vae":
        return {"latent_sample": rng.standard_normal((batch, 4, 32, 32), dtype=np.float32)}
    return {"input": rng.random((batch, 3, TILE, TILE), dtype=np.float32)}


def model_path(part):
    return MODEL / {"unet": "unet", "vae": "vae_decoder", "upscale": "upscaler"}[part] / "model.onnx"


def options(threads=2, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL, arena=True, pattern=True,
            spinning=True, denormal_as_zero=False, dynamic_block_base=0):
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.graph_optimization_level = level
    o.enable_cpu_mem_arena = arena
    o.enable_mem_pattern = pattern
    o.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    o.add_session_config_entry("session.set_denormal_as_zero", "1" if denormal_as_zero else "0")
    if dynamic_block_base:
        o.add_session_config_entry("session.dynamic_block_base", str(dynamic_block_base))
    return o


# name → (session options, how many concurrent runs share the part's work)
VARIANTS = {
    "baseline": (lambda: options(), 1),
    "threads-1": (lambda: options(threads=1), 1),
    "level-extended": (lambda: options(level=ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED), 1),
    "level-basic": (lambda: options(level=ort.GraphOptimizationLevel.ORT_ENABLE_BASIC), 1),
    "no-spinning": (lambda: options(spinning=False), 1),
    "no-arena": (lambda: options(arena=False), 1),
    "no-mem-pattern": (lambda: options(pattern=False), 1),
    "denormal-as-zero": (lambda: options(denormal_as_zero=True), 1),
    "dynamic-block-base-4": (lambda: options(dynamic_block_base=4), 1),
    "denormal-as-zero+dynamic-block-base-4": (lambda: options(denormal_as_zero=True, dynamic_block_base=4), 1),
    "2×1-thread-concurrent": (lambda: options(threads=1), 2),
}


def median_ms(work, calls):
    """Median milliseconds of `calls` runs of `work`, after one untimed warm-up run."""
    work()
    return timed(work, calls)[0]


def load(part, make_options):
    started = time.perf_counter()
    session = ort.InferenceSession(str(model_path(part)), make_options(), providers=["CPUExecutionProvider"])
    return session, (time.perf_counter() - started) * 1e3


def time_interleaved(part, names, calls):
    """Milliseconds per call of each single-stream variant, timed round by round."""
    sessions = {}
    for name in names:
        make_options, streams = VARIANTS[name]
        if streams != 1:
            sys.exit(f"session_sweep.py: --interleave takes single-stream variants, not {name}")
        sessions[name] = load(part, make_options)
    feed = inputs(part, 2 if part == "unet" else 1)
    times = {name: [] for name in names}
    for name in names:
        sessions[name][0].run(None, feed)
    for _ in range(calls):
        for name in names:
            t = time.perf_counter()
            sessions[name][0].run(None, feed)
            times[name].append(time.perf_counter() - t)
    return {name: (sessions[name][1], statistics.median(times[name]) * 1e3) for name in names}


def time_variant(part, make_options, streams, calls):
    """Milliseconds for one unit of the part's work (a batch-2 U-Net call, a decode, a tile): with
    two streams, each runs half the U-Net batch (or one tile) and the unit's time is the wall time
    of the pair divided by the units they did."""
    session, load_ms = load(part, make_options)
    if streams == 1:
        feed = inputs(part, 2 if part == "unet" else 1)
        return load_ms, median_ms(lambda: session.run(None, feed), calls)
    feed = inputs(part, 1)
    # A U-Net unit is both halves of the batch; a tile or a decode unit is one run.
    units_per_pair = 1 if part == "unet" else 2

    def concurrent_runs():
        threads = [threading.Thread(target=session.run, args=(None, feed)) for _ in range(streams)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    return load_ms, median_ms(concurrent_runs, calls) / units_per_pair


def tile_spans(side, tile, overlap):
    """The worker's tiling along one side (`worker/engine/src/parts/upscaler.rs`): each tile's core
    plus up to `overlap` px of context on both sides, clipped to the image."""
    tile = tile or side
    return [(max(start - overlap, 0), min(start + tile + overlap, side)) for start in range(0, side, tile)]


def time_tilings(tilings, calls, side=256):
    """Milliseconds per whole 256 → 1024 image for each `core/context` tiling."""
    session, _ = load("upscale", options)
    image = np.random.default_rng(0).random((1, 3, side, side), dtype=np.float32)
    results = {}
    for tiling in tilings:
        tile, overlap = (int(x) for x in tiling.split("/"))
        spans = tile_spans(side, tile, overlap)
        patches = [np.ascontiguousarray(image[:, :, y0:y1, x0:x1]) for y0, y1 in spans for x0, x1 in spans]

        def one_image():
            for patch in patches:
                session.run(None, {"input": patch})

        results[tiling] = {"ms": round(median_ms(one_image, calls), 1), "tiles": len(patches),
                           "input_px": sum(p.shape[2] * p.shape[3] for p in patches)}
        print(f"upscale image, tiles {tiling:7} {results[tiling]['ms']:9.1f} ms  {len(patches)} calls", flush=True)
    return results


def machine():
    return {"cpu": cpu_model(), "isa": isa(), "cores": os.cpu_count(), "python": platform.python_version(),
            "onnxruntime": ort.__version__, "numpy": np.__version__}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5, help="timed calls per variant (median)")
    parser.add_argument("--parts", default="unet,vae,upscale")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--interleave", action="store_true", help="time the variants round by round")
    parser.add_argument("--tilings", help="time whole ESRGAN images in these core/context tilings instead")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if not model_path("unet").exists():
        sys.exit("session_sweep.py: no Table 6 model; run `make fixtures-env` and "
                 "`.venv-fixtures/bin/python deploy/export/export_table6.py`")
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        sys.exit(f"session_sweep.py: unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")

    lock = open("/tmp/rapid-bench.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    started = time.time()
    results = {}
    if args.tilings:
        results["upscale_image_tilings"] = time_tilings(args.tilings.split(","), args.calls)
    for part in ([] if args.tilings else args.parts.split(",")):
        results[part] = {}
        names = [n for n in args.variants.split(",") if not (VARIANTS[n][1] > 1 and part == "vae")]
        if args.interleave:
            timed = time_interleaved(part, names, args.calls)
        else:
            timed = {name: time_variant(part, *VARIANTS[name], args.calls) for name in names}
        for name, (load_ms, ms) in timed.items():
            results[part][name] = {"ms": round(ms, 1), "load_ms": round(load_ms)}
            base = results[part].get("baseline", {}).get("ms", ms)
            print(f"{part:8} {name:38} {ms:9.1f} ms  ({base / ms:5.3f}× baseline)  load {load_ms:7.0f} ms", flush=True)
    report = {"machine": machine(), "calls": args.calls, "interleaved": args.interleave,
              "minutes": round((time.time() - started) / 60, 1),
              "date": time.strftime("%Y-%m-%d"), "model": "Table 6, random weights", "results": results}
    args.out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
