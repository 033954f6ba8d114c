"""Run with:
  .venv-fixtures/bin/python deploy/export/weightless.py strip --model .cache/models/table6 --out DIR [--part PART=FILE ...]
  python3 deploy/export/weightless.py fill DIR

Carries a model directory of random weights to a machine it cannot be exported on, in megabytes
instead of gigabytes. The GPU machine (deploy/bench/gpu/gpu.sh) takes at most 64 MiB a call and has
no diffusers to export with, while the Table 6 model is 4.5 GB of weights that carry no
information: they are random (export_table6.py), and only their shapes matter for speed.

`strip` copies the directory without its large weight tensors: every float tensor of rank ≥ 2
and more than 1024 elements (convolution kernels, matrices, embedding tables) becomes an external
reference into `model.onnx_data`, with its name, type, shape and offset in `weights.json` beside
the graph. Everything else stays inline with its true values: integer tensors (shape constants,
position ids, whose values the graph depends on), biases and norm parameters (rank 1), scalars.
`--part unet=FILE` takes that part's graph from another file (an fp16 or fused variant).

`fill` writes each `model.onnx_data` back with fresh random values: uniform in ±1/√fan-in, the
bound PyTorch's default initialisation gives convolutions and linear layers, so activations stay
in range (in fp16 too). The images are noise either way; the timings are what a trained model of
the same shapes gives, since no kernel here depends on the weights' values.
"""

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np

PARTS = ["text_encoder", "unet", "vae_decoder", "upscaler"]
DATA = "model.onnx_data"
MANIFEST = "weights.json"
# Page-aligned tensors, so ONNX Runtime may map them instead of reading them.
ALIGN = 4096


def strip(model: Path, out: Path, replacements: dict) -> None:
    import onnx
    from onnx import TensorProto

    floats = {TensorProto.FLOAT: "float32", TensorProto.FLOAT16: "float16"}
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(model, out, ignore=shutil.ignore_patterns("*.onnx", DATA, "torch", "*.onnx_data"))
    for part in PARTS:
        source = replacements.get(part, model / part / "model.onnx")
        graph = onnx.load(str(source), load_external_data=True)
        entries, offset = [], 0
        for tensor in graph.graph.initializer:
            dims = list(tensor.dims)
            if tensor.data_type not in floats or len(dims) < 2 or math.prod(dims) <= 1024:
                continue
            dtype = floats[tensor.data_type]
            length = math.prod(dims) * np.dtype(dtype).itemsize
            entries.append({"name": tensor.name, "dtype": dtype, "shape": dims, "offset": offset, "length": length})
            tensor.ClearField("raw_data")
            tensor.ClearField("float_data")
            tensor.ClearField("int32_data")  # where onnx keeps float16 values that are not raw
            del tensor.external_data[:]
            tensor.data_location = TensorProto.EXTERNAL
            for key, value in [("location", DATA), ("offset", str(offset)), ("length", str(length))]:
                tensor.external_data.add(key=key, value=value)
            offset += -(-length // ALIGN) * ALIGN
        (out / part).mkdir(parents=True, exist_ok=True)
        onnx.save_model(graph, str(out / part / "model.onnx"))
        manifest = {"source": str(source), "data_bytes": offset, "tensors": entries}
        (out / part / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        print(f"{part}: {len(entries)} tensors ({offset / 1e9:.2f} GB) stripped from {source}", flush=True)


def fan_in(shape) -> int:
    # Convolution kernels are [out, in, kh, kw]; exported linear weights are [in, out] after the
    # transpose ONNX Runtime folds, [out, in] before. The larger fan-in is the safer bound.
    if len(shape) > 2:
        return math.prod(shape[1:])
    return max(shape)


def fill(directory: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for part in PARTS:
        manifest_path = directory / part / MANIFEST
        if not manifest_path.exists():
            sys.exit(f"fill: {manifest_path} is missing; make the directory with `weightless.py strip`")
        manifest = json.loads(manifest_path.read_text())
        data = np.memmap(directory / part / DATA, dtype=np.uint8, mode="w+", shape=(max(manifest["data_bytes"], 1),))
        for entry in manifest["tensors"]:
            bound = 1 / math.sqrt(fan_in(entry["shape"]))
            values = rng.random(math.prod(entry["shape"]), dtype=np.float32)
            values *= 2 * bound
            values -= bound
            values = values.astype(entry["dtype"], copy=False)
            data[entry["offset"]:entry["offset"] + entry["length"]] = values.view(np.uint8)
        data.flush()
        del data
        print(f"{part}: wrote {manifest['data_bytes'] / 1e9:.2f} GB of random weights", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    commands = parser.add_subparsers(dest="command", required=True)
    strip_parser = commands.add_parser("strip", help="copy a model directory without its large weights")
    strip_parser.add_argument("--model", type=Path, required=True)
    strip_parser.add_argument("--out", type=Path, required=True)
    strip_parser.add_argument("--part", action="append", default=[], metavar="PART=FILE",
                              help="take PART's graph from FILE (e.g. an fp16 U-Net)")
    fill_parser = commands.add_parser("fill", help="write random weights into a stripped directory")
    fill_parser.add_argument("directory", type=Path)
    fill_parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.command == "strip":
        replacements = {}
        for item in args.part:
            part, _, file = item.partition("=")
            if part not in PARTS or not file:
                sys.exit(f"strip: --part {item!r}: expected PART=FILE with PART one of {', '.join(PARTS)}")
            replacements[part] = Path(file)
        strip(args.model, args.out, replacements)
    else:
        fill(args.directory, args.seed)


if __name__ == "__main__":
    main()
