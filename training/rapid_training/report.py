"""Renders training/results.json (written by `evaluate.py`) as training/RESULTS.md.

Run alone with: .venv-fixtures/bin/python -m rapid_training.report (from training/)."""

import json
import sys

from .checkpoint import TRAINING_DIR

HEADS = ("item", "colour", "pattern", "dish", "fid_fashion", "fid_dish")


def _cell(value) -> str:
    return "–" if value is None else f"{value:g}"


def render(results: dict) -> str:
    defaults = results["defaults"]
    targets = results["targets_percent"]
    judge = results["judge"]
    lines = [
        "# Quality of the bundled model (`models/rapid-mini`)",
        "",
        "Written by `make -C training eval` (`rapid_training/evaluate.py`, then `report.py`) from",
        "`results.json`; do not edit by hand. Prompts: "
        f"{results['prompts']} held-out records (never trained on), worded by the training captions and",
        "always naming the colour and pattern. Each generated 64-px image is read by the judge, a CNN",
        "trained on the data set's training split; an image counts as right on a head when the judge names",
        "what the prompt asked for. FID: Fréchet distance of the judge's pooled features against the",
        "held-out real images (lower is better; not comparable with Inception FIDs).",
        "",
        f"- Judge's held-out accuracy (%): {json.dumps(judge['heldout_accuracy_percent'])}",
        f"- Shipped defaults: sampler `{defaults['sampler']}`, {defaults['steps']} steps, guidance "
        f"{defaults['guidance']:g} — the fewest steps whose item, colour and pattern scores each stay within one",
        "  point of 50 PNDM steps at guidance 7.5 (`evaluate.choose_defaults`), then the guidance of 1 / 4 / 7.5",
        "  with the widest worst margin over the targets in both languages (`evaluate.choose_guidance`).",
        f"- Targets at the defaults, in each language: colour ≥ {targets['colour']:g} %, item ≥ {targets['item']:g} %, "
        f"pattern ≥ {targets['pattern']:g} %.",
        "",
        "## At the defaults",
        "",
        "| language | knowledge | guidance | item % | colour % | pattern % | dish % | FID fashion | FID dishes | targets |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in results["rows"]:
        if row["name"].startswith("trained, ") and "knowledge" in row["name"]:
            met = all(row[h] >= targets[h] for h in targets)
            verdict = ("met" if met else "not met") if row["guidance"] == defaults["guidance"] else ""
            lines.append(
                f"| {row['language']} | {'on' if row['knowledge'] else 'off'} | {row['guidance']:g} | "
                + " | ".join(_cell(row[h]) for h in HEADS) + f" | {verdict} |"
            )
    lines += ["", "## Baselines", "", "| rows | item % | colour % | pattern % | dish % | FID fashion | FID dishes |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for row in results["rows"]:
        if row["name"].startswith(("held-out", "random")):
            lines.append(f"| {row['name']} | " + " | ".join(_cell(row.get(h)) for h in HEADS) + " |")
    lines += ["", "The held-out row scores the real images (the judge's own accuracy) and its FIDs are one half of",
              "the held-out images against the other: the floor a model can reach. The VAE row scores the same",
              "images encoded and decoded (FIDs against the images themselves): the ceiling the decoder leaves a",
              "U-Net, since every generated picture goes through it.", "",
              "## Samplers and steps (guidance 7.5, knowledge on, prompts alternating English and Chinese)", "",
              "| sampler | steps | item % | colour % | pattern % | dish % | FID fashion | FID dishes | seconds |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in results["rows"]:
        if row.get("language") == "both":
            lines.append(f"| {row['sampler']} | {row['steps']} | " + " | ".join(_cell(row[h]) for h in HEADS)
                         + f" | {row['seconds']:g} |")
    lines += ["", "## Timings on this machine", "", "| stage | wall time | steps | threads |", "|---|---:|---:|---:|"]
    for stage, timing in results["training"].items():
        minutes = timing.get("train_seconds", 0) / 60
        lines.append(f"| {stage} | {minutes:.1f} min | {timing.get('steps', '–')} | {timing.get('threads', '–')} |")
    worker = results.get("worker_one_image")
    if worker:
        stages = ", ".join(f"{k} {v:.0f} ms" if isinstance(v, (int, float)) else f"{k} {v}"
                           for k, v in worker["stages_ms"].items())
        lines += ["", f"One 64-px image (256 px after ESRGAN) through `rapid-worker generate` with the defaults, "
                  f"`--warm-up`: the whole process {worker['process_seconds']:g} s (loading and warming the model "
                  f"included); the warm stages: {stages}."]
    machine = results.get("machine")
    if machine:
        lines += ["", f"Machine: {machine}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    path = TRAINING_DIR / "results.json"
    if not path.exists():
        sys.exit(f"error: {path}: missing; run `make -C training eval`")
    (TRAINING_DIR / "RESULTS.md").write_text(render(json.loads(path.read_text())))
    print(f"wrote {TRAINING_DIR / 'RESULTS.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
