"""What every training stage shares: resumable checkpoints, the loss log, EMA weights, and the
committed weights a later stage starts from.

A stage's working folder (`.cache/runs/<stage>/`, never committed) holds `last.pt` (model, EMA,
optimizer, step, RNG states and the architecture's config) and `loss.jsonl`. Each write goes to a
temporary file renamed into place, so stopping a run at any moment leaves the previous checkpoint
whole. A checkpoint made for another architecture is refused with its path named.

Finished stages write their EMA weights to `training/weights/<stage>.safetensors` with the config
beside them (`<stage>.json`): small plain files that are committed.
"""

import copy
import json
import math
import os
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

TRAINING_DIR = Path(__file__).resolve().parents[1]
RUNS_DIR = TRAINING_DIR / ".cache" / "runs"
WEIGHTS_DIR = TRAINING_DIR / "weights"


class StageError(Exception):
    """A stage cannot go on: the message names the file and what to do."""


class Interrupt:
    """Within `with Interrupt(stage)`, around a stage's training loop: Ctrl-C (SIGINT) or SIGTERM
    asks the loop to stop after its current step, so the stage saves its checkpoint instead of losing
    the minutes since the last one (up to `Run.every_seconds`). A second signal, or one after the
    loop, acts as usual, at once; the checkpoint on disk stays whole either way."""

    def __init__(self, stage: str):
        self.stage = stage
        self.requested = False
        self.previous: dict = {}

    def __enter__(self) -> "Interrupt":
        self.previous = {sig: signal.signal(sig, self._request) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _request(self, signum: int, frame) -> None:
        self.requested = True
        self.__exit__()
        print(f"\n{self.stage}: {signal.Signals(signum).name}: stopping after this step and saving; press Ctrl-C "
              "again to stop at once", file=sys.stderr, flush=True)

    def exit_if_requested(self, step: int, seconds: float, minutes: float) -> None:
        """For a stage that commits only finished weights: ends the process once the checkpoint is saved."""
        if self.requested:
            sys.exit(f"{self.stage}: stopped at step {step} ({seconds / 60:.1f} of {minutes:g} min), checkpoint "
                     "saved; run the stage again to go on")


class Ema:
    """Exponential moving average of a module's weights (what the stage ships)."""

    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = copy.deepcopy(module).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int) -> None:
        # Warm-up as in diffusers' EMAModel: early averages forget the random start quickly.
        decay = min(self.decay, (1 + step) / (10 + step))
        for shadow, live in zip(self.shadow.parameters(), module.parameters()):
            shadow.lerp_(live, 1.0 - decay)
        for shadow, live in zip(self.shadow.buffers(), module.buffers()):
            shadow.copy_(live)


class Run:
    """One stage's checkpoint folder, loss log and progress clock."""

    def __init__(self, stage: str, config: dict, every_seconds: float = 300.0, must_match: tuple[str, ...] = ("model",)):
        """The entries of `config` named in `must_match` (the architecture; for the U-Net also the VAE
        whose latents it learns) are what a checkpoint must match; the rest (the recipe) may change
        between runs, which is how a later phase fine-tunes what an earlier one trained."""
        self.stage = stage
        self.config = config
        self.must_match = must_match
        self.dir = RUNS_DIR / stage
        self.dir.mkdir(parents=True, exist_ok=True)
        self.checkpoint = self.dir / "last.pt"
        self.every_seconds = every_seconds
        self.last_save = time.monotonic()

    def resume(self, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer) -> tuple[int, float]:
        """Loads the last checkpoint if there is one; returns (step, seconds trained so far)."""
        if not self.checkpoint.exists():
            return 0, 0.0
        try:
            state = torch.load(self.checkpoint, map_location="cpu", weights_only=False)
        except Exception as error:  # a truncated or foreign file: say which and how to start over
            raise StageError(f"{self.checkpoint}: cannot load ({error}); delete it to start this stage over")
        if mismatch := differing(state.get("config", {}), self.config, self.must_match):
            raise StageError(f"{self.checkpoint}: does not match this stage's config in {mismatch}; delete it to start "
                             "this stage over")
        for name, module in modules.items():
            module.load_state_dict(state["modules"][name])
        optimizer.load_state_dict(state["optimizer"])
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        torch.set_rng_state(state["rng"]["torch"])
        return state["step"], state["seconds"]

    def due(self) -> bool:
        return time.monotonic() - self.last_save >= self.every_seconds

    def save(self, modules: dict[str, torch.nn.Module], optimizer, step: int, seconds: float) -> None:
        state = {
            "config": self.config,
            "modules": {name: module.state_dict() for name, module in modules.items()},
            "optimizer": optimizer.state_dict(),
            "step": step,
            "seconds": seconds,
            "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
        }
        partial = self.checkpoint.with_suffix(".partial")
        torch.save(state, partial)
        os.replace(partial, self.checkpoint)
        self.last_save = time.monotonic()

    def log(self, entry: dict) -> None:
        with open(self.dir / "loss.jsonl", "a") as file:
            file.write(json.dumps(entry) + "\n")


def save_weights(stage: str, module: torch.nn.Module, config: dict, meta: dict) -> Path:
    """Writes the committed weights of a finished stage (atomically, weights then config)."""
    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    path = WEIGHTS_DIR / f"{stage}.safetensors"
    partial = path.with_suffix(".partial")
    tensors = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}
    save_file(tensors, partial)
    os.replace(partial, path)
    (WEIGHTS_DIR / f"{stage}.json").write_text(json.dumps({"config": config, **meta}, indent=2) + "\n")
    return path


def differing(theirs: dict, ours: dict, keys: tuple[str, ...]) -> str | None:
    """The first of `keys` whose entry differs between two configs, described with both values."""
    for key in keys:
        if theirs.get(key) != ours.get(key):
            return f"`{key}` ({theirs.get(key)} ≠ {ours.get(key)})"
    return None


def load_weights(stage: str, module: torch.nn.Module, config: dict, must_match: tuple[str, ...] = ("model",)) -> torch.nn.Module:
    """Loads a finished stage's committed weights into `module`, refusing another architecture (or
    another entry of `must_match`)."""
    path = WEIGHTS_DIR / f"{stage}.safetensors"
    meta_path = WEIGHTS_DIR / f"{stage}.json"
    if not path.exists() or not meta_path.exists():
        raise StageError(f"{path}: missing; train the `{stage}` stage first (`make -C training {stage}`)")
    meta = json.loads(meta_path.read_text())
    if mismatch := differing(meta["config"], config, must_match):
        raise StageError(f"{meta_path}: does not match what this code builds in {mismatch}; retrain `{stage}`")
    try:
        module.load_state_dict(load_file(path))
    except Exception as error:
        raise StageError(f"{path}: does not fit the `{stage}` architecture ({error}); retrain `{stage}`")
    return module.eval()


def learning_rate(recipe: dict, steps_since_start: int, progress: float) -> float:
    """Warm-up over `recipe["warmup"]` steps from a fresh optimizer's first step, then
    constant, then a cosine down to `final_lr_ratio` over the budget's last `1 - decay_from`
    (`progress` is seconds / budget)."""
    warm = min(1.0, (steps_since_start + 1) / recipe["warmup"])
    tail = min(1.0, max(0.0, (progress - recipe["decay_from"]) / (1.0 - recipe["decay_from"])))
    floor = recipe["final_lr_ratio"]
    return recipe["lr"] * warm * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * tail)))


def stage_meta(stage: str) -> dict:
    return json.loads((WEIGHTS_DIR / f"{stage}.json").read_text())


def seed_everything(seed: int) -> None:
    """Seeds Python's, NumPy's and torch's global generators, which the stages draw batches from."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_threads() -> int:
    threads = int(os.environ.get("RAPID_TRAIN_THREADS", os.cpu_count() or 1))
    torch.set_num_threads(threads)
    return threads
