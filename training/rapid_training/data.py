"""Reads the data set that `dataset.py` wrote, checking it as it goes: a missing or unreadable file, an
empty split, a record without captions or a count that does not match its images stops with the file
named."""

import json
from pathlib import Path

import numpy as np

from .checkpoint import TRAINING_DIR, StageError

DATA_DIR = TRAINING_DIR / ".cache" / "data"


def _images(path: Path, size: int) -> np.ndarray:
    try:
        images = np.load(path)["images"]
    except (OSError, KeyError, ValueError) as error:
        raise StageError(f"{path}: cannot read images ({error}); rebuild the data set with `make -C training data`")
    if images.ndim != 4 or images.shape[1:] != (size, size, 3) or images.dtype != np.uint8:
        raise StageError(f"{path}: holds {images.dtype} {images.shape}, not uint8 [N, {size}, {size}, 3]")
    if len(images) == 0:
        raise StageError(f"{path}: holds no images; rebuild the data set with `make -C training data`")
    return images


def records(split: str, data_dir: Path = DATA_DIR) -> list[dict]:
    path = data_dir / f"{split}.jsonl"
    if not path.exists():
        raise StageError(f"{path}: missing; build the data set with `make -C training data`")
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            record = json.loads(line)
        except ValueError as error:
            raise StageError(f"{path}: line {number} is not JSON ({error})")
        for key in ("kind", "caption_en", "caption_zh"):
            if not record.get(key):
                raise StageError(f"{path}: line {number} has no `{key}`; rebuild the data set")
        out.append(record)
    if not out:
        raise StageError(f"{path}: holds no records; rebuild the data set with `make -C training data`")
    return out


def split(split: str, size: int = 64, data_dir: Path = DATA_DIR) -> tuple[np.ndarray, list[dict]]:
    """Images [N, size, size, 3] uint8 and their records (the 256-px renders are the first records)."""
    suffix = "" if size == 64 else f"-{size}"
    images = _images(data_dir / f"{split}{suffix}.npz", size)
    recs = records(split, data_dir)
    if size == 64 and len(images) != len(recs):
        raise StageError(f"{data_dir / f'{split}.npz'}: has {len(images)} images for {len(recs)} records; rebuild it")
    return images, recs[: len(images)]


def to_tensor_range(images: np.ndarray):
    """uint8 [N, H, W, 3] → float32 [N, 3, H, W] in [-1, 1], as diffusers' VAE expects."""
    import torch

    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
