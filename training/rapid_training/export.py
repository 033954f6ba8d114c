"""Run with: .venv-fixtures/bin/python -m rapid_training.export [--out ../models/rapid-mini] (from training/).

Writes the committed weights of every stage as the model directory the worker loads (Optimum's layout,
DESIGN.md): tokenizer, text encoder with its `entity_embeds` input, knowledge folder (TransE vectors,
aliases and the trained projection), U-Net, VAE decoder, ESRGAN upscaler, PNDM scheduler config and
a model card. Each ONNX file is checked against PyTorch with ONNX Runtime before anything is moved
into place; the directory is built beside the target and renamed, so a failed export leaves the
previous model whole.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper
import torch

from . import esrgan, pipeline, text
from .checkpoint import TRAINING_DIR, StageError, load_weights, stage_meta

OPSET = 17
ONNX_TOLERANCE = 1e-4
# Smaller tensors (biases, norms) stay float32: a Cast node each would cost more than it saves.
HALF_MIN_ELEMENTS = 1024
DEFAULT_OUT = TRAINING_DIR.parent / "models" / "rapid-mini"


class TextEncoderExport(torch.nn.Module):
    """input_ids [B, L] int64 and entity_embeds [B, L, H] (already projected, as the worker feeds them)."""

    def __init__(self, encoder: text.TextEncoder):
        super().__init__()
        self.bert = encoder.bert

    def forward(self, input_ids, entity_embeds):
        embeds = self.bert.embeddings.word_embeddings(input_ids) + entity_embeds
        return self.bert(inputs_embeds=embeds).last_hidden_state


class UNetExport(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]


class VaeDecoderExport(torch.nn.Module):
    """Latents already divided by the scaling factor, as diffusers' and Optimum's vae_decoder expect."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latent_sample):
        return self.vae.decode(latent_sample, return_dict=False)[0]


def store_half_exact_weights(path: Path) -> int:
    """Rewrites the ONNX file at `path` so that every float32 weight whose values fp16 holds exactly is
    stored as fp16 behind a `Cast` back to float32; returns how many were. Compute stays float32 (ONNX
    Runtime folds the casts when it loads the graph), so the graph computes exactly what it did: only
    the file halves. `pipeline.load` rounds the U-Net's weights to fp16 for the same reason, which is
    what makes them exact here; constants that are not (e.g. the timestep frequencies) stay float32."""
    model = onnx.load(str(path))
    graph = model.graph
    casts, kept = [], []
    for initializer in graph.initializer:
        values = numpy_helper.to_array(initializer)
        half = values.astype(np.float16)
        if values.dtype != np.float32 or values.size < HALF_MIN_ELEMENTS or not np.array_equal(half.astype(np.float32), values):
            kept.append(initializer)
            continue
        stored = numpy_helper.from_array(half, f"{initializer.name}.fp16")
        kept.append(stored)
        casts.append(helper.make_node("Cast", [stored.name], [initializer.name], to=onnx.TensorProto.FLOAT))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(path))
    return len(casts)


def export(module: torch.nn.Module, feeds: dict[str, np.ndarray], outputs: list[str], dynamic: dict, path: Path,
           half_weights: bool = False) -> float:
    """Exports `module` (with `half_weights`, its fp16-exact weights stored as fp16), checks it with
    ONNX Runtime against PyTorch and returns the max abs difference."""
    path.parent.mkdir(parents=True, exist_ok=True)
    module.eval()
    args = tuple(torch.from_numpy(v) for v in feeds.values())
    with torch.no_grad():
        torch.onnx.export(module, args, str(path), input_names=list(feeds), output_names=outputs,
                          dynamic_axes=dynamic, opset_version=OPSET, dynamo=False, do_constant_folding=True)
        if half_weights and store_half_exact_weights(path) == 0:
            raise StageError(f"{path.name}: no weight is exact in fp16; was the module rounded (pipeline.load)?")
        expected = module(*args).numpy()
    module.eval()  # torch.onnx.export restores the training flag it found; keep eval for what follows
    onnx.checker.check_model(onnx.load(str(path)))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    got = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    difference = float(np.max(np.abs(got - expected)))
    if difference >= ONNX_TOLERANCE:
        raise StageError(f"{path.name}: ONNX Runtime differs from PyTorch by {difference:.2e} (≥ {ONNX_TOLERANCE})")
    return difference


def write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def require_finished_unet() -> None:
    meta = stage_meta("unet")
    if not meta.get("finished", True):
        raise StageError(
            f"weights/unet.json: the U-Net has trained {meta['train_seconds'] / 60:.0f} of its "
            f"{meta['budget_minutes']:g} minutes (a run ended by --stop-after); run `make -C training unet` to "
            "finish it before exporting")


def build(out: Path) -> dict:
    require_finished_unet()
    model = pipeline.load()
    rng = np.random.default_rng(0)
    checks = {}
    length, hidden = text.MAX_LENGTH, text.HIDDEN

    shutil.copytree(text.TOKENIZER_DIR, out / "tokenizer")
    ids = rng.integers(0, model.tokenizer.vocab_size, (2, length)).astype(np.int64)
    entity = (rng.standard_normal((2, length, hidden)) * 0.1).astype(np.float32)
    checks["text_encoder"] = export(
        TextEncoderExport(model.encoder), {"input_ids": ids, "entity_embeds": entity}, ["last_hidden_state"],
        {"input_ids": {0: "batch", 1: "sequence"}, "entity_embeds": {0: "batch", 1: "sequence"},
         "last_hidden_state": {0: "batch", 1: "sequence"}},
        out / "text_encoder" / "model.onnx",
    )
    model.encoder.bert.config.to_json_file(str(out / "text_encoder" / "config.json"))

    knowledge = out / "knowledge"
    knowledge.mkdir()
    shutil.copy(text.TRANSE_DIR / "entities.txt", knowledge / "entities.txt")
    shutil.copy(text.TRANSE_DIR / "entity_vectors.npy", knowledge / "entity_vectors.npy")
    shutil.copy(text.GRAPH_ALIASES, knowledge / "aliases.tsv")
    np.save(knowledge / "projection.npy", model.encoder.projection.weight.detach().numpy().T.astype(np.float32))

    sample = rng.standard_normal((2, 4, 16, 16)).astype(np.float32)
    states = rng.standard_normal((2, length, hidden)).astype(np.float32)
    checks["unet"] = export(
        UNetExport(model.unet),
        {"sample": sample, "timestep": np.array([981, 1], np.int64), "encoder_hidden_states": states},
        ["out_sample"],
        {"sample": {0: "batch", 2: "height", 3: "width"}, "timestep": {0: "batch"},
         "encoder_hidden_states": {0: "batch", 1: "sequence"}, "out_sample": {0: "batch", 2: "height", 3: "width"}},
        out / "unet" / "model.onnx", half_weights=True,
    )
    model.unet.save_config(str(out / "unet"))

    checks["vae_decoder"] = export(
        VaeDecoderExport(model.vae), {"latent_sample": sample}, ["sample"],
        {"latent_sample": {0: "batch", 2: "height", 3: "width"}, "sample": {0: "batch", 2: "height", 3: "width"}},
        out / "vae_decoder" / "model.onnx",
    )
    model.vae.save_config(str(out / "vae_decoder"))

    upscaler = load_weights("esrgan", esrgan.RRDBNet(**esrgan.CONFIG), {"model": esrgan.CONFIG, "recipe": esrgan.RECIPE})
    checks["upscaler"] = export(
        upscaler, {"input": rng.random((1, 3, 32, 32), dtype=np.float32)}, ["output"],
        {"input": {0: "batch", 2: "height", 3: "width"}, "output": {0: "batch", 2: "height", 3: "width"}},
        out / "upscaler" / "model.onnx",
    )

    write_json(out / "scheduler" / "scheduler_config.json", pipeline.scheduler_config())
    write_json(out / "model_index.json", {
        "_class_name": "OnnxStableDiffusionPipeline", "_diffusers_version": "0.42.1",
        "feature_extractor": [None, None], "requires_safety_checker": False, "safety_checker": [None, None],
        "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["diffusers", "OnnxRuntimeModel"],
        "tokenizer": ["transformers", "BertTokenizer"], "unet": ["diffusers", "OnnxRuntimeModel"],
        "vae_decoder": ["diffusers", "OnnxRuntimeModel"],
    })
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    out = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        checks = build(staging)
        card = TRAINING_DIR / "MODEL_CARD.md"
        if card.exists():
            shutil.copy(card, staging / "README.md")
        write_json(staging / "export.json", {
            "onnx_max_abs_diff": checks,
            "stages": {stage: {k: v for k, v in stage_meta(stage).items() if k != "config"}
                       for stage in ("vae", "text_encoder", "unet", "esrgan")},
        })
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, StageError):
            sys.exit(f"error: {error}")
        raise
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
    print(f"wrote {out} ({size:.1f} MB); ONNX vs PyTorch max abs diff {checks}", file=sys.stderr)


if __name__ == "__main__":
    main()
