"""Run with: .venv-fixtures/bin/python -m rapid_training.esrgan [--minutes 15] (from training/).

Stage 4: a tiny ESRGAN RRDBNet ×4 fine-tuned on bicubic-downsampled pairs of the data set's 256-px
renders (paper §4.5), with L1 loss on 128-px crops. Reports the held-out PSNR of bicubic upscaling, of
the starting network and of the trained one, as the paper does (22.7 → 23.1 dB there), and writes the
EMA weights to `weights/esrgan.safetensors`.

RRDBNet is the original ESRGAN architecture with its state-dict names (`conv_first`,
`RRDB_trunk.N.RDBk.convj`, …), so ESRGAN weights of the same widths load unchanged. The test fixtures'
script builds its random upscaler from this class too.

The shipped net adds its output to the bicubic upscale of its input (`bicubic_skip`, global residual
learning as in VDSR) and starts with a zero last layer, so it begins exactly at bicubic's PSNR and
learns only the detail bicubic misses. The first recipe, the plain network started as a
nearest-neighbour upscaler, ended 1.8 dB *below* bicubic after 6 minutes (30.3 against 32.1 dB): a net
this small cannot relearn the whole image in the minutes a CPU session gives it. The skip has no
weights; ONNX carries it as a cubic `Resize`, which every execution provider runs.
"""

import argparse
import math
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from .checkpoint import Ema, Interrupt, Run, StageError, save_weights, seed_everything, set_threads


class ResidualDenseBlock_5C(nn.Module):
    def __init__(self, nf=64, gc=32, bias=True):
        super().__init__()
        self.conv1 = nn.Conv2d(nf, gc, 3, 1, 1, bias=bias)
        self.conv2 = nn.Conv2d(nf + gc, gc, 3, 1, 1, bias=bias)
        self.conv3 = nn.Conv2d(nf + 2 * gc, gc, 3, 1, 1, bias=bias)
        self.conv4 = nn.Conv2d(nf + 3 * gc, gc, 3, 1, 1, bias=bias)
        self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1, bias=bias)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x):
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    def __init__(self, nf, gc=32):
        super().__init__()
        self.RDB1 = ResidualDenseBlock_5C(nf, gc)
        self.RDB2 = ResidualDenseBlock_5C(nf, gc)
        self.RDB3 = ResidualDenseBlock_5C(nf, gc)

    def forward(self, x):
        out = self.RDB1(x)
        out = self.RDB2(out)
        out = self.RDB3(out)
        return out * 0.2 + x


class RRDBNet(nn.Module):
    def __init__(self, in_nc=3, out_nc=3, nf=64, nb=23, gc=32, bicubic_skip=False):
        super().__init__()
        self.bicubic_skip = bicubic_skip
        self.conv_first = nn.Conv2d(in_nc, nf, 3, 1, 1, bias=True)
        self.RRDB_trunk = nn.Sequential(*[RRDB(nf, gc) for _ in range(nb)])
        self.trunk_conv = nn.Conv2d(nf, nf, 3, 1, 1, bias=True)
        self.upconv1 = nn.Conv2d(nf, nf, 3, 1, 1, bias=True)
        self.upconv2 = nn.Conv2d(nf, nf, 3, 1, 1, bias=True)
        self.HRconv = nn.Conv2d(nf, nf, 3, 1, 1, bias=True)
        self.conv_last = nn.Conv2d(nf, out_nc, 3, 1, 1, bias=True)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x):
        fea = self.conv_first(x)
        trunk = self.trunk_conv(self.RRDB_trunk(fea))
        fea = fea + trunk
        fea = self.lrelu(self.upconv1(F.interpolate(fea, scale_factor=2, mode="nearest")))
        fea = self.lrelu(self.upconv2(F.interpolate(fea, scale_factor=2, mode="nearest")))
        out = self.conv_last(self.lrelu(self.HRconv(fea)))
        if self.bicubic_skip:
            out = out + F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
        return out


def identity_init_(net: RRDBNet, seed: int | None) -> RRDBNet:
    """Small random weights plus an identity (Dirac) kernel carrying RGB along the main path, so the
    untrained network is a nearest-neighbour upscaler rather than noise. With `seed`, the draws start
    from it; without, from the caller's RNG state (the test fixtures seed before building the net)."""
    if seed is not None:
        torch.manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.normal_(m.bias, 0.0, 0.005)
        for conv in (net.conv_first, net.upconv1, net.upconv2, net.HRconv, net.conv_last):
            for c in range(3):
                conv.weight[c, c, 1, 1] += 1.0
    return net


def residual_init_(net: RRDBNet, seed: int) -> RRDBNet:
    """Kaiming weights scaled by 0.1 (ESRGAN's own initialisation, which keeps the deep residual trunk
    near identity) and a zero last layer, so a `bicubic_skip` net starts as bicubic upscaling."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=0.2, mode="fan_in")
                m.weight.mul_(0.1)
                nn.init.zeros_(m.bias)
        nn.init.zeros_(net.conv_last.weight)
    return net


CONFIG = dict(in_nc=3, out_nc=3, nf=32, nb=2, gc=16, bicubic_skip=True)
RECIPE = dict(batch=16, crop=128, lr=2e-4, ema=0.999, seed=0)


def build() -> RRDBNet:
    return residual_init_(RRDBNet(**CONFIG), RECIPE["seed"])


def downsample(hr: torch.Tensor) -> torch.Tensor:
    """Bicubic ×1/4 with antialiasing (as PIL's and MATLAB's imresize do), the paper's degradation."""
    return F.interpolate(hr, scale_factor=0.25, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.clamp(0, 1) - b).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return float((10 * torch.log10(1.0 / mse)).mean())


@torch.no_grad()
def heldout_psnr(net: RRDBNet | None, hr_images: np.ndarray) -> float:
    """Mean PSNR (dB) over held-out 256-px images upscaled from their bicubic 64-px versions; `None`
    measures bicubic upscaling itself."""
    scores = []
    for start in range(0, len(hr_images), 32):
        hr = torch.from_numpy(hr_images[start : start + 32]).permute(0, 3, 1, 2).float() / 255.0
        lr = downsample(hr)
        sr = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False) if net is None else net(lr)
        scores.append(psnr(sr, hr) * len(hr))
    return round(sum(scores) / len(hr_images), 2)


def main() -> None:
    from . import data

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=15.0, help="stop after this much training in all")
    args = parser.parse_args()
    threads = set_threads()

    train_hr, _ = data.split("train", size=256)
    held_hr, _ = data.split("heldout", size=256)
    net = build()
    before = {"bicubic": heldout_psnr(None, held_hr), "untrained": heldout_psnr(net.eval(), held_hr)}
    seed_everything(RECIPE["seed"])
    ema = Ema(net, RECIPE["ema"])
    optimizer = torch.optim.Adam(net.parameters(), lr=RECIPE["lr"])
    run = Run("esrgan", {"model": CONFIG, "recipe": RECIPE})
    modules = {"net": net, "ema": ema.shadow}
    step, seconds = run.resume(modules, optimizer)
    budget = args.minutes * 60.0
    print(f"esrgan: {sum(p.numel() for p in net.parameters()) / 1e3:.0f} k parameters, {threads} threads, "
          f"held-out PSNR before {before}, resuming at step {step}", file=sys.stderr)
    bar = tqdm(total=round(budget), initial=round(min(seconds, budget)), unit="s", desc="esrgan")
    net.train()
    crop = RECIPE["crop"]
    with Interrupt("esrgan") as interrupt:
        while seconds < budget and not interrupt.requested:
            started = time.monotonic()
            index = np.random.randint(0, len(train_hr), RECIPE["batch"])
            y, x = np.random.randint(0, 256 - crop + 1, 2) // 4 * 4
            hr = torch.from_numpy(train_hr[index, y : y + crop, x : x + crop]).permute(0, 3, 1, 2).float() / 255.0
            loss = F.l1_loss(net(downsample(hr)), hr)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            ema.update(net, step)
            seconds += time.monotonic() - started
            bar.update(round(min(seconds, budget)) - bar.n)
            if step % 25 == 0:
                run.log({"step": step, "seconds": round(seconds, 1), "l1": loss.item()})
                bar.set_postfix(step=step, l1=f"{loss.item():.4f}")
            if not math.isfinite(loss.item()):
                raise StageError(f"esrgan: loss became {loss.item()} at step {step}; lower the learning rate in RECIPE")
            if run.due():
                run.save(modules, optimizer, step, seconds)
    bar.close()
    run.save(modules, optimizer, step, seconds)
    interrupt.exit_if_requested(step, seconds, args.minutes)
    after = heldout_psnr(ema.shadow.eval(), held_hr)
    path = save_weights("esrgan", ema.shadow, {"model": CONFIG, "recipe": RECIPE},
                        {"heldout_psnr_db": {**before, "trained": after}, "steps": step, "train_seconds": round(seconds),
                         "threads": threads})
    print(f"esrgan: {step} steps in {seconds / 60:.1f} min; held-out PSNR {before} → {after} dB; wrote {path}",
          file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except StageError as error:
        sys.exit(f"error: {error}")
