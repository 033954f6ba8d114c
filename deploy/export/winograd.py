"""Run with: .venv-fixtures/bin/python deploy/export/winograd.py --model DIR --out DIR [--min-size 16]

Makes a copy of a model directory whose U-Net runs its larger 3×3 convolutions as
`ai.rapid::WinogradConv` (F(4×4, 3×3): 4× fewer multiplications than the direct form; contract and
kernel: `worker/engine/src/custom_ops/winograd/`), registered by the engine in every session.

A `Conv` node is rewritten when it is a plain 3×3 convolution (strides 1, pads 1, dilations 1,
group 1) whose weight and bias are stored initializers, and its feature map is at least
`--min-size` pixels on each side at the U-Net's own latent size (`sample_size` in unet/config.json,
or `--latent`). Below that the kernel's products are too thin to gain: on the Table 6 U-Net the
4×4 and 8×8 levels have 1280 channels and 2–8 tiles per image, and reading the 4× larger
transformed weights costs more than the arithmetic saved (measured in `deploy/bench/speed/NOTES.md`).
The node keeps its inputs and output; only its type changes, so the weights are stored as before,
except weights an export stored in fp16 behind a `Cast` (training/rapid_training/export.py): the
kernel wants constant initializers, so the copy stores those as the float32 values they stand for.
The feature-map sizes come from one run of the original graph with ONNX Runtime, with the
candidates' inputs as extra outputs.

Python's ONNX Runtime cannot run `ai.rapid` operators; the engine's tests check the rewritten
fixture against the original graph (`worker/engine/tests/winograd.rs`). Only `unet/` is rewritten;
every other entry of the model directory is linked, as `fuse_attention.py` does, and the two
rewrites compose (run one on the other's output). Needs numpy, onnx and onnxruntime.
"""

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from fuse_attention import attribute, link_other_parts, run, sample_inputs, save

DOMAIN, OP_TYPE = "ai.rapid", "WinogradConv"


def widen_half_weights(model: onnx.ModelProto) -> int:
    """Replaces each `Cast(fp16 initializer) → float32` by the float32 initializer it computes (the same
    values: fp16 widens exactly); returns how many."""
    graph = model.graph
    half = {t.name: t for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT16}
    casts = [n for n in graph.node
             if n.op_type == "Cast" and n.input[0] in half and attribute(n, "to") == onnx.TensorProto.FLOAT]
    for node in casts:
        values = numpy_helper.to_array(half[node.input[0]]).astype(np.float32)
        graph.initializer.append(numpy_helper.from_array(values, node.output[0]))
        graph.node.remove(node)
    read = {name for node in graph.node for name in node.input}
    for name, initializer in half.items():
        if name not in read:
            graph.initializer.remove(initializer)
    return len(casts)


def candidates(model: onnx.ModelProto) -> list:
    """The Conv nodes the kernel's contract covers, by everything but their size."""
    stored = {t.name for t in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type != "Conv" or node.domain not in ("", "ai.onnx"):
            continue
        plain = (list(attribute(node, "kernel_shape", [])) == [3, 3]
                 and list(attribute(node, "strides", [1, 1])) == [1, 1]
                 and list(attribute(node, "pads", [0, 0, 0, 0])) == [1, 1, 1, 1]
                 and list(attribute(node, "dilations", [1, 1])) == [1, 1]
                 and attribute(node, "group", 1) == 1
                 and attribute(node, "auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET"))
        if plain and all(name in stored for name in node.input[1:] if name):
            found.append(node)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--model", type=Path, required=True, help="model directory to read")
    parser.add_argument("--out", type=Path, required=True, help="model directory to write")
    parser.add_argument("--min-size", type=int, default=16,
                        help="smallest feature-map side rewritten, in latent pixels (default 16)")
    parser.add_argument("--latent", type=int, help="latent side to measure at (default: unet/config.json's sample_size)")
    args = parser.parse_args()
    if args.min_size < 1:
        raise SystemExit(f"--min-size must be at least 1, got {args.min_size}")
    source = args.model / "unet" / "model.onnx"
    if not source.exists():
        raise SystemExit(f"{source} does not exist: --model must be a model directory with unet/model.onnx")
    external = (args.model / "unet" / "model.onnx_data").exists()
    model = onnx.load(str(source))
    widen_half_weights(model)
    convs = candidates(model)
    if not convs:
        raise SystemExit(f"{source}: no 3×3, stride-1, pad-1 convolution with stored weights to rewrite")
    config = json.loads((args.model / "unet" / "config.json").read_text())
    latent = args.latent or int(config.get("sample_size", 16))

    # onnx appends to an existing weights file, so start from an empty unet/.
    shutil.rmtree(args.out / "unet", ignore_errors=True)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    inputs = sorted({n.input[0] for n in convs})
    probe.graph.output.extend(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in inputs)
    tmp = args.out / "unet" / "probe.onnx"
    save(probe, tmp, external)
    del probe
    values = run(tmp, sample_inputs(model, latent), inputs)
    for leftover in [tmp, tmp.with_name("model.onnx_data")]:
        leftover.unlink(missing_ok=True)
    sizes = {name: value.shape[2:] for name, value in zip(inputs, values)}

    chosen = [n for n in convs if min(sizes[n.input[0]]) >= args.min_size]
    for node in chosen:
        node.op_type, node.domain = OP_TYPE, DOMAIN
        del node.attribute[:]
    if chosen and not any(o.domain == DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    save(model, args.out / "unet" / "model.onnx", external)
    shutil.copy2(args.model / "unet" / "config.json", args.out / "unet" / "config.json")
    link_other_parts(args.model, args.out)
    by_size = {}
    for node in convs:
        side = f"{sizes[node.input[0]][0]}×{sizes[node.input[0]][1]}"
        done, total = by_size.get(side, (0, 0))
        by_size[side] = (done + (node in chosen), total + 1)
    summary = ", ".join(f"{side}: {done}/{total}" for side, (done, total) in by_size.items())
    print(f"{args.out}: {len(chosen)} of {len(convs)} 3×3 convolutions rewritten as {DOMAIN}::{OP_TYPE} "
          f"at a {latent}×{latent} latent (rewritten/eligible by feature map: {summary})")


if __name__ == "__main__":
    main()
