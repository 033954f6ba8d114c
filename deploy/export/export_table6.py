"""Run with: .venv-fixtures/bin/python deploy/export/export_table6.py [--out .cache/models/table6]

The paper's Table 6 model with random weights (fixed seeds), in the model directory layout of
DESIGN.md, for speed work: a BERT-style text encoder (vocab 21128, 12 layers, width 768, context
32), an SD 1.x U-Net (320/640/1280/1280, attention at three levels, 8 heads, cross-attention 768)
on a 32×32 latent, the SD VAE decoder (128 channels, mult 1,2,4,4; 32 → 256 px) and ESRGAN's
RRDBNet (nf 64, nb 23, gc 32), ×4 to 1024 px. Random weights produce noise images: fine for
timing, meaningless for quality; every result table built on it says so.

Besides the ONNX files it keeps the PyTorch modules (`torch/`), so the benchmark can run diffusers'
PyTorch pipeline on exactly the same weights. About 4.5 GB on disk; the default folder is
git-ignored. Takes a few minutes on 2 cores.
"""

import argparse
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import BertConfig, BertModel

ROOT = Path(__file__).resolve().parents[2]
VOCAB_SIZE = 21128
CONTEXT = 32


def fixtures_module():
    """The fixture script's RRDBNet, wrappers and scheduler helpers, so both exports share them."""
    spec = importlib.util.spec_from_file_location("make_models", ROOT / "tests/fixtures/make_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_vocab(path: Path) -> None:
    """A BERT-Chinese-shaped vocabulary of exactly 21128 entries: the specials at their usual ids,
    ASCII, CJK characters in code point order, then `##` continuations. Not the real vocabulary (which
    cannot be downloaded here); what matters for speed is its size."""
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += [chr(c) for c in range(33, 127)]
    cjk = [chr(c) for c in range(0x4E00, 0x9FA6)]
    tokens += cjk
    tokens += ["##" + chr(c) for c in range(0x4E00, 0x9FA6)]
    tokens = tokens[:VOCAB_SIZE]
    assert len(tokens) == VOCAB_SIZE and len(set(tokens)) == VOCAB_SIZE
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")


def save_external(model_path: Path) -> None:
    """Rewrites an export with its weights in `model.onnx_data` (a U-Net exceeds protobuf's 2 GB),
    then deletes the one-file-per-tensor weights torch wrote, which would otherwise double the disk
    the model takes (3.4 GB for the U-Net)."""
    skeleton = onnx.load(str(model_path), load_external_data=False)
    loose = {entry.value for tensor in skeleton.graph.initializer for entry in tensor.external_data
             if entry.key == "location"} - {"model.onnx_data"}
    model = onnx.load(str(model_path))
    onnx.save_model(model, str(model_path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx_data", size_threshold=1024)
    for name in loose:
        (model_path.parent / name).unlink()


def export(wrapper, args, path: Path, inputs, outputs, axes, external=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper.eval()
    with torch.no_grad():
        torch.onnx.export(wrapper, args, str(path), input_names=inputs, output_names=outputs, dynamic_axes=axes,
                          opset_version=17, dynamo=False, do_constant_folding=True)
    wrapper.eval()
    if external:
        save_external(path)
    print(f"exported {path.relative_to(path.parents[1])}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / ".cache/models/table6")
    args = parser.parse_args()
    fx = fixtures_module()
    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    (out / "tokenizer").mkdir(parents=True)
    write_vocab(out / "tokenizer" / "vocab.txt")
    fx.write_json(out / "tokenizer" / "tokenizer_config.json", {
        "tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": CONTEXT,
        "pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]",
    })
    fx.save_scheduler(out)
    fx.write_model_index(out, "BertTokenizer")

    torch.manual_seed(6001)
    bert = BertModel(BertConfig(vocab_size=VOCAB_SIZE, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                intermediate_size=3072, max_position_embeddings=512, attn_implementation="eager"),
                     add_pooling_layer=False).eval()
    bert.config.save_pretrained(out / "text_encoder")
    torch.manual_seed(6002)
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=768, attention_head_dim=8,
    ).eval()
    unet.save_config(out / "unet")
    torch.manual_seed(6003)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=256,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        scaling_factor=0.18215,
    ).eval()
    vae.save_config(out / "vae_decoder")
    torch.manual_seed(6004)
    rrdb = fx.RRDBNet(3, 3, nf=64, nb=23, gc=32).eval()

    torch_dir = out / "torch"
    bert.save_pretrained(torch_dir / "text_encoder")
    unet.save_pretrained(torch_dir / "unet")
    vae.save_pretrained(torch_dir / "vae")
    torch.save(rrdb.state_dict(), torch_dir / "rrdbnet.pth")

    ids = torch.zeros((2, CONTEXT), dtype=torch.int32)
    # int32 ids: what diffusers' ONNX pipeline feeds, so the peer benchmark runs these very files.
    export(fx.TextEncoderBERT(bert), (ids,), out / "text_encoder/model.onnx", ["input_ids"], ["last_hidden_state"],
           {"input_ids": {0: "batch", 1: "sequence"}, "last_hidden_state": {0: "batch", 1: "sequence"}})
    export(fx.UNetWrap(unet), (torch.randn(2, 4, 32, 32), torch.tensor([981, 981]), torch.randn(2, CONTEXT, 768)),
           out / "unet/model.onnx", ["sample", "timestep", "encoder_hidden_states"], ["out_sample"],
           {"sample": {0: "batch", 2: "height", 3: "width"}, "timestep": {0: "batch"},
            "encoder_hidden_states": {0: "batch", 1: "sequence"}, "out_sample": {0: "batch", 2: "height", 3: "width"}},
           external=True)
    export(fx.VAEDecoderWrap(vae), (torch.randn(1, 4, 32, 32),), out / "vae_decoder/model.onnx", ["latent_sample"],
           ["sample"], {"latent_sample": {0: "batch", 2: "height", 3: "width"}, "sample": {0: "batch", 2: "height", 3: "width"}})
    export(rrdb, (torch.rand(1, 3, 64, 64),), out / "upscaler/model.onnx", ["input"], ["output"],
           {"input": {0: "batch", 2: "height", 3: "width"}, "output": {0: "batch", 2: "height", 3: "width"}})
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in
              [("text_encoder", bert), ("unet", unet), ("vae_decoder", vae.decoder), ("upscaler", rrdb)]}
    fx.write_json(out / "EXPORT.json", {"params": params, "random_weights": True, "seeds": [6001, 6002, 6003, 6004]})
    print(json.dumps(params))


if __name__ == "__main__":
    main()
