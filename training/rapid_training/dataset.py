"""Run with: .venv-fixtures/bin/python -m rapid_training.dataset [--seed 0] [--out .cache/data]
(from training/; `make -C training data` does it).

Makes the domain data set: records drawn from the seed (what each picture shows and how it is posed),
rendered at 64×64 (and, for the upscaler, 256×256), with an English and a Chinese caption per record.
Fashion-MNIST's own test images, and a seeded share of the icon-drawn records, form the held-out
split, which no training stage reads.

Output, per split: `{split}.npz` (images [N, 64, 64, 3] uint8) and `{split}.jsonl` (one record per line,
captions included). Written to a temporary folder and renamed into place, so a stopped run leaves
no half-made data set.
"""

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from . import captions, render, vocab

SIZE = 64
SPLITS = ("train", "heldout")


def _fashion_record(item: vocab.Item, split: str, rng: random.Random, fmnist_pool: dict) -> dict:
    # Shapes: Fashion-MNIST (train images for train, test images for held-out) where the item has them,
    # icons otherwise or one time in four, so icon styles are learnt alongside photos.
    use_fmnist = item.fmnist is not None and (not item.icons or rng.random() < 0.75)
    if use_fmnist:
        fmnist_split = "train" if split == "train" else "t10k"
        source = f"fmnist:{fmnist_split}:{rng.choice(fmnist_pool[fmnist_split][item.fmnist])}"
    else:
        source = rng.choice(item.icons)
    return {
        "kind": "fashion",
        "item": item.name,
        "colour": rng.choice(vocab.COLOUR_NAMES),
        "pattern": rng.choice(vocab.PATTERN_NAMES),
        "fabric": rng.choice(vocab.FABRIC_NAMES),
        "source": source,
        "pose": _pose(rng, rotation=8.0),
        "pattern_params": {
            "period": rng.uniform(6.5, 10.0),
            "angle": rng.choice((0.0, 90.0, 45.0)) + rng.uniform(-6.0, 6.0),
            "phase": rng.random(),
            "phase2": rng.random(),
            "duty": rng.uniform(0.35, 0.45),
            "radius": rng.uniform(1.3, 2.1),
        },
        "fabric_params": {
            "noise_seed": rng.randrange(2**31),
            "sheen_angle": rng.uniform(20.0, 70.0),
            "sheen_at": rng.uniform(0.3, 0.9),
        },
        "background": _studio_background(rng),
    }


def _dish_record(dish: vocab.Dish, rng: random.Random) -> dict:
    return {
        "kind": "dish",
        "dish": dish.icon,
        "source": f"{rng.choice(vocab.EMOJI_SETS)}:{dish.icon}",
        "pose": _pose(rng, rotation=12.0),
        "background": rng.choice(((236, 222, 200), (244, 240, 232), (222, 214, 205), (250, 250, 250), (205, 180, 150))),
    }


def _pose(rng: random.Random, rotation: float) -> dict:
    return {
        "scale": rng.uniform(0.62, 0.95),
        "rotation": rng.uniform(-rotation, rotation),
        "flip": rng.random() < 0.5,
        "x": rng.random(),
        "y": rng.random(),
    }


def _studio_background(rng: random.Random) -> tuple[int, int, int]:
    level = rng.randint(222, 246)
    tint = rng.choice((0, 3, -3))
    return (level + tint, level, level - tint)


def make_records(seed: int, per_item: dict[str, int], per_dish: dict[str, int]) -> dict[str, list[dict]]:
    """The records of each split, drawn from `seed` alone."""
    rng = random.Random(seed)
    fmnist_pool = {}
    for split in ("train", "t10k"):
        labels = render.fmnist(split)[1]
        fmnist_pool[split] = {label: np.flatnonzero(labels == label).tolist() for label in range(10)}
    splits: dict[str, list[dict]] = {}
    for split in SPLITS:
        records = [_fashion_record(item, split, rng, fmnist_pool) for item in vocab.ITEMS for _ in range(per_item[split])]
        records += [_dish_record(dish, rng) for dish in vocab.DISHES for _ in range(per_dish[split])]
        rng.shuffle(records)
        for index, record in enumerate(records):
            record["id"] = f"{split}-{index:06d}"
            caption_rng = random.Random(f"{seed}:{record['id']}")
            record["caption_en"] = captions.caption(record, "en", caption_rng)
            record["caption_zh"] = captions.caption(record, "zh", caption_rng)
        splits[split] = records
    return splits


def _render_one(args: tuple[dict, int]) -> np.ndarray:
    record, size = args
    return render.render(record, size)


def render_all(records: list[dict], size: int, workers: int) -> np.ndarray:
    with Pool(workers) as pool:
        images = pool.map(_render_one, [(r, size) for r in records], chunksize=64)
    return np.stack(images)


def write(out: Path, splits: dict[str, list[dict]], workers: int, hr_records: int) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".data-", dir=out.parent))
    try:
        for split, records in splits.items():
            images = render_all(records, SIZE, workers)
            np.savez(staging / f"{split}.npz", images=images)
            with open(staging / f"{split}.jsonl", "w") as file:
                for record in records:
                    file.write(json.dumps(record, ensure_ascii=False) + "\n")
            # High-resolution renders of the first records, for the upscaler's bicubic pairs.
            hr = render_all(records[: hr_records if split == "train" else hr_records // 4], SIZE * 4, workers)
            np.savez(staging / f"{split}-256.npz", images=hr)
            print(f"{split}: {len(records)} images, {len(hr)} at 256 px", file=sys.stderr)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(".cache/data"))
    parser.add_argument("--per-item", type=int, default=4000, help="training images per fashion item")
    parser.add_argument("--per-dish", type=int, default=160, help="training images per dish")
    parser.add_argument("--heldout-per-item", type=int, default=160)
    parser.add_argument("--heldout-per-dish", type=int, default=16)
    parser.add_argument("--hr-records", type=int, default=2400, help="training records also rendered at 256 px")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    try:
        splits = make_records(
            args.seed,
            {"train": args.per_item, "heldout": args.heldout_per_item},
            {"train": args.per_dish, "heldout": args.heldout_per_dish},
        )
        write(args.out, splits, args.workers, args.hr_records)
    except render.DataError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
