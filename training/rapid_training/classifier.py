"""Run with: .venv-fixtures/bin/python -m rapid_training.classifier [--epochs 1.5] (from training/).

The judge of the evaluation: a small CNN trained on the data set's training split that names what a
64-px picture shows — the subject (a fashion item or a dish), and for fashion its colour and pattern.
Its held-out accuracy is measured on the held-out split and stored with its weights; its pooled
features serve the FID (Fréchet distance, as Heusel et al. 2017, on this network's features instead of
Inception's, which cannot be downloaded here).
"""

import argparse
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from . import data, vocab
from .checkpoint import StageError, load_weights, save_weights, seed_everything, set_threads

SUBJECTS = vocab.ITEM_NAMES + vocab.DISH_NAMES
CONFIG = dict(widths=[32, 64, 128, 256], subjects=len(SUBJECTS), colours=len(vocab.COLOUR_NAMES),
              patterns=len(vocab.PATTERN_NAMES))
RECIPE = dict(batch=128, lr=2e-3, seed=0)
IGNORE = -100


class Classifier(nn.Module):
    def __init__(self, widths, subjects, colours, patterns):
        super().__init__()
        layers, channels = [], 3
        for i, width in enumerate(widths):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                       nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            channels = width
        self.body = nn.Sequential(*layers)
        self.subject = nn.Linear(channels, subjects)
        self.colour = nn.Linear(channels, colours)
        self.pattern = nn.Linear(channels, patterns)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """[N, C] pooled features of images in [-1, 1]."""
        return self.body(images).mean(dim=(2, 3))

    def forward(self, images: torch.Tensor):
        features = self.features(images)
        return self.subject(features), self.colour(features), self.pattern(features)


def labels(records: list[dict]) -> torch.Tensor:
    """[N, 3]: subject, colour and pattern indices; colour and pattern IGNORE for dishes."""
    rows = []
    for r in records:
        if r["kind"] == "fashion":
            rows.append((SUBJECTS.index(r["item"]), vocab.COLOUR_NAMES.index(r["colour"]),
                         vocab.PATTERN_NAMES.index(r["pattern"])))
        else:
            rows.append((SUBJECTS.index(r["dish"]), IGNORE, IGNORE))
    return torch.tensor(rows)


def load() -> Classifier:
    return load_weights("classifier", Classifier(**CONFIG), {"model": CONFIG, "recipe": RECIPE})


@torch.no_grad()
def predict(net: Classifier, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted [N, 3] (subject, colour, pattern) and features [N, C] of uint8 or [0, 1] float images."""
    predictions, features = [], []
    for start in range(0, len(images), 256):
        batch = images[start : start + 256]
        x = data.to_tensor_range(batch) if batch.dtype == np.uint8 else torch.from_numpy(batch).permute(0, 3, 1, 2) * 2 - 1
        f = net.features(x.float())
        predictions.append(torch.stack([net.subject(f).argmax(1), net.colour(f).argmax(1), net.pattern(f).argmax(1)], 1))
        features.append(f)
    return torch.cat(predictions), torch.cat(features)


def accuracy(predicted: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """Percent correct per head, over the records that head applies to."""
    out = {}
    fashion = truth[:, 1] != IGNORE
    out["item"] = float((predicted[fashion, 0] == truth[fashion, 0]).float().mean() * 100) if fashion.any() else None
    out["dish"] = float((predicted[~fashion, 0] == truth[~fashion, 0]).float().mean() * 100) if (~fashion).any() else None
    for head, column in (("colour", 1), ("pattern", 2)):
        out[head] = float((predicted[fashion, column] == truth[fashion, column]).float().mean() * 100) if fashion.any() else None
    return {k: (round(v, 1) if v is not None else None) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=float, default=1.5)
    args = parser.parse_args()
    threads = set_threads()
    seed_everything(RECIPE["seed"])
    images, records = data.split("train")
    truth = labels(records)
    held_images, held_records = data.split("heldout")
    net = Classifier(**CONFIG)
    steps = int(args.epochs * len(images) / RECIPE["batch"])
    optimizer = torch.optim.AdamW(net.parameters(), lr=RECIPE["lr"], weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, RECIPE["lr"], total_steps=steps)
    started = time.monotonic()
    net.train()
    for step in tqdm(range(steps), desc="classifier", unit="step"):
        index = np.random.randint(0, len(images), RECIPE["batch"])
        x = data.to_tensor_range(images[index])
        # Small shifts, so the judge reads shapes, not pixel positions.
        x = torch.roll(x, shifts=tuple(np.random.randint(-3, 4, 2)), dims=(2, 3))
        y = truth[index]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            subject, colour, pattern = net(x)
        loss = (F.cross_entropy(subject.float(), y[:, 0]) + F.cross_entropy(colour.float(), y[:, 1], ignore_index=IGNORE)
                 + F.cross_entropy(pattern.float(), y[:, 2], ignore_index=IGNORE))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    net.eval()
    predicted, _ = predict(net, held_images)
    held = accuracy(predicted, labels(held_records))
    seconds = time.monotonic() - started
    save_weights("classifier", net, {"model": CONFIG, "recipe": RECIPE},
                 {"heldout_accuracy_percent": held, "steps": steps, "train_seconds": round(seconds), "threads": threads})
    print(f"classifier: {steps} steps in {seconds / 60:.1f} min; held-out accuracy {held}", file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except StageError as error:
        sys.exit(f"error: {error}")
