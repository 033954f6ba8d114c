"""Run with: .venv-fixtures/bin/python -m rapid_training.train_unet [--minutes 105] [--stop-after M] (from training/).

Stage 2: the text encoder and a small cross-attention U-Net (diffusers' UNet2DConditionModel),
trained together from scratch on the VAE's latents: ε-prediction on Stable Diffusion's noise schedule,
min-SNR loss weighting (Hang et al. 2023, γ = 5), captions in English or Chinese drawn afresh each
time from the record's attributes, 10 % of captions dropped to "" so classifier-free guidance works,
and the knowledge graph's entity vectors injected for half of the captions, so the model works with and
without them. Starts from the committed VAE (`weights/vae.safetensors`); resumable; ends with the EMA
weights of both parts in `weights/`.

On a machine without this stage's checkpoint (a new clone) but with committed U-Net and text-encoder
weights of the same architecture, trained on the latents of the committed VAE, training goes on from
those weights with a fresh optimizer: the committed EMA weights are both the live and the averaged
start, and the clock and step count carry on from their metadata, so `--minutes` is always the
stage's total. `--stop-after` ends a run early (a session's share of a longer budget) and commits the
EMA weights so far, marked unfinished; the export refuses them until a later run has spent the budget.
Ctrl-C (or SIGTERM) does the same after the current step, so stopping loses nothing.
Weights or a checkpoint made on another VAE's latents are never continued: they mean nothing here.
The learning rate warms up from each fresh optimizer (a resumed checkpoint restores Adam's moments
and goes on at full rate), holds, then follows a cosine down over the last part of the budget.
Dishes are a seventh of the records but drawn for `dish_share` of each batch: menu dishes are many
classes with few images.
"""

import argparse
import hashlib
import math
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DConditionModel
from tqdm import tqdm

from . import captions, data, text, train_vae
from .checkpoint import (
    RUNS_DIR, TRAINING_DIR, WEIGHTS_DIR, Ema, Interrupt, Run, StageError, differing, learning_rate, load_weights,
    save_weights, seed_everything, set_threads, stage_meta,
)

UNET_CONFIG = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    block_out_channels=[48, 96, 128],
    layers_per_block=1,
    attention_head_dim=4,
    norm_num_groups=16,
    cross_attention_dim=text.HIDDEN,
)
# Stable Diffusion 1.x's schedule, the one the worker's samplers read from scheduler_config.json.
NOISE_SCHEDULE = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    prediction_type="epsilon",
)
RECIPE = dict(batch=64, lr=4e-4, warmup=300, decay_from=0.6, final_lr_ratio=0.05, ema=0.9995, caption_dropout=0.1,
              knowledge_rate=0.5, min_snr_gamma=5.0, dish_share=0.2, bf16=False, seed=0)
LATENTS_CACHE = TRAINING_DIR / ".cache" / "latents"
# What a checkpoint or committed weights must match to be continued or loaded.
MUST_MATCH = ("model", "latents")


def build_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(**UNET_CONFIG)


def latents_id() -> dict:
    """Which VAE's latents the U-Net learns: the hash of its committed weights."""
    path = WEIGHTS_DIR / "vae.safetensors"
    if not path.exists():
        raise StageError(f"{path}: missing; train the `vae` stage first (`make -C training vae`)")
    return {"vae_sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:16]}


def stage_config(vocab_size: int) -> dict:
    """The stage's config as checkpoints and committed weights record it."""
    return {"model": {"unet": UNET_CONFIG, "encoder": text.ENCODER_CONFIG, "vocab": vocab_size},
            "latents": latents_id(), "noise": NOISE_SCHEDULE, "recipe": RECIPE}


@torch.no_grad()
def encode_latents(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE posterior's mean and std of every image of `split`, cached per VAE weights."""
    path = LATENTS_CACHE / f"{split}-{latents_id()['vae_sha256']}.pt"
    if path.exists():
        cached = torch.load(path)
        return cached["mean"], cached["std"]
    images, _ = data.split(split)
    vae = train_vae.load()
    means, stds = [], []
    for start in tqdm(range(0, len(images), 256), desc=f"encoding {split}", unit="batch"):
        dist = vae.encode(data.to_tensor_range(images[start : start + 256])).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    mean, std = torch.cat(means), torch.cat(stds)
    LATENTS_CACHE.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save({"mean": mean, "std": std}, partial)
    partial.replace(path)
    return mean, std


class Conditioning:
    """Captions for a batch of records, tokenized and with their entity vectors, as the worker builds them."""

    def __init__(self, tokenizer: text.Tokenizer, knowledge: text.Knowledge):
        self.tokenizer = tokenizer
        self.knowledge = knowledge
        self.dim = knowledge.vectors.shape[1]

    def __call__(self, prompts: list[str], use_knowledge: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
        encodings = self.tokenizer(prompts)
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
        vectors = torch.zeros(len(prompts), text.MAX_LENGTH, self.dim)
        for row, (encoding, prompt, knows) in enumerate(zip(encodings, prompts, use_knowledge)):
            if knows:
                vectors[row] = text.entity_vectors([encoding], [prompt], self.knowledge, self.dim)[0]
        return ids, vectors


class BatchSampler:
    """Record indices for one batch: `dish_share` of them dishes, the rest fashion, uniformly within each."""

    def __init__(self, records: list[dict]):
        kinds = np.array([r["kind"] == "dish" for r in records])
        self.dishes, self.fashion = np.flatnonzero(kinds), np.flatnonzero(~kinds)
        if len(self.dishes) == 0 or len(self.fashion) == 0:
            raise StageError("unet: the training split needs both dish and fashion records; run `make -C training data`")

    def __call__(self, batch: int) -> np.ndarray:
        dishes = np.random.binomial(batch, RECIPE["dish_share"])
        return np.concatenate([np.random.choice(self.dishes, dishes), np.random.choice(self.fashion, batch - dishes)])


def continue_from_committed(modules: dict[str, torch.nn.Module], config: dict) -> tuple[int, float]:
    """Loads the committed EMA weights into the live and averaged modules; returns the (step, seconds)
    they were trained for, or (0, 0) when nothing usable is committed (none yet, or made for another
    architecture or on another VAE's latents: then this run starts from scratch and replaces them)."""
    if not all((WEIGHTS_DIR / f"{stage}.safetensors").exists() for stage in ("unet", "text_encoder")):
        return 0, 0.0
    meta = stage_meta("unet")
    if mismatch := differing(meta["config"], config, MUST_MATCH):
        print(f"unet: the committed weights do not match this stage's config in {mismatch}; training from scratch",
              file=sys.stderr)
        return 0, 0.0
    for stage, live, averaged in (("unet", "unet", "ema_unet"), ("text_encoder", "encoder", "ema_encoder")):
        load_weights(stage, modules[live], config, MUST_MATCH)
        modules[averaged].load_state_dict(modules[live].state_dict())
    print(f"unet: no checkpoint in {RUNS_DIR / 'unet'}; going on from the committed weights", file=sys.stderr)
    return meta["steps"], float(meta["train_seconds"])


def training_captions(records: list[dict], rng: random.Random, dropout: float) -> list[str]:
    return ["" if rng.random() < dropout else captions.caption(r, rng.choice(captions.LANGUAGES), rng) for r in records]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=105.0, help="the stage's budget: training minutes in all")
    parser.add_argument("--stop-after", type=float, default=math.inf, metavar="MINUTES",
                        help="end this run after MINUTES of training even if the budget is not spent, and commit "
                             "the weights so far (the learning-rate schedule still follows --minutes)")
    args = parser.parse_args()
    threads = set_threads()
    seed_everything(RECIPE["seed"])

    records = data.records("train")
    mean, std = encode_latents("train")
    scaling = stage_meta("vae")["scaling_factor"]
    tokenizer = text.Tokenizer()
    knowledge = text.Knowledge()
    conditioning = Conditioning(tokenizer, knowledge)
    encoder = text.TextEncoder(tokenizer.vocab_size, conditioning.dim)
    unet = build_unet()
    noise = DDPMScheduler(**NOISE_SCHEDULE)
    alphas = noise.alphas_cumprod
    snr = alphas / (1 - alphas)

    parameters = list(encoder.parameters()) + list(unet.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=RECIPE["lr"], weight_decay=0.01)
    ema_unet, ema_encoder = Ema(unet, RECIPE["ema"]), Ema(encoder, RECIPE["ema"])
    config = stage_config(tokenizer.vocab_size)
    run = Run("unet", config, must_match=MUST_MATCH)
    modules = {"unet": unet, "encoder": encoder, "ema_unet": ema_unet.shadow, "ema_encoder": ema_encoder.shadow}
    step, seconds = run.resume(modules, optimizer)
    # The learning rate warms up from a fresh optimizer's start (step 0, or the committed weights); a
    # resumed checkpoint restores Adam's moments, so it goes on at full rate.
    warm_from = 0
    if step == 0:
        step, seconds = continue_from_committed(modules, config)
        warm_from = step
    first_step, first_seconds = step, seconds
    batches = BatchSampler(records)
    caption_rng = random.Random(f"{RECIPE['seed']}:{step}")
    budget = args.minutes * 60.0
    stop_at = min(budget, seconds + args.stop_after * 60.0)
    count = sum(p.numel() for p in unet.parameters()) / 1e6, sum(p.numel() for p in encoder.parameters()) / 1e6
    print(f"unet: {count[0]:.2f} M + text encoder {count[1]:.2f} M parameters, {len(records)} records, "
          f"{threads} threads, resuming at step {step} ({seconds / 60:.1f} min done)", file=sys.stderr)

    bar = tqdm(total=round(budget), initial=round(min(seconds, budget)), unit="s", desc="unet")
    unet.train()
    encoder.train()
    with Interrupt("unet") as interrupt:
        while seconds < stop_at and not interrupt.requested:
            started = time.monotonic()
            index = batches(RECIPE["batch"])
            latents = (mean[index] + std[index] * torch.randn_like(std[index])) * scaling
            prompts = training_captions([records[i] for i in index], caption_rng, RECIPE["caption_dropout"])
            knows = [caption_rng.random() < RECIPE["knowledge_rate"] for _ in prompts]
            ids, vectors = conditioning(prompts, knows)
            epsilon = torch.randn_like(latents)
            timesteps = torch.randint(0, NOISE_SCHEDULE["num_train_timesteps"], (len(index),))
            noisy = noise.add_noise(latents, epsilon, timesteps)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=RECIPE["bf16"]):
                states = encoder(ids, vectors)
                predicted = unet(noisy, timesteps, states).sample
            per_sample = F.mse_loss(predicted.float(), epsilon, reduction="none").mean(dim=(1, 2, 3))
            weights = torch.clamp(snr[timesteps], max=RECIPE["min_snr_gamma"]) / snr[timesteps]
            loss = (per_sample * weights).mean()
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(RECIPE, step - warm_from, seconds / budget)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            step += 1
            ema_unet.update(unet, step)
            ema_encoder.update(encoder, step)
            seconds += time.monotonic() - started
            bar.update(round(min(seconds, budget)) - bar.n)
            if step % 25 == 0:
                run.log({"step": step, "seconds": round(seconds, 1), "loss": loss.item(), "mse": per_sample.mean().item()})
                bar.set_postfix(step=step, loss=f"{loss.item():.4f}")
            if not math.isfinite(loss.item()):
                raise StageError(f"unet: loss became {loss.item()} at step {step}; lower the learning rate in RECIPE")
            if run.due():
                run.save(modules, optimizer, step, seconds)
    bar.close()
    run.save(modules, optimizer, step, seconds)
    meta = {"steps": step, "train_seconds": round(seconds), "budget_minutes": args.minutes,
            "finished": seconds >= budget, "threads": threads, "images_seen": step * RECIPE["batch"]}
    save_weights("text_encoder", ema_encoder.shadow, config, meta)
    path = save_weights("unet", ema_unet.shadow, config, meta)
    left = "" if meta["finished"] else f", {(budget - seconds) / 60:.1f} of the {args.minutes:g}-minute budget left"
    print(f"unet: {step} steps in {seconds / 60:.1f} min ({step - first_step} in this run, "
          f"{(seconds - first_seconds) / 60:.1f} min){left}; wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except StageError as error:
        sys.exit(f"error: {error}")
