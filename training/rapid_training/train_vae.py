"""Run with: .venv-fixtures/bin/python -m rapid_training.train_vae [--minutes 80] (from training/).

Stage 1: a KL autoencoder (diffusers' AutoencoderKL), 64×64 RGB → 16×16×4 latents. Loss: L1
reconstruction, an L1 term on 8×8 patch means (colour), an L1 term on horizontal and vertical pixel
differences (edges) and a gentle KL term; no GAN (not needed at this size). Resumable; ends with its
EMA weights in `weights/vae.safetensors` and, in `vae.json`, the scaling factor computed as Stable
Diffusion's recipe does (1 / std of the latents of a training batch), the held-out reconstruction PSNR
per pattern (can the latents keep stripes and dots?) and how much each latent channel carries.

Every generated picture goes through this decoder, so what it loses no U-Net can draw: the first
VAE (channels 32/64/64, KL 1e-6) let the judge read 59.5 % of held-out dishes after one trip through
it, against 98.1 % on the images themselves, and its U-Net scored 54–56 % (training/README.md, "The
VAE is the ceiling").
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
from .checkpoint import (
    Ema, Interrupt, Run, StageError, learning_rate, load_weights, save_weights, seed_everything, set_threads,
)

# 1.5–2× the first VAE's width (32/64/64): its decoder (0.6 M parameters) stopped improving within
# minutes of fine-tuning on its own (L1 0.042 → 0.039), and fine parts (lettuce, pepperoni, noodles)
# came back as smears. 64/128/128 took 1.35× as long a step (2.26 against 1.68 s at batch 32, here).
CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 3,
    up_block_types=["UpDecoderBlock2D"] * 3,
    block_out_channels=[48, 96, 128],
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=16,
    sample_size=64,
)
# `kl_weight` is per unit of *mean* L1. Stable Diffusion's 1e-6 sits on a reconstruction loss summed
# over pixels; on a mean it is 12,288× stronger at 64 px, and under it the first VAE gave one of its
# four channels up (posterior std 0.32 against a spread of its means of 0.21; the others 0.02–0.04
# against 1.2–1.7). A tenth of that keeps every channel carrying the picture while the posterior noise
# still teaches the decoder to tolerate a U-Net's small errors.
RECIPE = dict(batch=32, lr=8e-4, warmup=200, decay_from=0.5, final_lr_ratio=0.05, ema=0.999, colour_weight=4.0,
              edge_weight=1.0, kl_weight=1e-7, bf16=True, seed=0)


def build() -> AutoencoderKL:
    return AutoencoderKL(**CONFIG)


def load() -> AutoencoderKL:
    """This stage's committed VAE."""
    return load_weights("vae", build(), {"model": CONFIG, "recipe": RECIPE})


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per image, for tensors in [-1, 1]."""
    mse = ((a - b) / 2).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / mse)


def edges(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def losses(recon: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The reconstruction terms; the edge term costs blurred outlines what they look like (L1 alone
    lets a small decoder smear an outline into a ramp)."""
    return {
        "l1": F.l1_loss(recon, x),
        "colour_l1": F.l1_loss(F.avg_pool2d(recon, 8), F.avg_pool2d(x, 8)),
        "edge_l1": sum(F.l1_loss(r, t) for r, t in zip(edges(recon), edges(x))),
    }


def channel_usage(mean: torch.Tensor, std: torch.Tensor) -> list[dict]:
    """Per latent channel: the spread of the posterior means over images and positions, and the
    posterior's own std. A channel whose noise is not far below its spread carries little."""
    return [{"spread": round(float(mean[:, c].std()), 3), "noise": round(float(std[:, c].mean()), 3)}
            for c in range(mean.shape[1])]


def round_trips(vae: AutoencoderKL, images: np.ndarray, batch: int = 256):
    """Batches of uint8 images through the posterior's mode and back: (the input in [-1, 1], the
    posterior, the decoded picture clamped to [-1, 1]). Batched to bound memory on 3,500 images."""
    for start in range(0, len(images), batch):
        x = data.to_tensor_range(images[start : start + batch])
        posterior = vae.encode(x).latent_dist
        yield x, posterior, vae.decode(posterior.mode()).sample.clamp(-1, 1)


@torch.no_grad()
def evaluate(vae: AutoencoderKL, images: np.ndarray, records: list[dict]) -> tuple[dict, list[dict]]:
    """Held-out reconstruction PSNR (dB), overall and per pattern (fashion) / for dishes, and the
    latent channels' usage."""
    scores, means, stds = [], [], []
    for x, posterior, recon in round_trips(vae, images):
        scores.append(psnr(recon, x))
        means.append(posterior.mean)
        stds.append(posterior.std)
    scores = torch.cat(scores).numpy()
    groups: dict[str, list[float]] = {}
    for score, record in zip(scores, records):
        groups.setdefault(record.get("pattern", "dish"), []).append(float(score))
    quality = {"all": round(float(scores.mean()), 2), **{k: round(float(np.mean(v)), 2) for k, v in sorted(groups.items())}}
    return quality, channel_usage(torch.cat(means), torch.cat(stds))


@torch.no_grad()
def scaling_factor(vae: AutoencoderKL, images: np.ndarray) -> float:
    x = data.to_tensor_range(images[:1024])
    latents = torch.cat([vae.encode(x[i : i + 256]).latent_dist.sample() for i in range(0, len(x), 256)])
    return float(1.0 / latents.flatten().std())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=80.0, help="stop after this much training in all")
    args = parser.parse_args()
    threads = set_threads()
    seed_everything(RECIPE["seed"])

    images, _ = data.split("train")
    held_images, held_records = data.split("heldout")
    vae = build()
    ema = Ema(vae, RECIPE["ema"])
    optimizer = torch.optim.AdamW(vae.parameters(), lr=RECIPE["lr"], weight_decay=0.0)
    run = Run("vae", {"model": CONFIG, "recipe": RECIPE})
    modules = {"vae": vae, "ema": ema.shadow}
    step, seconds = run.resume(modules, optimizer)
    budget = args.minutes * 60.0
    print(f"vae: {sum(p.numel() for p in vae.parameters()) / 1e6:.2f} M parameters, {threads} threads, "
          f"resuming at step {step} ({seconds / 60:.1f} min done)", file=sys.stderr)

    bar = tqdm(total=round(budget), initial=round(min(seconds, budget)), unit="s", desc="vae")
    vae.train()
    with Interrupt("vae") as interrupt:
        while seconds < budget and not interrupt.requested:
            started = time.monotonic()
            index = np.random.randint(0, len(images), RECIPE["batch"])
            x = data.to_tensor_range(images[index])
            # bf16 autocast: 1.7x the images per second of fp32 on an AMX Xeon (measured here); the U-Net
            # stage gains nothing from it and stays fp32.
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=RECIPE["bf16"]):
                posterior = vae.encode(x).latent_dist
                recon = vae.decode(posterior.sample()).sample
            terms = losses(recon.float(), x)
            kl = posterior.kl().mean()
            loss = (terms["l1"] + RECIPE["colour_weight"] * terms["colour_l1"] + RECIPE["edge_weight"] * terms["edge_l1"]
                    + RECIPE["kl_weight"] * kl)
            for group in optimizer.param_groups:
                # Warm-up only from step 0: a resumed run restores Adam's moments with the weights.
                group["lr"] = learning_rate(RECIPE, step, seconds / budget)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            ema.update(vae, step)
            seconds += time.monotonic() - started
            bar.update(round(min(seconds, budget)) - bar.n)
            if step % 25 == 0:
                usage = channel_usage(posterior.mean.detach().float(), posterior.std.detach().float())
                run.log({"step": step, "seconds": round(seconds, 1), **{k: v.item() for k, v in terms.items()},
                         "kl": kl.item(), "channels": usage})
                bar.set_postfix(step=step, l1=f"{terms['l1'].item():.4f}")
            if not math.isfinite(loss.item()):
                raise StageError(f"vae: loss became {loss.item()} at step {step}; lower the learning rate in RECIPE")
            if run.due():
                run.save(modules, optimizer, step, seconds)
    bar.close()
    run.save(modules, optimizer, step, seconds)
    interrupt.exit_if_requested(step, seconds, args.minutes)

    shipped = ema.shadow.eval()
    factor = scaling_factor(shipped, images)
    quality, usage = evaluate(shipped, held_images, held_records)
    path = save_weights(
        "vae",
        shipped,
        {"model": CONFIG, "recipe": RECIPE},
        {"scaling_factor": factor, "heldout_psnr_db": quality, "latent_channels": usage, "steps": step,
         "train_seconds": round(seconds), "threads": threads},
    )
    print(f"vae: {step} steps in {seconds / 60:.1f} min; scaling factor {factor:.4f}; held-out PSNR {quality}; "
          f"latent channels {usage}; wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except StageError as error:
        sys.exit(f"error: {error}")
