"""Probe, not a stage: does a wider decoder, trained from scratch on the frozen stage-1 encoder's latents,
get below the shipped decoder's loss? If so the latents hold more than the small decoder draws.

Run from training/: ../.venv-fixtures/bin/python experiments/probe_decoder.py MINUTES CHANNELS
(e.g. 18 64,128,128). Same loss as stage 1b; prints the mean L1 every 100 steps and the held-out PSNR
at the end; writes nothing. Result of 2026-12-07 in training/README.md ("The VAE is the ceiling").
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rapid_training import data, train_decoder, train_vae  # noqa: E402


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: probe_decoder.py MINUTES CHANNELS (e.g. 18 64,128,128)")
    minutes, channels = float(sys.argv[1]), [int(c) for c in sys.argv[2].split(",")]
    torch.set_num_threads(2)
    torch.manual_seed(0)
    np.random.seed(0)
    images, _ = data.split("train")
    held_images, held_records = data.split("heldout")
    frozen = train_vae.load()
    wide = AutoencoderKL(**{**train_vae.CONFIG, "block_out_channels": channels})
    trained = train_decoder.decoder_part(wide)
    print(f"{sum(p.numel() for p in trained.parameters()) / 1e6:.2f} M parameters", flush=True)
    optimizer = torch.optim.AdamW(trained.parameters(), lr=5e-4)
    started, step, losses = time.monotonic(), 0, []
    while time.monotonic() - started < minutes * 60:
        x = data.to_tensor_range(images[np.random.randint(0, len(images), 32)])
        with torch.no_grad():
            latents = frozen.encode(x).latent_dist.sample()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            recon = wide.decode(latents).sample.float()
        l1 = F.l1_loss(recon, x)
        colour = F.l1_loss(F.avg_pool2d(recon, 8), F.avg_pool2d(x, 8))
        edge = sum(F.l1_loss(r, t) for r, t in zip(train_decoder.edges(recon), train_decoder.edges(x)))
        optimizer.zero_grad()
        (l1 + 4 * colour + edge).backward()
        optimizer.step()
        step += 1
        losses.append(l1.item())
        if step % 100 == 0:
            print(f"step {step}, {time.monotonic() - started:.0f} s, L1 {np.mean(losses[-100:]):.4f}", flush=True)
    wide.encoder, wide.quant_conv = frozen.encoder, frozen.quant_conv
    print("held-out PSNR", train_vae.evaluate(wide.eval(), held_images, held_records), flush=True)


if __name__ == "__main__":
    main()
