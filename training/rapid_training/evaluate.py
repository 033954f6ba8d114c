"""Run with: .venv-fixtures/bin/python -m rapid_training.evaluate [--per-item 16] (from training/;
`make -C training eval`). Writes training/RESULTS.md and training/results.json.

Does the model follow its prompts? Prompts are made from held-out records (never trained on) in
English and Chinese; the classifier (`classifier.py`, its held-out accuracy stated) reads each
generated 64-px image, and the image counts as right on a head when the classifier names what the
prompt asked for (item, colour, pattern; dish for menu prompts). FID is computed on the classifier's
pooled features against the held-out real images, per domain. Rows:

- held-out real images themselves (the judge's own accuracy, and the FID floor: one half of the
  held-out images against the other);
- held-out images through the shipped VAE (the ceiling the decoder leaves any U-Net);
- the same architecture with random weights (what the bundled models were before);
- the trained model at the shipped defaults, in each language, with and without the knowledge
  entities, at guidance 1 / 4 / 7.5;
- every sampler at 10, 20 and 50 steps;
- one 64-px image (256 px after ESRGAN) through `rapid-worker generate` with the defaults, timed.

Generation uses diffusers' pipeline on the PyTorch modules (batched); the worker matches it within
2/255 (the parity test in `worker/engine/tests/pipeline.rs`).
"""

import argparse
import json
import os
import random
import subprocess
import sys
import time

import numpy as np
import torch
from scipy import linalg

from . import captions, classifier, data, pipeline, report, train_vae, vocab
from .checkpoint import TRAINING_DIR, StageError, stage_meta

REPO = TRAINING_DIR.parent
MODEL_DIR = REPO / "models" / "rapid-mini"
GUIDANCE = 7.5
BASELINE = ("pndm", 50)
TARGETS = {"colour": 85.0, "item": 75.0, "pattern": 60.0}
STEP_COUNTS = (10, 20, 50)


def prompt_for(record: dict, language: str) -> str:
    """A held-out record's prompt that names everything the judge checks (colour and pattern for
    fashion), worded by the same captions as training, seeded by the record."""
    rng = random.Random(f"eval:{record['id']}:{language}")
    for _ in range(100):
        prompt = captions.caption(record, language, rng)
        if record["kind"] == "dish" or _names_attributes(record, prompt, language):
            return prompt
    raise StageError(f"no prompt naming the colour and pattern of {record['id']} in 100 tries")


def _names_attributes(record: dict, prompt: str, language: str) -> bool:
    colour = vocab.COLOURS[vocab.COLOUR_NAMES.index(record["colour"])]
    colour_words = (colour.name,) if language == "en" else colour.zh
    pattern = vocab.PATTERNS[vocab.PATTERN_NAMES.index(record["pattern"])]
    pattern_words = pattern.en if language == "en" else pattern.zh
    named_colour = any(w in prompt for w in colour_words)
    named_pattern = record["pattern"] == "solid" or any(w in prompt for w in pattern_words)
    return named_colour and named_pattern


def pick_records(per_item: int, per_dish: int) -> list[dict]:
    records = data.records("heldout")
    picked, counts = [], {}
    for record in records:
        key = record.get("item") or record["dish"]
        limit = per_item if record["kind"] == "fashion" else per_dish
        if counts.get(key, 0) < limit:
            counts[key] = counts.get(key, 0) + 1
            picked.append(record)
    return picked


def fid(a: torch.Tensor, b: torch.Tensor) -> float:
    mu_a, mu_b = a.mean(0).double().numpy(), b.mean(0).double().numpy()
    cov_a, cov_b = np.cov(a.double().numpy(), rowvar=False), np.cov(b.double().numpy(), rowvar=False)
    root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root.real))


class Judge:
    def __init__(self, records: list[dict]):
        self.net = classifier.load()
        self.records = records
        self.truth = classifier.labels(records)
        self.fashion = self.truth[:, 1] != classifier.IGNORE
        self.held_images, held_records = data.split("heldout")
        self.held_truth = classifier.labels(held_records)
        predicted, self.real_features = classifier.predict(self.net, self.held_images)
        self.real_accuracy = classifier.accuracy(predicted, self.held_truth)
        self.real_fashion = torch.tensor([r["kind"] == "fashion" for r in held_records])

    def score(self, images: np.ndarray) -> dict:
        predicted, features = classifier.predict(self.net, images)
        scores = classifier.accuracy(predicted, self.truth)
        scores["fid_fashion"] = round(fid(features[self.fashion], self.real_features[self.real_fashion]), 2)
        scores["fid_dish"] = round(fid(features[~self.fashion], self.real_features[~self.real_fashion]), 2)
        return scores

    def through_vae(self, vae) -> dict:
        """The held-out images encoded and decoded by the shipped VAE, against the images themselves:
        what the decoder lets a perfect U-Net score."""
        predicted, features = classifier.predict(self.net, reconstruct(vae, self.held_images))
        scores = classifier.accuracy(predicted, self.held_truth)
        f, fashion = self.real_features, self.real_fashion
        scores["fid_fashion"] = round(fid(features[fashion], f[fashion]), 2)
        scores["fid_dish"] = round(fid(features[~fashion], f[~fashion]), 2)
        return scores

    def real_floor(self) -> dict:
        """FID of one half of the held-out images against the other: the floor a model can reach."""
        half = torch.arange(len(self.real_features)) % 2 == 0
        f, fashion = self.real_features, self.real_fashion
        return {"fid_fashion": round(fid(f[half & fashion], f[~half & fashion]), 2),
                "fid_dish": round(fid(f[half & ~fashion], f[~half & ~fashion]), 2)}


@torch.no_grad()
def reconstruct(vae, images: np.ndarray) -> np.ndarray:
    """uint8 images through the VAE's posterior mode and back, as uint8."""
    return np.concatenate([((recon + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
                           for _, _, recon in train_vae.round_trips(vae, images)])


def generate(model, records, language, *, sampler, steps, guidance, knowledge=True, batch=128) -> np.ndarray:
    # "both": every other record in Chinese, so one row covers both languages at half the cost.
    prompts = [prompt_for(r, ("en", "zh")[i % 2] if language == "both" else language) for i, r in enumerate(records)]
    images = []
    for start in range(0, len(records), batch):
        seeds = list(range(start, min(start + batch, len(records))))
        images.append(pipeline.generate(model, prompts[start : start + batch], sampler=sampler, steps=steps,
                                        guidance=guidance, seeds=seeds, use_knowledge=knowledge))
    return np.concatenate(images)


def choose_defaults(sweep: list[dict]) -> dict:
    """The fewest steps whose item, colour and pattern scores (both languages) each stay within one
    point of 50 PNDM steps; among equals, the best mean score."""
    scores = {(r["sampler"], r["steps"]): {h: r[h] for h in TARGETS} for r in sweep}
    baseline = scores[BASELINE]
    passing = [k for k, v in scores.items() if all(v[h] >= baseline[h] - 1.0 for h in TARGETS)]
    sampler, steps = min(passing, key=lambda k: (k[1], -sum(scores[k].values())))
    return {"sampler": sampler, "steps": steps, "guidance": GUIDANCE}


def choose_guidance(rows: list[dict]) -> float:
    """The guidance (of those measured per language, knowledge on, at the chosen sampler and steps)
    whose worst margin over the targets, across both languages and the three heads, is widest: too
    little guidance ignores the prompt, too much over-saturates colours into their neighbours."""
    margins: dict[float, float] = {}
    for r in rows:
        if r.get("knowledge") and r.get("language") in ("en", "zh") and not r["name"].startswith("random"):
            worst = min(r[h] - TARGETS[h] for h in TARGETS)
            margins[r["guidance"]] = min(margins.get(r["guidance"], worst), worst)
    return max(margins, key=lambda g: (margins[g], g == GUIDANCE))


def worker_timing(defaults: dict) -> dict:
    """One image through the Rust worker's CLI with the shipped defaults (ESRGAN on), warm."""
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "rapid-worker"], cwd=REPO, check=True)
    out = TRAINING_DIR / ".cache" / "timing"
    out.mkdir(parents=True, exist_ok=True)
    command = [str(REPO / "target" / "release" / "rapid-worker"), "generate", "--model", str(MODEL_DIR),
               "--prompt", "a crimson silk evening dress", "--seed", "7", "--steps", str(defaults["steps"]),
               "--sampler", defaults["sampler"], "--guidance-scale", str(defaults["guidance"]), "--warm-up",
               "--out", str(out / "image.png"), "--timings", str(out / "timings.json")]
    started = time.monotonic()
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return {"process_seconds": round(time.monotonic() - started, 2), "stages_ms": json.loads((out / "timings.json").read_text())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-item", type=int, default=6, help="held-out prompts per fashion item and language")
    parser.add_argument("--per-dish", type=int, default=1, help="held-out prompts per dish and language")
    parser.add_argument("--skip-worker", action="store_true", help="leave out the Rust worker timing")
    args = parser.parse_args()
    torch.set_num_threads(2)
    records = pick_records(args.per_item, args.per_dish)
    judge = Judge(records)
    trained, untrained = pipeline.load(), pipeline.load(random_weights=True)
    rows = []

    def row(name: str, **settings) -> None:
        model = untrained if settings.pop("random", False) else trained
        started = time.monotonic()
        images = generate(model, records, **settings)
        scores = judge.score(images)
        rows.append({"name": name, **settings, **scores, "seconds": round(time.monotonic() - started, 1)})
        print(f"{name}: {scores}", file=sys.stderr)

    rows.append({"name": "held-out real images", **judge.real_accuracy, **judge.real_floor()})
    rows.append({"name": "held-out images through the VAE", **judge.through_vae(trained.vae)})
    sweep = []
    for sampler in pipeline.SAMPLERS:
        for steps in STEP_COUNTS:
            row(f"trained, {sampler} {steps} steps", language="both", sampler=sampler, steps=steps, guidance=GUIDANCE)
            sweep.append(rows[-1])
    defaults = choose_defaults(sweep)
    for language in ("en", "zh"):
        row(f"random weights, {language}", language=language, random=True, **defaults)
        for knowledge in (True, False):
            for guidance in (1.0, 4.0, 7.5):
                row(f"trained, {language}, knowledge {'on' if knowledge else 'off'}, guidance {guidance}",
                    language=language, knowledge=knowledge, **{**defaults, "guidance": guidance})
    defaults["guidance"] = choose_guidance(rows)

    timing = None if args.skip_worker else worker_timing(defaults)
    results = {"defaults": defaults, "targets_percent": TARGETS, "prompts": len(records), "rows": rows,
               "judge": stage_meta("classifier"), "training": {s: _stage_timing(s) for s in
               ("vae", "esrgan", "text_encoder", "unet", "classifier")}, "worker_one_image": timing,
               "machine": machine()}
    (TRAINING_DIR / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    (TRAINING_DIR / "RESULTS.md").write_text(report.render(results))
    print(f"wrote {TRAINING_DIR / 'results.json'} and RESULTS.md", file=sys.stderr)


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def _stage_timing(stage: str) -> dict:
    meta = stage_meta(stage)
    return {k: meta[k] for k in ("train_seconds", "steps", "threads") if k in meta}


if __name__ == "__main__":
    try:
        main()
    except StageError as error:
        sys.exit(f"error: {error}")
