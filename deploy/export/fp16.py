"""Run with: .venv-fixtures/bin/python deploy/export/fp16.py --model DIR --out DIR [--part unet --part upscaler]

fp16 copies of a model directory's parts, for the GPU providers (tensor cores run fp16 at several
times fp32's rate; the CPU provider has no fp16 kernels for most of these operators). Uses ONNX
Runtime's own converter (`onnxruntime.transformers.float16`) with `keep_io_types`: each graph still
takes and returns fp32, so the worker's graph contract (DESIGN.md) holds unchanged and the casts
sit at the graph's edges. Parts not named are left out; give the result to
`weightless.py strip --part` or copy it into a model directory.

The VAE stays fp32 by default: Stable Diffusion's VAE decoder is known to overflow fp16 in its
last up-blocks (diffusers keeps an fp32 "upcast" option for it).
"""

import argparse
from pathlib import Path

import onnx
from onnx.external_data_helper import load_external_data_for_model
from onnxruntime.transformers.float16 import convert_float_to_float16

from fuse_attention import save


def resize_constants(model: onnx.ModelProto) -> list:
    """The Constant nodes that feed a Resize's roi, scales or sizes. The converter keeps a Resize's
    scales fp32 when they are an initializer, not when torch's export wrote them as a Constant
    node, and ONNX Runtime then refuses the model (Resize's scales must be float)."""
    producers = {node.output[0]: node.name for node in model.graph.node if node.op_type == "Constant"}
    return [producers[name] for node in model.graph.node if node.op_type == "Resize"
            for name in node.input[1:] if name in producers]


def convert(source: Path, out: Path) -> None:
    model = onnx.load(str(source), load_external_data=False)
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    if external:
        load_external_data_for_model(model, str(source.parent))
    model = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=external,
                                     node_block_list=resize_constants(model))
    # Shape inference gave intermediate values symbolic shapes such as [1, 3, height, width] for
    # ESRGAN's last convolution, whose output is 4× its input although the export named both axes
    # `height`; the CUDA provider's memory planner then reused the input's buffer for it ("Shape
    # mismatch attempting to re-use buffer"). Without these hints ONNX Runtime infers the shapes
    # it needs itself, as it does for the fp32 graph.
    del model.graph.value_info[:]
    save(model, out, external)  # external: a U-Net is under 2 GB in fp16, but keeps the layout
    print(f"{out.parent.name}: fp16, {len(model.graph.node)} nodes", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--part", action="append", default=None,
                        help="a part to convert (repeatable; default unet and upscaler)")
    args = parser.parse_args()
    for part in args.part or ["unet", "upscaler"]:
        convert(args.model / part / "model.onnx", args.out / part / "model.onnx")


if __name__ == "__main__":
    main()
