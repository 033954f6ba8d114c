"""Run with: .venv-fixtures/bin/python -m rapid_training.train_vae [--minutes 36] (from training/).

Stage 1: a small KL autoencoder (diffusers' AutoencoderKL), 64×64 RGB → 16×16×4 latents. Loss: L1
reconstruction, an L1 term on 8×8 patch means (colour) and a KL term, in the phases of `PHASES`; no
GAN (not needed at this size). Resumable; ends with its EMA weights in `weights/vae.safetensors` and,
in `vae.json`, the scaling factor computed as Stable Diffusion's recipe does (1 / std of the latents
of a training batch) and the held-out reconstruction PSNR per pattern (can the latents keep stripes
and dots?).
"""

import argparse
import math
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from tqdm import tqdm

from . import data
from .checkpoint import Ema, Run, StageError, load_weights, save_weights, seed_everything, set_threads

CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 3,
    up_block_types=["UpDecoderBlock2D"] * 3,
    block_out_channels=[32, 64, 64],
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=16,
    sample_size=64,
)
# Three phases, by training seconds, as the recipe was found (the shipped VAE went through all three):
# 1. L1 + KL. The KL weight, 1e-6 as in Stable Diffusion, was applied to a *mean* L1 here, while
#    Stable Diffusion sums its reconstruction loss over pixels: 12,288× stronger than theirs at 64 px.
#    The latents stayed noisy and colours came back washed out (green as grey: with the hue lost in the
#    noise, L1's per-channel median is a brownish grey).
# 2. A lower learning rate and an L1 term on 8×8 patch means, so colour errors cost what they look
#    like: reds, pinks and yellows came back; greens and purples did not.
# 3. The KL weight at Stable Diffusion's effective strength (1e-6 / 12,288 per mean-L1 unit).
PHASES = (
    dict(until_minutes=20, lr=1e-3, colour_weight=0.0, kl_weight=1e-6),
    dict(until_minutes=28, lr=3e-4, colour_weight=4.0, kl_weight=1e-6),
    dict(until_minutes=36, lr=3e-4, colour_weight=4.0, kl_weight=1e-6 / (64 * 64 * 3)),
)
RECIPE = dict(batch=32, ema=0.999, bf16=True, seed=0, phases=PHASES)


def build() -> AutoencoderKL:
    return AutoencoderKL(**CONFIG)


def load() -> AutoencoderKL:
    """This stage's committed VAE (encoder and its own decoder)."""
    return load_weights("vae", build(), {"model": CONFIG, "recipe": RECIPE})


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per image, for tensors in [-1, 1]."""
    mse = ((a - b) / 2).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / mse)


@torch.no_grad()
def evaluate(vae: AutoencoderKL, images: np.ndarray, records: list[dict]) -> dict:
    """Held-out reconstruction PSNR (dB), overall and per pattern (fashion) / for dishes."""
    scores = []
    for start in range(0, len(images), 256):
        x = data.to_tensor_range(images[start : start + 256])
        recon = vae.decode(vae.encode(x).latent_dist.mode()).sample
        scores.append(psnr(recon.clamp(-1, 1), x))
    scores = torch.cat(scores).numpy()
    groups: dict[str, list[float]] = {}
    for score, record in zip(scores, records):
        groups.setdefault(record.get("pattern", "dish"), []).append(float(score))
    return {"all": round(float(scores.mean()), 2), **{k: round(float(np.mean(v)), 2) for k, v in sorted(groups.items())}}


@torch.no_grad()
def scaling_factor(vae: AutoencoderKL, images: np.ndarray) -> float:
    x = data.to_tensor_range(images[:1024])
    latents = torch.cat([vae.encode(x[i : i + 256]).latent_dist.sample() for i in range(0, len(x), 256)])
    return float(1.0 / latents.flatten().std())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=PHASES[-1]["until_minutes"],
                        help="stop after this much training in all")
    args = parser.parse_args()
    threads = set_threads()
    seed_everything(RECIPE["seed"])

    images, _ = data.split("train")
    held_images, held_records = data.split("heldout")
    vae = build()
    ema = Ema(vae, RECIPE["ema"])
    optimizer = torch.optim.AdamW(vae.parameters(), lr=PHASES[0]["lr"], weight_decay=0.0)
    run = Run("vae", {"model": CONFIG, "recipe": RECIPE})
    modules = {"vae": vae, "ema": ema.shadow}
    step, seconds = run.resume(modules, optimizer)
    budget = args.minutes * 60.0
    print(f"vae: {sum(p.numel() for p in vae.parameters()) / 1e6:.2f} M parameters, {threads} threads, "
          f"resuming at step {step} ({seconds / 60:.1f} min done)", file=sys.stderr)

    bar = tqdm(total=round(budget), initial=round(min(seconds, budget)), unit="s", desc="vae")
    vae.train()
    while seconds < budget:
        started = time.monotonic()
        index = np.random.randint(0, len(images), RECIPE["batch"])
        x = data.to_tensor_range(images[index])
        # bf16 autocast: 1.7x the images per second of fp32 on an AMX Xeon (measured here); the U-Net
        # stage gains nothing from it and stays fp32.
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=RECIPE["bf16"]):
            posterior = vae.encode(x).latent_dist
            recon = vae.decode(posterior.sample()).sample
        phase = next((p for p in PHASES if seconds < p["until_minutes"] * 60), PHASES[-1])
        for group in optimizer.param_groups:
            group["lr"] = phase["lr"]
        recon = recon.float()
        reconstruction = F.l1_loss(recon, x)
        colour = F.l1_loss(F.avg_pool2d(recon, 8), F.avg_pool2d(x, 8))
        kl = posterior.kl().mean()
        loss = reconstruction + phase["colour_weight"] * colour + phase["kl_weight"] * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        ema.update(vae, step)
        elapsed = time.monotonic() - started
        seconds += elapsed
        bar.update(round(seconds) - bar.n)
        if step % 25 == 0:
            run.log({"step": step, "seconds": round(seconds, 1), "l1": reconstruction.item(), "colour_l1": colour.item(),
                     "kl": kl.item()})
            bar.set_postfix(step=step, l1=f"{reconstruction.item():.4f}")
        if run.due():
            run.save(modules, optimizer, step, seconds)
        if not math.isfinite(loss.item()):
            raise StageError(f"vae: loss became {loss.item()} at step {step}; lower the learning rate in RECIPE")
    bar.close()
    run.save(modules, optimizer, step, seconds)

    shipped = ema.shadow.eval()
    factor = scaling_factor(shipped, images)
    quality = evaluate(shipped, held_images, held_records)
    path = save_weights(
        "vae",
        shipped,
        {"model": CONFIG, "recipe": RECIPE},
        {"scaling_factor": factor, "heldout_psnr_db": quality, "steps": step, "train_seconds": round(seconds),
         "threads": threads},
    )
    print(f"vae: {step} steps in {seconds / 60:.1f} min; scaling factor {factor:.4f}; held-out PSNR {quality}; "
          f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except StageError as error:
        sys.exit(f"error: {error}")
