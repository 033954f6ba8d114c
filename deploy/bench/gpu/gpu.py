"""Run with: bash deploy/bench/gpu/gpu.sh   (on a machine with an NVIDIA GPU; see that script)

Issue 4's GPU benchmark: the worker on ONNX Runtime's CUDA provider against diffusers' PyTorch
modules on the same GPU, on the paper's Table 6 model (random weights), 50 PNDM steps, 256 → 1024
px, beside the paper's A100 figures (Table 3). Stages are timed as `../speed/bench.py` times them on
the CPU: the worker's own `--timings` of one warm image (`--warm-up`), and for PyTorch one untimed call
per stage, then the median of `--calls` calls, synchronised with the GPU. The total is text encoder
+ 51 U-Net calls (PNDM's 50 steps) + VAE + ESRGAN, without marking and PNG encoding, which run on
the CPU and which the paper's figures leave out too; the worker's marking is reported beside it.

- worker rows: `rapid-worker generate --execution-provider cuda` on each model directory given
  (`--model NAME=DIR`): the exported fp32 graphs, and a directory whose U-Net ONNX Runtime's
  transformer optimizer fused and converted to fp16 (`deploy/export/optimize_gpu.py`).
- PyTorch rows: diffusers' UNet2DConditionModel and AutoencoderKL, transformers' BertModel and the
  fixtures' RRDBNet built from the same configs, in fp32 and fp16, with diffusers' default
  attention (`scaled_dot_product_attention`, flash attention in fp16).

Writes the JSON report to --out; `gpu_report.py` turns it into deploy/bench/gpu/GPU.md.
"""

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "common"))  # worker_run.py
from worker_run import PIPELINE_KEYS, generate  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]


def unet_calls(steps):
    return steps + 1  # PNDM's PRK warm-up makes 51 calls for 50 steps


def worker(binary, model, repeats, provider, steps):
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            stages, wall = generate(steps, 8, Path(tmp), ["--execution-provider", provider, "--warm-up", "--tile-size", "0"],
                                    model=model, binary=binary)
            stages["command_wall"] = wall
            runs.append(stages)
            print(f"worker {model.name}: {json.dumps(stages)}", flush=True)
    median = lambda key: statistics.median(run[key] for run in runs)  # noqa: E731
    row = {key: median(key) for key in ["text_encoder", "unet_per_step", "vae", "upscale", "mark", "encode"]}
    row["total"] = (median("text_encoder") + unet_calls(steps) * median("unet_per_step") + median("vae")
                    + median("upscale"))
    row["pipeline_ms"] = statistics.median(sum(run[key] for key in PIPELINE_KEYS) for run in runs)
    row["runs"] = runs
    return row


def torch_peer(model: Path, dtype_name: str, calls: int, device_name: str, steps: int):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import BertConfig, BertModel

    sys.path.insert(0, str(ROOT / "deploy/export"))
    from export_table6 import fixtures_module

    dtype = {"fp32": torch.float32, "fp16": torch.float16}[dtype_name]
    device = torch.device(device_name)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None

    def sync_timed(fn):
        fn()
        sync()
        times, result = [], None
        for _ in range(calls):
            start = time.perf_counter()
            result = fn()
            sync()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times), result

    with device:
        bert = BertModel(BertConfig.from_json_file(model / "text_encoder/config.json"), add_pooling_layer=False)
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(model / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(model / "vae_decoder"))
        rrdb = fixtures_module().RRDBNet(3, 3, nf=64, nb=23, gc=32)
    bert, unet, vae, rrdb = (m.to(device=device, dtype=dtype).eval() for m in (bert, unet, vae, rrdb))
    with torch.no_grad():
        ids = torch.randint(104, 21128, (2, 32), device=device)
        te, hidden = sync_timed(lambda: bert(input_ids=ids).last_hidden_state)
        sample = torch.randn(2, 4, 32, 32, device=device, dtype=dtype)
        t = torch.tensor([981, 981], device=device)
        u, _ = sync_timed(lambda: unet(sample, t, hidden).sample)
        v, image = sync_timed(lambda: vae.decode(sample[:1] / 0.18215).sample)
        rgb = (image / 2 + 0.5).clamp(0, 1)
        up, _ = sync_timed(lambda: rrdb(rgb))
    row = {"text_encoder": te, "unet_per_step": u, "vae": v, "upscale": up}
    row["total"] = te + unet_calls(steps) * u + v + up
    row["attention"] = type(unet.attn_processors[next(iter(unet.attn_processors))]).__name__
    print(f"pytorch {dtype_name}: {json.dumps(row)}", flush=True)
    del bert, unet, vae, rrdb
    torch.cuda.empty_cache()
    return row


def gpu_name():
    query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
    try:
        return subprocess.run(query, capture_output=True, text=True).stdout.strip()
    except FileNotFoundError:
        return "no NVIDIA driver (nvidia-smi not found)"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", type=Path, required=True, help="a rapid-worker built here or carried")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=DIR",
                        help="a worker row: the model directory to run on the CUDA provider")
    parser.add_argument("--torch-model", type=Path, required=True, help="configs for the PyTorch rows")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--calls", type=int, default=10, help="timed calls per PyTorch stage (median)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--provider", default="cuda", help="the worker's provider (cpu for a dry run without a GPU)")
    parser.add_argument("--device", default="cuda", help="PyTorch's device (cpu for a dry run without a GPU)")
    args = parser.parse_args()

    import torch

    report = {"gpu": gpu_name(), "torch": torch.__version__, "cuda": torch.version.cuda,
              "python": platform.python_version(), "steps": args.steps, "unet_calls": unet_calls(args.steps),
              "provider": args.provider, "device": args.device, "rows": {}, "errors": {}}

    def save():
        args.out.write_text(json.dumps(report, indent=1) + "\n")

    for item in args.model:
        name, _, directory = item.partition("=")
        try:
            report["rows"][f"worker {name}"] = worker(args.binary, Path(directory), args.repeats, args.provider,
                                                      args.steps)
        except subprocess.CalledProcessError as e:
            report["errors"][f"worker {name}"] = f"exit {e.returncode}"
        save()
    for dtype in ["fp32", "fp16"]:
        try:
            report["rows"][f"pytorch eager {dtype}"] = torch_peer(args.torch_model, dtype, args.calls, args.device,
                                                                  args.steps)
        except Exception as e:  # a peer that cannot run is a row of the report, not the end of it
            report["errors"][f"pytorch eager {dtype}"] = repr(e)
        save()
    print(json.dumps(report["errors"]), file=sys.stderr)


if __name__ == "__main__":
    main()
