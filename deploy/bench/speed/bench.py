"""Run with: make bench   (or .venv-fixtures/bin/python deploy/bench/speed/bench.py [--repeats 3] [--steps 50])

One run, one machine: the worker against the peers a user would otherwise run, stage by stage, on
the paper's Table 6 model (random weights; `deploy/export/export_table6.py`), 50 PNDM steps,
256 → 1024 px, fp32, 2 threads, with each stage's floor (its FLOPs ÷ this machine's fp32 GEMM rate).

- worker: `rapid-worker generate --warm-up --timings`, the full run, `--repeats` times; medians
  reported. `--warm-up` runs every part once before the timed image, as a fleet worker does at
  start-up (`worker.warm_up`), so its stages are warm calls like the peers'. Unless
  `--worker-args` names providers (`--execution-provider`, `--part-provider`), the worker runs as the fleet's default worker
  does: `--execution-provider auto`, measuring its setup in the first run and reading the stored
  choice from its session cache in the others (the report names the choice). `--worker-args` adds
  options, e.g. `--execution-provider cpu --part-provider upscaler=openvino` (the table says which).
- diffusers ONNX: the ONNX Runtime sessions `OnnxStableDiffusionPipeline` builds on the same files
  (its default session options), each stage timed on its own after one untimed call (every
  timing here is a warm call, as in a long-running service); the U-Net per call is the median of
  `--peer-calls` calls, and the total is extrapolated as text encoder + (steps + 1) × U-Net call +
  VAE + ESRGAN + marking. ESRGAN runs whole-image (the pipeline has no upscaler; this is what a user
  adding one would write); marking is invisible-watermark's `dwtDctSvd` encoder + Pillow's PNG.
- PyTorch eager ("Torch Native" in the paper's Table 3): diffusers' PyTorch modules with the same
  weights, timed the same way.

FLOPs are counted by PyTorch's FlopCounterMode (2 per multiply-add in convolutions and matrix
products; elementwise work is not counted, so floors are optimistic). The GEMM rate is the fastest
float32 4096³ matrix product on the same threads among numpy's OpenBLAS, PyTorch's BLAS and ONNX
Runtime's MLAS: what a tuned GEMM reaches here. Which library is fastest depends on the CPU (on an
AMD Zen 5, OpenBLAS ran AVX2-speed kernels while MLAS used AVX-512), so all three are recorded.
Writes deploy/bench/speed/RESULTS.md (and results.json beside it).
"""

import argparse
import io
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "common"))  # machine.py, worker_run.py
from machine import cpu_model, isa  # noqa: E402
from worker_run import MODEL, PROMPT, build, generate, pipeline_ms  # noqa: E402

THREADS = 2
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
os.environ.setdefault("OPENBLAS_NUM_THREADS", str(THREADS))

import numpy as np  # noqa: E402  (after the thread variables, which numpy reads at import)

ROOT = Path(__file__).resolve().parents[3]
STAGES = ["text_encoder", "unet_per_step", "vae", "upscale", "mark_encode", "total"]


def timed(fn, repeats=1):
    times = []
    result = None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3, result


def warm_timed(fn, repeats=1):
    """`timed` after one untimed call: the first call of a session plans memory (ONNX Runtime) or
    allocates (PyTorch), which a long-running service pays once, not per image. The worker gets
    the same through `--warm-up`."""
    fn()
    return timed(fn, repeats)


def gemm_rates(n=4096, repeats=7):
    """GFLOP/s of each GEMM library here, each the best of several 4096³ products: other work on a
    shared machine can only slow a product down, and a floor wants what the hardware reaches, not
    what a busy moment allowed."""
    import onnx
    import onnxruntime as ort
    import torch

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)

    def best(product):
        product()  # warm-up
        return 2 * n**3 / (min(timed(product)[0] for _ in range(repeats)) / 1e3) / 1e9

    torch.set_num_threads(THREADS)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    spec = [onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [n, n]) for name in "ABY"]
    graph = onnx.helper.make_graph([onnx.helper.make_node("MatMul", ["A", "B"], ["Y"])], "gemm", spec[:2], spec[2:])
    model = onnx.helper.make_model(graph, ir_version=8, opset_imports=[onnx.helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return {
        "numpy_openblas": best(lambda: a @ b),
        "torch": best(lambda: ta @ tb),
        "onnxruntime_mlas": best(lambda: session.run(None, {"A": a, "B": b})),
    }


def merge_rates(*measurements):
    """Per library, the best of several measurements."""
    return {name: max(m[name] for m in measurements if name in m) for name in measurements[-1]}


def mark_and_encode(image_u8):
    """What a Python user adds after the pipeline: the invisible watermark and a PNG."""
    import importlib.util

    import cv2
    from PIL import Image

    spec = importlib.util.find_spec("imwatermark")
    path = Path(spec.submodule_search_locations[0]) / "dwtDctSvd.py"
    module_spec = importlib.util.spec_from_file_location("dwtDctSvd", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    bits = np.unpackbits(np.frombuffer(b"RapidD", np.uint8)).tolist()
    bgr = cv2.cvtColor(image_u8, cv2.COLOR_RGB2BGR)
    marked = module.EmbedDwtDctSvd(bits, scales=[0, 36, 0], block=4).encode(bgr)
    buffer = io.BytesIO()
    Image.fromarray(cv2.cvtColor(marked, cv2.COLOR_BGR2RGB)).save(buffer, format="PNG")
    return buffer.getvalue()


def worker(repeats, steps, extra_args, model):
    build()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "sessions"
        by_hand = any(flag in extra_args for flag in ("--execution-provider", "--part-provider"))
        default = [] if by_hand else [
            "--execution-provider", "auto", "--session-cache", str(cache)]
        for i in range(repeats):
            runs.append(generate(steps, THREADS, Path(tmp), ["--warm-up", *default, *extra_args], model=model)[0])
            print(f"worker run {i + 1}/{repeats}: {runs[-1]['total'] / 1e3:.1f} s", flush=True)
        stored = sorted((cache / "autotune").glob("*.json")) if default else []
        autotune = json.loads(stored[0].read_text()) if stored else None
    median = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
    return {
        "autotune": autotune,
        "text_encoder": median("text_encoder"), "unet_per_step": median("unet_per_step"), "vae": median("vae"),
        "upscale": median("upscale"), "mark_encode": statistics.median(r["mark"] + r["encode"] for r in runs),
        # Like the peers' totals: the generation itself, model loading excluded.
        "total": statistics.median(pipeline_ms(r) for r in runs),
        "command_total": median("total"), "runs": runs,
    }


def onnx_peer(calls, steps):
    import onnxruntime as ort
    from diffusers import OnnxStableDiffusionPipeline

    pipe = OnnxStableDiffusionPipeline.from_pretrained(str(MODEL), provider="CPUExecutionProvider",
                                                       safety_checker=None, feature_extractor=None,
                                                       vae_encoder=None, requires_safety_checker=False)
    ids = pipe.tokenizer([PROMPT, ""], padding="max_length", max_length=32, truncation=True, return_tensors="np").input_ids
    te, (hidden,) = warm_timed(lambda: pipe.text_encoder(input_ids=ids.astype(np.int32)), repeats=3)
    sample = np.random.default_rng(0).standard_normal((2, 4, 32, 32), dtype=np.float32)
    t = np.array([981, 981], dtype=np.int64)
    unet, _ = warm_timed(lambda: pipe.unet(sample=sample, timestep=t, encoder_hidden_states=hidden), repeats=calls)
    latents = sample[:1] / 0.18215
    vae, (image,) = warm_timed(lambda: pipe.vae_decoder(latent_sample=latents))
    options = ort.SessionOptions()
    upscaler = ort.InferenceSession(str(MODEL / "upscaler/model.onnx"), options, providers=["CPUExecutionProvider"])
    rgb = np.clip(image / 2 + 0.5, 0, 1).astype(np.float32)
    up, (big,) = warm_timed(lambda: upscaler.run(None, {"input": rgb}))
    u8 = (np.clip(big[0].transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8)
    mark, _ = timed(lambda: mark_and_encode(u8))
    total = te + (steps + 1) * unet + vae + up + mark
    return {"text_encoder": te, "unet_per_step": unet, "vae": vae, "upscale": up, "mark_encode": mark, "total": total}


def eager_peer(calls, steps):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import BertModel

    torch.set_num_threads(THREADS)
    sys.path.insert(0, str(ROOT / "deploy/export"))
    from export_table6 import fixtures_module

    torch_dir = MODEL / "torch"
    bert = BertModel.from_pretrained(torch_dir / "text_encoder").eval()
    unet = UNet2DConditionModel.from_pretrained(torch_dir / "unet").eval()
    vae = AutoencoderKL.from_pretrained(torch_dir / "vae").eval()
    rrdb = fixtures_module().RRDBNet(3, 3, nf=64, nb=23, gc=32).eval()
    rrdb.load_state_dict(torch.load(torch_dir / "rrdbnet.pth"))
    flops = {}
    with torch.no_grad():
        ids = torch.randint(104, 21128, (2, 32))
        te, hidden = warm_timed(lambda: bert(input_ids=ids).last_hidden_state, repeats=3)
        sample = torch.randn(2, 4, 32, 32)
        t = torch.tensor([981, 981])
        u, _ = warm_timed(lambda: unet(sample, t, hidden), repeats=calls)
        v, image = warm_timed(lambda: vae.decode(sample[:1] / 0.18215).sample)
        rgb = (image / 2 + 0.5).clamp(0, 1)
        up, big = warm_timed(lambda: rrdb(rgb))
        u8 = (big[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        mark, _ = timed(lambda: mark_and_encode(u8))
        from torch.utils.flop_counter import FlopCounterMode

        for name, fn in [("text_encoder", lambda: bert(input_ids=ids)), ("unet_per_step", lambda: unet(sample, t, hidden)),
                         ("vae", lambda: vae.decode(sample[:1])), ("upscale", lambda: rrdb(rgb))]:
            counter = FlopCounterMode(display=False)
            with counter:
                fn()
            flops[name] = counter.get_total_flops()
    total = te + (steps + 1) * u + v + up + mark
    return {"text_encoder": te, "unet_per_step": u, "vae": v, "upscale": up, "mark_encode": mark, "total": total}, flops


def versions():
    import diffusers
    import onnxruntime
    import torch

    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    return {"cpu": cpu_model(), "isa": isa(), "cores": os.cpu_count(), "threads": THREADS, "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "numpy": np.__version__, "rustc": rustc}


def table(results, flops, rate, steps):
    ours, onnx, eager = results["worker"], results["diffusers_onnx"], results["torch_eager"]
    lines = ["| stage | GFLOP | floor ms | worker ms | ×floor | diffusers ONNX ms | ONNX/worker | PyTorch eager ms | eager/worker |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    total_flops = flops["text_encoder"] + (steps + 1) * flops["unet_per_step"] + flops["vae"] + flops["upscale"]
    for stage in STAGES:
        f = total_flops if stage == "total" else flops.get(stage)
        floor = f / (rate * 1e9) * 1e3 if f else None
        cells = [stage, f"{f / 1e9:.1f}" if f else "–", f"{floor:.0f}" if floor else "–", f"{ours[stage]:.0f}",
                 f"{ours[stage] / floor:.2f}" if floor else "–", f"{onnx[stage]:.0f}", f"{onnx[stage] / ours[stage]:.2f}",
                 f"{eager[stage]:.0f}", f"{eager[stage] / ours[stage]:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3, help="full worker runs (median reported)")
    parser.add_argument("--peer-calls", type=int, default=3, help="U-Net calls timed per peer (median)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--worker-args", default="",
                        help="more `rapid-worker generate` options, e.g. '--part-provider upscaler=openvino'")
    parser.add_argument("--worker-model", type=Path, default=MODEL,
                        help="the worker's model directory: the Table 6 model or a rewrite of it (deploy/export/), "
                             "e.g. .cache/models/table6-winograd; the peers always run the plain export")
    parser.add_argument("--report-only", action="store_true", help="rewrite RESULTS.md from results.json")
    parser.add_argument("--name", default="",
                        help="write RESULTS-NAME.md and results-NAME.json, e.g. for a bf16 worker run beside the fp32 one")
    parser.add_argument("--gemm-only", action="store_true",
                        help="re-measure the GEMM rate on a quiet machine, keep the stage timings, rewrite RESULTS.md")
    args = parser.parse_args()
    out = ROOT / "deploy/bench/speed"
    stem = f"-{args.name}" if args.name else ""
    if args.report_only or args.gemm_only:
        saved = json.loads((out / f"results{stem}.json").read_text())
        if args.gemm_only:
            rates = merge_rates(saved.get("gemm_by_library", {}), gemm_rates())
            saved["gemm_by_library"], saved["gemm_gflops"] = rates, max(rates.values())
            print(f"GEMM: {json.dumps({k: round(v) for k, v in rates.items()})} GFLOP/s", flush=True)
            (out / f"results{stem}.json").write_text(json.dumps(saved, indent=2))
        worker_runs = saved["results"]["worker"]["runs"]
        saved["results"]["worker"]["total"] = statistics.median(pipeline_ms(r) for r in worker_runs)
        saved["results"]["worker"]["command_total"] = statistics.median(r["total"] for r in worker_runs)
        write_report(out, stem, saved, len(worker_runs), args.peer_calls, saved.get("minutes", 0))
        return
    if not (MODEL / "unet/model.onnx").exists():
        sys.exit(f"{MODEL} is missing: run .venv-fixtures/bin/python deploy/export/export_table6.py first")
    started = time.time()
    rates = gemm_rates()
    print(f"GEMM: {json.dumps({k: round(v) for k, v in rates.items()})} GFLOP/s", flush=True)
    # Peers first: they take minutes, the worker's full runs most of the time.
    results = {"diffusers_onnx": onnx_peer(args.peer_calls, args.steps)}
    print(f"diffusers ONNX: {json.dumps({k: round(v) for k, v in results['diffusers_onnx'].items()})}", flush=True)
    results["torch_eager"], flops = eager_peer(args.peer_calls, args.steps)
    print(f"PyTorch eager: {json.dumps({k: round(v) for k, v in results['torch_eager'].items()})}", flush=True)
    if not (args.worker_model / "unet/model.onnx").exists():
        sys.exit(f"--worker-model {args.worker_model}: no unet/model.onnx there")
    results["worker"] = worker(args.repeats, args.steps, shlex.split(args.worker_args), args.worker_model)
    rates = merge_rates(rates, gemm_rates())  # again at the end: a busy moment at the start only lowers it
    saved = {"machine": versions(), "gemm_gflops": max(rates.values()), "gemm_by_library": rates,
             "flops": flops, "steps": args.steps,
             "worker_args": args.worker_args, "worker_model": worker_model_name(args.worker_model),
             "minutes": (time.time() - started) / 60, "results": results}
    (out / f"results{stem}.json").write_text(json.dumps(saved, indent=2))
    write_report(out, stem, saved, args.repeats, args.peer_calls, saved["minutes"])


def gemm_libraries(saved):
    rates = saved.get("gemm_by_library")
    return f" ({', '.join(f'{name} {rate:.0f}' for name, rate in rates.items())})" if rates else " (numpy/OpenBLAS only)"


def autotune_line(worker_results):
    """What `auto` chose for the worker and what it measured, when it ran on `auto`."""
    stored = worker_results.get("autotune")
    if not stored:
        return ""
    choice = stored["choice"]
    tile = "whole image" if choice["upscale_tile"] == 0 else f"{choice['upscale_tile']} px tiles"
    trials = "; ".join(
        f"{t['part']} {t['candidate']}: " + (f"{t['ms']:.0f} ms" if t.get("ms") is not None else "-")
        + (f", {t['levels']:.2f}/255 off" if t.get("levels") else "") + f" ({VERDICTS.get(str(t['verdict']), 'failed')})"
        for t in stored["trials"])
    return (f"\n  `auto` chose: U-Net on {choice['unet']} ({choice['unet_variant']} graph), VAE on "
            f"{choice['vae_decoder']}, ESRGAN on {choice['upscaler']} ({tile}). Measured (each candidate against "
            f"the best before it; the last one kept per part runs): {trials}.")


# How autotune's verdicts read in the report (worker/engine/src/autotune.rs, `Verdict`).
VERDICTS = {"reference": "reference", "chosen": "kept", "slower": "not faster", "outside_bound": "off the reference",
            "skipped": "over the time budget"}


def worker_model_name(path):
    """The worker's model directory as the report names it: relative to the repository."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def worker_model_line(saved):
    """Where the worker ran a rewritten model, what the peers did not."""
    model = saved.get("worker_model")
    if not model or Path(model) == MODEL.relative_to(ROOT):
        return ""
    return (f"\n  The worker ran `{model}`, a rewrite of the Table 6 export by `deploy/export/` (same weights, "
            "other operators); the peers ran the plain export.")


def worker_option(worker_args, flag):
    """The value the worker's options give `flag`, or None."""
    args = shlex.split(worker_args)
    return args[args.index(flag) + 1] if flag in args else None


def tiling(worker_args):
    """How the worker's ESRGAN ran, from its options."""
    size = worker_option(worker_args, "--tile-size")
    if size is None:
        return "ESRGAN in the worker's default tiles (128 px, 8 px context)."
    return "ESRGAN on the whole image." if size == "0" else f"ESRGAN in {size}-px tiles."


def precision(worker_args):
    """What the worker's arithmetic was, from its options."""
    if worker_option(worker_args, "--precision") == "bf16":
        return ("\n**The worker ran in bf16** (`--precision bf16`, on OpenVINO), the peers in fp32: the arithmetic "
                "differs, the worker's images move (../precision/PRECISION.md), and its stages can run below the "
                "fp32 floors.")
    return ""


def write_report(out, stem, saved, repeats, peer_calls, minutes):
    info, rate, flops, steps, results = saved["machine"], saved["gemm_gflops"], saved["flops"], saved["steps"], saved["results"]
    # The hand-written reading of the run of the same name (NOTES.md for the main one).
    notes = (out / f"NOTES{stem}.md").read_text() if (out / f"NOTES{stem}.md").exists() else ""
    body = f"""# Benchmark: the worker against its peers (paper Table 3, on this CPU)

Reproduce: `make bench` (exports the model first if missing; about 10 minutes on 2 cores).
Model: the paper's Table 6 architecture with **random weights** (`deploy/export/export_table6.py`):
timings are real, images are noise. {steps} PNDM steps ({steps + 1} U-Net calls, batch 2 with
guidance), 256 → 1024 px (ESRGAN ×4), fp32, {THREADS} threads, ONNX Runtime's CPU execution provider
(the worker's options below may move a part to another).{precision(saved.get('worker_args', ''))}

Machine: {info['cpu']} ({info.get('isa', '?')}), {info['cores']} cores. Versions: {json.dumps({k: v for k, v in info.items() if k not in ('cpu', 'cores', 'isa')})}.
fp32 GEMM rate (4096³, the fastest library): **{rate:.0f} GFLOP/s**{gemm_libraries(saved)}. Run took {minutes:.1f} min.

{table(results, flops, rate, steps)}

- worker: median of {repeats} full runs of `rapid-worker generate --timings`; its total is the sum of
  its stages (generation only, like the peers'), after `--warm-up` ran every part once untimed
  (as a fleet worker does at start-up); the whole command, loading and warm-up included, took
  {results['worker']['command_total'] / 1e3:.1f} s (median){', `auto` measuring in the first run' if results['worker'].get('autotune') else ''}. {'' if results['worker'].get('autotune') else tiling(saved.get('worker_args', ''))}
  Worker options beyond the defaults: {f"`{saved['worker_args']}`" if saved.get('worker_args') else 'none'}.{worker_model_line(saved)}{autotune_line(results['worker'])}
- diffusers ONNX and PyTorch eager: each stage timed on its own after one untimed call (U-Net: median of {peer_calls} calls);
  their totals are **extrapolated**: text encoder + {steps + 1} × U-Net + VAE + ESRGAN (whole image) +
  marking, model loading excluded.
- floor = counted FLOPs ÷ GEMM rate; FLOPs count convolutions and matrix products only.

{notes}"""
    (out / f"RESULTS{stem}.md").write_text(body)
    print(body)


if __name__ == "__main__":
    main()
