"""Run with: .venv-fixtures/bin/python -m rapid_training.reference (from training/; `make -C training reference`).

Diffusers' reference images for the bundled trained model (`models/rapid-mini`), in the format of
`tests/fixtures/pipeline/cases.json`, written to `tests/fixtures/trained/`. The worker's parity test
(`worker/engine/tests/pipeline.rs`) generates the same cases and must land within 2/255 of them.
The prompts name knowledge-graph entities in both languages, so entity injection is compared too.
"""

import json
import sys

import numpy as np
import torch

from . import pipeline
from .checkpoint import TRAINING_DIR, StageError

REPO = TRAINING_DIR.parent
OUT = REPO / "tests" / "fixtures" / "trained"
MODEL_DIR = "models/rapid-mini"

CASES = [
    dict(name="en_pndm", prompt="a crimson striped silk evening dress", negative_prompt="", steps=20,
         guidance_scale=7.5, sampler="pndm", seed=1),
    dict(name="zh_dpmpp", prompt="一张藏青色波点连衣裙的照片", negative_prompt="", steps=10, guidance_scale=4.0,
         sampler="dpmpp-2m", seed=2),
    dict(name="menu_ddim_neg", prompt="the picture of kung pao chicken, peanuts, dried chili, close-up",
         negative_prompt="blurry", steps=10, guidance_scale=7.5, sampler="ddim", seed=3),
]


def main() -> None:
    torch.set_num_threads(2)
    model = pipeline.load()
    OUT.mkdir(parents=True, exist_ok=True)
    written = []
    for case in CASES:
        latents = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(case["seed"]))
        image = pipeline.generate(model, [case["prompt"]], sampler=case["sampler"], steps=case["steps"],
                                  guidance=case["guidance_scale"], seeds=[case["seed"]],
                                  negative=case["negative_prompt"], latents=latents)[0]
        latents_path = OUT / f"{case['name']}.latents.npy"
        image_path = OUT / f"{case['name']}.image.npy"
        np.save(latents_path, latents.numpy().astype(np.float32))
        np.save(image_path, image.astype(np.float32))
        written.append({k: v for k, v in case.items() if k != "seed"} | {
            "model_dir": MODEL_DIR,
            "latents": str(latents_path.relative_to(REPO)),
            "expected_image": str(image_path.relative_to(REPO)),
        })
    description = ("diffusers StableDiffusionPipeline on the trained PyTorch modules (training/weights), fp32 CPU, "
                   "prompt embeddings made with the knowledge entities injected as the worker does; written by "
                   "training/rapid_training/reference.py. expected_image: float32 [64, 64, 3] in [0, 1].")
    (OUT / "cases.json").write_text(json.dumps({"description": description, "cases": written}, indent=2,
                                               ensure_ascii=False) + "\n")
    print(f"wrote {len(written)} cases to {OUT}", file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except StageError as error:
        sys.exit(f"error: {error}")
