"""The trained model as PyTorch modules, and diffusers' StableDiffusionPipeline run on them: the
reference the worker is compared with, and what the evaluation generates with (batched, which the
worker's CLI does not do).

Prompt embeddings are made here, as the worker makes them (tokenize, link entities, encode), and
passed to diffusers as `prompt_embeds`, because diffusers' own text path knows nothing of entity
vectors.
"""

from dataclasses import dataclass

import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
)
from transformers import BertTokenizer

from . import text, train_unet, train_vae
from .checkpoint import load_weights, stage_meta

# The worker's sampler names (`--sampler`) and the diffusers classes they reproduce.
SAMPLERS = {
    "pndm": PNDMScheduler,
    "ddim": DDIMScheduler,
    "euler": EulerDiscreteScheduler,
    "euler-a": EulerAncestralDiscreteScheduler,
    "dpmpp-2m": DPMSolverMultistepScheduler,
}

# PNDM as Stable Diffusion 1.x ships it; the other samplers are built from this config, as the worker
# does (`from_config` carries `timestep_spacing` and `steps_offset` over, as for the test fixtures).
SCHEDULER_CONFIG = dict(
    **train_unet.NOISE_SCHEDULE, set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1,
    timestep_spacing="leading", trained_betas=None,
)


@dataclass
class Model:
    tokenizer: text.Tokenizer
    knowledge: text.Knowledge
    encoder: text.TextEncoder
    unet: torch.nn.Module
    vae: torch.nn.Module


@torch.no_grad()
def round_to_half(module: torch.nn.Module) -> None:
    """The export stores the U-Net's weights in fp16 (half the file; compute stays float32), so the
    reference and the evaluation compute with the same rounded weights the worker loads."""
    for parameter in module.parameters():
        parameter.copy_(parameter.half().float())


def load(random_weights: bool = False) -> Model:
    """The committed model; with `random_weights`, the same architecture untrained (the baseline)."""
    tokenizer = text.Tokenizer()
    knowledge = text.Knowledge()
    dim = knowledge.vectors.shape[1]
    encoder = text.TextEncoder(tokenizer.vocab_size, dim)
    unet = train_unet.build_unet()
    config = train_unet.stage_config(tokenizer.vocab_size)
    if not random_weights:
        load_weights("text_encoder", encoder, config, train_unet.MUST_MATCH)
        load_weights("unet", unet, config, train_unet.MUST_MATCH)
        round_to_half(unet)
    vae = train_vae.load()
    # register_to_config, not attribute assignment: an attribute set on the frozen config shadows the
    # value diffusers' pipeline reads but not the one save_config writes.
    vae.register_to_config(scaling_factor=stage_meta("vae")["scaling_factor"])
    return Model(tokenizer, knowledge, encoder.eval(), unet.eval(), vae.eval())


@torch.no_grad()
def embed(model: Model, prompts: list[str], use_knowledge: bool) -> torch.Tensor:
    encodings = model.tokenizer(prompts)
    ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
    vectors = text.entity_vectors(encodings, prompts, model.knowledge if use_knowledge else None,
                                  model.knowledge.vectors.shape[1])
    return model.encoder(ids, vectors)


def scheduler_config() -> dict:
    """The model's scheduler_config.json: PNDM's own fields plus `clip_sample: false`, which DDIM would
    otherwise default to true (Stable Diffusion's exports carry it the same way)."""
    import diffusers

    return {"_class_name": "PNDMScheduler", "_diffusers_version": diffusers.__version__,
            **PNDMScheduler(**SCHEDULER_CONFIG).config, "clip_sample": False}


def scheduler(sampler: str):
    return SAMPLERS[sampler].from_config(scheduler_config())


def diffusers_pipeline(model: Model, sampler: str) -> StableDiffusionPipeline:
    vocab = text.TOKENIZER_DIR / "vocab.txt"
    pipe = StableDiffusionPipeline(
        vae=model.vae, text_encoder=model.encoder.bert, tokenizer=BertTokenizer(str(vocab)), unet=model.unet,
        scheduler=scheduler(sampler), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def generate(model: Model, prompts: list[str], *, sampler: str, steps: int, guidance: float, seeds: list[int],
             use_knowledge: bool = True, negative: str = "", latents: torch.Tensor | None = None) -> np.ndarray:
    """Images [N, 64, 64, 3] float32 in [0, 1] from diffusers' pipeline; latents from each seed's own
    generator unless given."""
    pipe = diffusers_pipeline(model, sampler)
    if latents is None:
        latents = torch.cat([torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(s)) for s in seeds])
    out = pipe(
        prompt_embeds=embed(model, prompts, use_knowledge),
        negative_prompt_embeds=embed(model, [negative] * len(prompts), use_knowledge),
        num_inference_steps=steps, guidance_scale=guidance, latents=latents, output_type="np",
        height=64, width=64,
        generator=torch.Generator().manual_seed(seeds[0]),
    )
    return out.images
