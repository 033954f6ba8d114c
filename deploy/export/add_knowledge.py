"""Run with: .venv-fixtures/bin/python deploy/export/add_knowledge.py --model DIR --out DIR --vectors DIR \
    --aliases knowledge/graphs/aliases.tsv [--seed 0]

Makes a knowledge-enabled copy of a model directory (paper §3.1.1, e = e_txt + e_kg):

1. `text_encoder/model.onnx` gets an extra input `entity_embeds` float32 [batch, sequence, hidden],
   added to the token embeddings right after the embedding lookup (before position embeddings,
   layer norm and attention). The rest of the graph and every weight stay as they were, so zero
   `entity_embeds` gives exactly the plain encoder's output; the script checks that with ONNX
   Runtime, and that a non-zero entity embedding changes the output.
2. `knowledge/` gets the TransE output of `rapid-transe` (`entities.txt`, `entity_vectors.npy`),
   the aliases, and — when the TransE width differs from the encoder's — `projection.npy` [dim,
   hidden]. The projection here is random (seeded), scaled so projected vectors have the token
   embeddings' RMS: a trained model would learn it with the text encoder (the paper fine-tunes
   them together); for the project's tiny test models any fixed map does.

This is graph surgery with the `onnx` package rather than a re-export from PyTorch, so it works on
any exported text encoder (Optimum's, the fixtures', the Table 6 export) without its PyTorch code.
Needs numpy, onnx and onnxruntime.
"""

import argparse
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ENTITY_INPUT = "entity_embeds"


def token_embedding_gather(model: onnx.ModelProto):
    """The Gather that looks `input_ids` up in a [vocab, hidden] table (through Casts, if any)."""
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}

    def from_input_ids(name: str) -> bool:
        while name != "input_ids":
            node = producers.get(name)
            if node is None or node.op_type not in ("Cast", "Unsqueeze", "Reshape", "Identity"):
                return False
            name = node.input[0]
        return True

    for node in graph.node:
        if node.op_type != "Gather" or node.input[0] not in initializers:
            continue
        table = initializers[node.input[0]]
        if len(table.dims) == 2 and from_input_ids(node.input[1]):
            return node, numpy_helper.to_array(table)
    raise SystemExit("no Gather of input_ids into a [vocab, hidden] table found: is this a text encoder export?")


def add_entity_input(source: Path, target: Path) -> tuple[int, float]:
    model = onnx.load(str(source))
    graph = model.graph
    if any(i.name == ENTITY_INPUT for i in graph.input):
        raise SystemExit(f"{source} already has an `{ENTITY_INPUT}` input")
    gather, table = token_embedding_gather(model)
    hidden = table.shape[1]
    ids = next(i for i in graph.input if i.name == "input_ids")
    dims = [d.dim_param or d.dim_value for d in ids.type.tensor_type.shape.dim]
    graph.input.append(helper.make_tensor_value_info(ENTITY_INPUT, TensorProto.FLOAT, [dims[0], dims[1], hidden]))

    token_embeds = gather.output[0]
    summed = token_embeds + "_plus_entity_embeds"
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == token_embeds:
                node.input[k] = summed
    for output in graph.output:
        if output.name == token_embeds:
            raise SystemExit("the token embeddings are a graph output; refusing to rewire them")
    add = helper.make_node("Add", [token_embeds, ENTITY_INPUT], [summed], name="AddEntityEmbeddings")
    position = list(graph.node).index(gather) + 1
    graph.node.insert(position, add)
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
    return hidden, float(np.sqrt(np.mean(table.astype(np.float64) ** 2)))


def check(plain: Path, extended: Path, hidden: int) -> None:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    a = ort.InferenceSession(str(plain), options)
    b = ort.InferenceSession(str(extended), options)
    ids_input = a.get_inputs()[0]
    dtype = np.int32 if "int32" in ids_input.type else np.int64
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 200, size=(2, 16)).astype(dtype)
    plain_out = a.run(None, {"input_ids": ids})[0]
    zeros = np.zeros((2, 16, hidden), np.float32)
    same = b.run(None, {"input_ids": ids, ENTITY_INPUT: zeros})[0]
    if not np.array_equal(plain_out, same):
        raise SystemExit(f"zero entity_embeds changed the output (max diff {np.abs(plain_out - same).max()})")
    poke = zeros.copy()
    poke[0, 5] = 1.0
    changed = b.run(None, {"input_ids": ids, ENTITY_INPUT: poke})[0]
    if np.array_equal(plain_out, changed):
        raise SystemExit("a non-zero entity embedding did not change the output")
    print(f"checked: zero entity_embeds == plain encoder exactly; one entity row changes rows "
          f"{sorted(set(np.nonzero(np.abs(changed - plain_out).max(axis=2) > 0)[1].tolist()))[:8]}...")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--model", type=Path, required=True, help="model directory to start from")
    parser.add_argument("--out", type=Path, required=True, help="where the knowledge-enabled copy goes")
    parser.add_argument("--vectors", type=Path, required=True, help="rapid-transe --out folder")
    parser.add_argument("--aliases", type=Path, help="alias<TAB>entity file")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    staging = args.out.with_name(args.out.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(args.model, staging)
    encoder = staging / "text_encoder" / "model.onnx"
    hidden, token_rms = add_entity_input(args.model / "text_encoder" / "model.onnx", encoder)
    check(args.model / "text_encoder" / "model.onnx", encoder, hidden)

    knowledge = staging / "knowledge"
    knowledge.mkdir()
    shutil.copy(args.vectors / "entities.txt", knowledge / "entities.txt")
    vectors = np.load(args.vectors / "entity_vectors.npy").astype(np.float32)
    np.save(knowledge / "entity_vectors.npy", vectors)
    if args.aliases:
        shutil.copy(args.aliases, knowledge / "aliases.tsv")
    if vectors.shape[1] != hidden:
        rng = np.random.default_rng(args.seed)
        projection = rng.standard_normal((vectors.shape[1], hidden))
        projected_rms = np.sqrt(np.mean((vectors.astype(np.float64) @ projection) ** 2))
        projection *= token_rms / projected_rms
        np.save(knowledge / "projection.npy", projection.astype(np.float32))
    if args.out.exists():
        shutil.rmtree(args.out)
    staging.rename(args.out)
    print(f"wrote {args.out} (entity vectors {vectors.shape}, encoder width {hidden})")


if __name__ == "__main__":
    main()
