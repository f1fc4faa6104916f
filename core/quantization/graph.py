"""Small ONNX graph helpers shared by the quantization passes."""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import onnx

from edgec.core.errors import InputError

# Ops whose second input is a weight: the layers that quantization, sensitivity and max_drop reason about.
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


# Activations ORT's quantizer folds into the range of the following QuantizeLinear (the node disappears).
FOLDABLE_ACTIVATIONS = ("Relu", "Clip")


def folded_activation(qm: onnx.ModelProto, fp32: onnx.ModelProto, tensor: str, src: str,
                      dst: str | None = None) -> onnx.NodeProto | None:
    """If `fp32`'s producer of `tensor` is a Relu/Clip that the quantizer folded away from `qm`, a copy
    of it reading `src` and writing `dst` (its own output name by default), for the caller to add to
    `qm`; the constant inputs it needs (Clip's bounds) are copied into `qm` here. Else None. Whoever
    removes the folding Q/DQ pair needs it back, or the float path computes what the FP32 model does not."""
    folded = next((n for n in fp32.graph.node if tensor in n.output), None)
    if folded is None or folded.op_type not in FOLDABLE_ACTIVATIONS or any(n.name == folded.name for n in qm.graph.node):
        return None
    act = onnx.NodeProto()
    act.CopyFrom(folded)
    act.input[0] = src
    if dst is not None:
        act.output[0] = dst
    have, f_inits = initializers(qm), initializers(fp32)
    for extra in act.input[1:]:
        if extra and extra not in have and extra in f_inits:
            qm.graph.initializer.append(f_inits[extra])
            have[extra] = f_inits[extra]
    return act


def input_uses(graph: onnx.GraphProto) -> dict[str, int]:
    """How many node inputs of `graph` (its own nodes, not subgraphs') read each value."""
    uses: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    return uses


def input_readers(nodes: Iterable[onnx.NodeProto]) -> dict[str, list[onnx.NodeProto]]:
    """{value name: the nodes among `nodes` that read it, in order (once per input slot)}."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in nodes:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    return readers


def ensure_node_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every node a unique name; placement reports, keep-lists and ORT's quantizer key on them."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        while name in seen:
            name = f"{name}_{i}"
        node.name = name
        seen.add(name)
    return model


def split_keep_list(model: onnx.ModelProto, keep: Sequence[str]) -> tuple[set[str], set[str]]:
    """Split a user keep-list into node names and op types; unknown entries are an input error."""
    names = {n.name for n in model.graph.node}
    op_types = {n.op_type for n in model.graph.node}
    keep_names, keep_ops = set(), set()
    for k in keep:
        if k in names:
            keep_names.add(k)
        elif k in op_types:
            keep_ops.add(k)
        else:
            raise InputError(f"keep_fp32 entry {k!r} is neither a node name nor an op type in the model; "
                             "check the spelling against `edgec inspect`")
    return keep_names, keep_ops


def initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def weighted_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Weighted nodes whose weight is a constant initializer (activation x activation MatMuls are not layers)."""
    inits = initializers(model)
    return [n for n in model.graph.node
            if n.op_type in WEIGHTED_OPS and len(n.input) > 1 and n.input[1] in inits]


def weight_param_count(model: onnx.ModelProto, nodes: Iterable[str]) -> int:
    inits = initializers(model)
    by_name = {n.name: n for n in model.graph.node}
    total = 0
    for name in nodes:
        n = by_name.get(name)
        if n is not None and len(n.input) > 1 and n.input[1] in inits:
            total += int(np.prod(inits[n.input[1]].dims))
    return total


def model_sha256(model: onnx.ModelProto) -> str:
    import hashlib

    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()


def topo_sort(model: onnx.ModelProto) -> onnx.ModelProto:
    """Reorder nodes topologically in place (converters append boundary Casts at the end, which the
    ONNX checker rejects even though runtimes accept it)."""
    g = model.graph
    available = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    pending = list(g.node)
    ordered = []
    while pending:
        rest = []
        for n in pending:
            # Subgraph-captured names are resolved by the runtime; only direct inputs constrain order.
            if all(i in available for i in n.input):
                ordered.append(n)
                available.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            ordered.extend(rest)  # a cycle or dangling input: leave it for the checker to report
            break
        pending = rest
    nodes = [onnx.NodeProto() for _ in ordered]
    for dst, src in zip(nodes, ordered):
        dst.CopyFrom(src)
    del g.node[:]
    g.node.extend(nodes)
    return model
