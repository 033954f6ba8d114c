"""Run with: .venv-fixtures/bin/python deploy/export/fuse_attention.py --model DIR --out DIR --fused {ort,rapid}

Makes a copy of a model directory whose U-Net attention runs as one fused operator per attention
block instead of the MatMul → Softmax → MatMul chain `torch.onnx.export` writes:

- `--fused ort`:   `com.microsoft.MultiHeadAttention`, ONNX Runtime's own fused kernel (CPU and CUDA);
- `--fused rapid`: `ai.rapid.FlashAttention`, the project's kernel, registered by the engine in every
                   session (contract: `worker/engine/src/custom_ops/attention/mod.rs`).

Both nodes take the projections as the Linear layers write them, query [B, Lq, H·D], key [B, Lk, H·D],
value [B, Lk, H·Dv], with attributes `num_heads` and `scale`, and give [B, Lq, H·Dv]; so the two
variants differ only in the kernel. The pattern replaced, per attention block (diffusers' attention
through `scaled_dot_product_attention`, as exported by torch 2.x with opset 17):

    q, k, v = Reshape([B, -1, H, D]) of the projections
    q' = Transpose(q, 0213) [· √s]       k' = Transpose(k, 0231) [· √s]      v' = Transpose(v, 0213)
    Softmax(MatMul(q', k') [· c]) → MatMul(·, v') → Transpose(0213) → Reshape([B, -1, H·Dv]) → out

torch computes the scale factors from the query's shape at run time; this script reads their values
by running the original model once with ONNX Runtime (with those tensors as extra outputs), then
checks the rewrite: the same inputs through the `--fused ort` form must give the same output within
1e-4 relative to the output's scale. (`--fused rapid` graphs cannot run in Python's ONNX Runtime; they
are the same graph with another node type, and the engine's tests check them in Rust.)

Only `unet/` is rewritten. Every other entry of the model directory is linked (relative symlinks),
so the copy costs only the U-Net and the three directories of a comparison differ only in `unet/`.
Weights stay in one `model.onnx_data` beside the graph when the source keeps them outside, inline
otherwise. Needs numpy, onnx and onnxruntime.
"""

import argparse
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

# ONNX Runtime 1.31 reads IR ≤ 13; onnx 1.23 would write 14 (FIELD-NOTES).
IR_VERSION = 8
FUSED = {
    "ort": ("com.microsoft", "MultiHeadAttention"),
    "rapid": ("ai.rapid", "FlashAttention"),
}
TOLERANCE = 1e-4


@dataclass
class Block:
    """One matched attention block: the tensors the fused node reads and writes, and the nodes it
    replaces."""
    query: str
    key: str
    value: str
    output: str
    heads: int
    scale_factors: list  # tensor names whose product is the score scale
    constant_scale: float  # factors that are constants, multiplied out
    replaced: list  # nodes


class Graph:
    """Producer and consumer look-ups over one graph, and the constant values it defines."""

    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.initializers = {i.name: i for i in graph.initializer}

    def constant(self, name: str):
        """The value of an initializer or Constant node output, or None."""
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def only_consumer(self, name: str):
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 else None

    def produced_by(self, name: str, op_type: str):
        """The node that writes `name`, when it is of type `op_type`."""
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type else None


def attribute(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def split_scale(g: Graph, name: str, replaced: list, factors: list, constants: list) -> str:
    """Walks back through an optional `Mul(x, factor)` on a branch, recording the factor."""
    mul = g.produced_by(name, "Mul")
    if mul is None or g.only_consumer(name) is None:
        return name
    x, factor = mul.input
    if g.producer.get(factor) is not None and g.producer[factor].op_type == "Transpose":
        x, factor = factor, x
    replaced.append(mul)
    value = g.constant(factor)
    if value is not None:
        constants.append(float(value.reshape(-1)[0]))
    else:
        factors.append(factor)
    return x


def head_split(g: Graph, name: str, perm: list, replaced: list):
    """Matches `Transpose(perm) ∘ Reshape([B, -1, H, D])` ending at `name`; returns (projection, H)."""
    transpose = g.produced_by(name, "Transpose")
    if transpose is None or list(attribute(transpose, "perm")) != perm:
        return None
    reshape = g.produced_by(transpose.input[0], "Reshape")
    if reshape is None or g.only_consumer(reshape.output[0]) is None:
        return None
    heads = target_dim(g, reshape.input[1], 2)
    if heads is None:
        return None
    replaced += [transpose, reshape]
    return reshape.input[0], heads


def target_dim(g: Graph, shape_name: str, index: int):
    """Entry `index` of a Reshape's target shape when it is a constant: either the whole shape is one,
    or it is a Concat whose `index`-th input is."""
    whole = g.constant(shape_name)
    if whole is not None:
        return int(whole[index])
    concat = g.produced_by(shape_name, "Concat")
    if concat is None or len(concat.input) != 4:
        return None
    part = g.constant(concat.input[index])
    return None if part is None else int(part.reshape(-1)[0])


def match(g: Graph, softmax) -> Block | None:
    """The attention block around one Softmax, or None when it is not the pattern above."""
    if attribute(softmax, "axis", -1) not in (-1, 3):
        return None
    replaced = [softmax]
    factors, constants = [], []
    scores = split_scale(g, softmax.input[0], replaced, factors, constants)
    if g.produced_by(scores, "Div") is not None:
        return None  # a divided score is rare in exports; not handled, so not rewritten
    qk = g.produced_by(scores, "MatMul")
    weighted = g.only_consumer(softmax.output[0])
    if qk is None or weighted is None or weighted.op_type != "MatMul" or weighted.input[0] != softmax.output[0]:
        return None
    replaced += [qk, weighted]
    query = head_split(g, split_scale(g, qk.input[0], replaced, factors, constants), [0, 2, 1, 3], replaced)
    key = head_split(g, split_scale(g, qk.input[1], replaced, factors, constants), [0, 2, 3, 1], replaced)
    value = head_split(g, weighted.input[1], [0, 2, 1, 3], replaced)
    merge = g.only_consumer(weighted.output[0])
    if None in (query, key, value) or merge is None or merge.op_type != "Transpose":
        return None
    if list(attribute(merge, "perm")) != [0, 2, 1, 3]:
        return None
    reshape = g.only_consumer(merge.output[0])
    if reshape is None or reshape.op_type != "Reshape":
        return None
    if len({query[1], key[1], value[1]}) != 1:
        raise SystemExit(f"{softmax.name}: query, key and value split into different head counts")
    replaced += [merge, reshape]
    return Block(query[0], key[0], value[0], reshape.output[0], query[1], factors,
                 float(np.prod(constants)) if constants else 1.0, replaced)


def sample_inputs(model: onnx.ModelProto, sample_size: int):
    """Batch 1, a square latent of the config's size, 8 text tokens, timestep 500: every dynamic axis
    gets a size the U-Net accepts."""
    rng = np.random.default_rng(0)
    feeds = {}
    for tensor in model.graph.input:
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.type.tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.type.tensor_type.elem_type)
        if len(dims) == 4:
            shape = [dims[0] or 1, dims[1], dims[2] or sample_size, dims[3] or sample_size]
            feeds[tensor.name] = rng.standard_normal(shape).astype(dtype)
        elif len(dims) == 3:
            feeds[tensor.name] = rng.standard_normal([dims[0] or 1, dims[1] or 8, dims[2]]).astype(dtype)
        else:
            feeds[tensor.name] = np.full([d or 1 for d in dims], 500, dtype=dtype)
    return feeds


def run(model_path: Path, feeds: dict, outputs: list | None = None):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    return session.run(outputs, feeds)


def save(model: onnx.ModelProto, path: Path, external: bool) -> None:
    model.ir_version = min(model.ir_version, IR_VERSION) if model.ir_version else IR_VERSION
    path.parent.mkdir(parents=True, exist_ok=True)
    if external:
        # onnx appends to an existing weights file, so a second save into the folder would leave
        # the first one's tensors in it.
        (path.parent / "model.onnx_data").unlink(missing_ok=True)
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location="model.onnx_data", size_threshold=1024)
    else:
        onnx.save_model(model, str(path))


def rewrite(model: onnx.ModelProto, blocks: list, scales: list, mode: str) -> onnx.ModelProto:
    """A copy of `model` with each block replaced by one fused node, and the nodes nothing reads any
    more (the shape arithmetic behind the reshapes and the scale) removed."""
    domain, op_type = FUSED[mode]
    fused = onnx.ModelProto()
    fused.CopyFrom(model)
    graph = fused.graph
    replaced = {id_ for block in blocks for id_ in (n.name or n.output[0] for n in block.replaced)}
    first_of_block = {(b.replaced[0].name or b.replaced[0].output[0]): (b, s) for b, s in zip(blocks, scales)}
    nodes = []
    for node in graph.node:
        key = node.name or node.output[0]
        if key in first_of_block:
            block, scale = first_of_block[key]
            nodes.append(helper.make_node(op_type, [block.query, block.key, block.value], [block.output],
                                          name=f"{block.output}/{op_type}", domain=domain,
                                          num_heads=block.heads, scale=float(scale)))
        elif key not in replaced:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    prune_unused(graph)
    ordered = topological(list(graph.node), graph)
    del graph.node[:]
    graph.node.extend(ordered)
    if all(o.domain != domain for o in fused.opset_import):
        fused.opset_import.append(helper.make_opsetid(domain, 1))
    return fused


def topological(nodes: list, graph: onnx.GraphProto) -> list:
    """Nodes in an order where every input is written before it is read (the fused node sits where the
    Softmax was, which may be before its value projection)."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    ordered, pending = [], list(nodes)
    while pending:
        remaining = []
        for node in pending:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                remaining.append(node)
        if len(remaining) == len(pending):
            raise SystemExit(f"rewritten graph has a cycle or a missing input near {remaining[0].name}")
        pending = remaining
    return ordered


def prune_unused(graph: onnx.GraphProto) -> None:
    while True:
        read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        kept = [node for node in graph.node if any(out in read for out in node.output)]
        if len(kept) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(kept)
    read = {name for node in graph.node for name in node.input}
    unused = [init for init in graph.initializer if init.name not in read]
    for init in unused:
        graph.initializer.remove(init)


def link_other_parts(source: Path, out: Path) -> None:
    for entry in sorted(source.iterdir()):
        if entry.name == "unet":
            continue
        target = out / entry.name
        if target.is_symlink() or target.exists():
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()
        target.symlink_to(os.path.relpath(entry.resolve(), out.resolve()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--model", type=Path, required=True, help="model directory to read")
    parser.add_argument("--out", type=Path, required=True, help="model directory to write")
    parser.add_argument("--fused", choices=sorted(FUSED), required=True)
    args = parser.parse_args()
    source = args.model / "unet" / "model.onnx"
    external = (args.model / "unet" / "model.onnx_data").exists()
    model = onnx.load(str(source))
    g = Graph(model.graph)
    blocks = [b for b in (match(g, n) for n in model.graph.node if n.op_type == "Softmax") if b]
    softmaxes = sum(n.op_type == "Softmax" for n in model.graph.node)
    if not blocks:
        raise SystemExit(f"{source}: no attention block matched the pattern in this script's docstring")
    config = json.loads((args.model / "unet" / "config.json").read_text())
    feeds = sample_inputs(model, int(config.get("sample_size", 16)))

    # onnx appends to an existing weights file, so start from an empty unet/.
    shutil.rmtree(args.out / "unet", ignore_errors=True)
    # The scale factors' values, and the reference output, from one run of the original graph.
    factor_names = sorted({f for b in blocks for f in b.scale_factors})
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                              for name in factor_names)
    tmp = args.out / "unet" / "probe.onnx"
    save(probe, tmp, external)
    del probe
    values = run(tmp, feeds, [o.name for o in model.graph.output] + factor_names)
    expected, factors = values[0], dict(zip(factor_names, values[len(model.graph.output):]))
    scales = []
    for b in blocks:
        parts = [factors[f] for f in b.scale_factors]
        if any(p.size != 1 for p in parts):
            raise SystemExit(f"{b.output}: the score scale is not a scalar; this block cannot be fused")
        scales.append(b.constant_scale * float(np.prod([p.reshape(-1)[0] for p in parts])))

    # Check through the ONNX Runtime form, which Python can run, then write the requested form.
    check = rewrite(model, blocks, scales, "ort")
    save(check, tmp, external)
    del check
    got = run(tmp, feeds)[0]
    error = float(np.max(np.abs(got - expected)) / max(1.0, float(np.max(np.abs(expected)))))
    for leftover in [tmp, tmp.with_name("model.onnx_data")]:
        leftover.unlink(missing_ok=True)
    if error > TOLERANCE:
        raise SystemExit(f"fused graph disagrees with the original: relative max error {error:.2e} > {TOLERANCE}")

    fused = rewrite(model, blocks, scales, args.fused)
    save(fused, args.out / "unet" / "model.onnx", external)
    shutil.copy2(args.model / "unet" / "config.json", args.out / "unet" / "config.json")
    link_other_parts(args.model, args.out)
    heads = sorted({b.heads for b in blocks})
    print(f"{args.out}: {len(blocks)} of {softmaxes} softmaxes fused as {'.'.join(FUSED[args.fused])} "
          f"(heads {heads}, scales {sorted({round(s, 6) for s in scales})}), "
          f"{len(model.graph.node)} → {len(fused.graph.node)} nodes; checked, relative max error {error:.1e}")


if __name__ == "__main__":
    main()
