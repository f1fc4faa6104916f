"""Fusion annotations: mark the chains a backend can run as one kernel; the graph is unchanged.

Anchors are Conv, ConvTranspose, Gemm and MatMul; a chain may continue, through tensors with
exactly one reader, with BatchNormalization (if not folded), Add (bias or residual), and then
one activation (Relu, Clip, HardSwish, HardSigmoid, Sigmoid, LeakyRelu, Tanh, Gelu, Elu, PRelu,
SiLU written as x * Sigmoid(x), HardSwish as x * HardSigmoid(x)).

Format (documented in ARCHITECTURE.md): every node in a group gets node metadata_props
`edgec.fusion.group` (an id unique in the model), `edgec.fusion.pattern` (e.g. "Conv+Add+Relu")
and `edgec.fusion.role` ("anchor" / "member"); the same groups are listed in the optimizer
report's "fusions" as {"group", "pattern", "nodes"}. NodeProto.metadata_props is formally IR
version 10; we do not bump an older model's IR version for it (that could lock out older
runtimes) - protobuf readers that predate the field skip it, and onnxruntime ignores it.
"""
from __future__ import annotations

import onnx_ir as ir

from edgec.core.optimizer.registry import PassContext, register_pass
from edgec.core.optimizer.rewrite import single_consumer

ANCHORS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
ACTIVATIONS = {"Relu", "Clip", "HardSwish", "HardSigmoid", "Sigmoid", "LeakyRelu", "Tanh", "Gelu",
               "Elu", "PRelu"}
KEYS = ("edgec.fusion.group", "edgec.fusion.pattern", "edgec.fusion.role")


# x * gate(x) written as two nodes, as exporters write SiLU/Swish and HardSwish.
GATES = {"Sigmoid": "SiLU", "HardSigmoid": "HardSwish"}


def _gated(gate: ir.Node, x: ir.Value) -> ir.Node | None:
    """The Mul of x * gate(x) when x feeds exactly the gate and the Mul."""
    readers = x.consumers()
    if len(readers) != 2 or x.is_graph_output() or gate.outputs[0].is_graph_output():
        return None
    mul = next((n for n in readers if n is not gate), None)
    if mul is None or mul.op_type != "Mul" or single_consumer(gate.outputs[0]) is not mul:
        return None
    return mul if set(map(id, mul.inputs)) == {id(x), id(gate.outputs[0])} else None


def _chain(anchor: ir.Node, claimed: set[int]) -> list[tuple[ir.Node, str]]:
    chain = [(anchor, anchor.op_type)]
    cur = anchor.outputs[0]

    def usable(n: ir.Node | None) -> bool:
        return n is not None and id(n) not in claimed and n.domain in ("", "ai.onnx")

    for stage in ("BatchNormalization", "Add"):
        nxt = single_consumer(cur)
        if usable(nxt) and nxt.op_type == stage:
            chain.append((nxt, stage))
            cur = nxt.outputs[0]
    nxt = single_consumer(cur)
    if usable(nxt) and nxt.op_type in ACTIVATIONS:
        chain.append((nxt, nxt.op_type))
    elif nxt is None and not cur.is_graph_output():
        gate = next((n for n in cur.consumers() if n.op_type in GATES), None)
        mul = _gated(gate, cur) if usable(gate) else None
        if usable(mul):
            chain += [(gate, GATES[gate.op_type]), (mul, GATES[gate.op_type])]
    return chain


@register_pass("fusion_annotation", changes_numerics=False)
def fusion_annotation(model: ir.Model, ctx: PassContext) -> int:
    """Annotate Conv/Gemm[+BN][+Add][+activation] chains for backends (metadata only)."""
    for node in model.graph:
        for key in KEYS:
            node.metadata_props.pop(key, None)
    ctx.fusions.clear()
    claimed: set[int] = set()
    for node in model.graph:
        if node.op_type not in ANCHORS or node.domain not in ("", "ai.onnx") or id(node) in claimed:
            continue
        chain = _chain(node, claimed)
        if len(chain) < 2:
            continue
        gid = str(len(ctx.fusions))
        labels = []
        for k, (member, label) in enumerate(chain):
            if label not in labels:
                labels.append(label)
            claimed.add(id(member))
            member.metadata_props["edgec.fusion.group"] = gid
            member.metadata_props["edgec.fusion.role"] = "anchor" if k == 0 else "member"
        pattern = "+".join(labels)
        for member, _ in chain:
            member.metadata_props["edgec.fusion.pattern"] = pattern
        ctx.fusions.append({"group": int(gid), "pattern": pattern,
                            "nodes": [m.name for m, _ in chain]})
    return len(ctx.fusions)
