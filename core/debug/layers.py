"""The FP32 graph seen by `edgec debug`: the tensors to compare and the segment that makes each one.

A tensor's *segment* is the FP32 subgraph from the nearest compared tensors upstream (its frontier) to
it: Conv+Relu when both are fused on the backend, a whole residual block when the runtime exposes
nothing inside it. Running the segment in FP32 on the artifact's own values of its frontier gives what
the tensor would be had only the upstream error happened; the artifact's tensor minus that is the
error this segment adds, so the first layer that breaks things stands out, not every layer after it.
"""
from __future__ import annotations

from dataclasses import dataclass

import onnx

from edgec.core.quantization.graph import WEIGHTED_OPS

FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}


@dataclass
class Segment:
    tensor: str
    node: str  # the ONNX node that produces `tensor` ("" for a graph input)
    op: str
    frontier: list[str]  # compared tensors (or graph inputs) the segment reads
    nodes: list[str]  # FP32 nodes inside the segment, in graph order
    layer: str | None  # the weighted node (Conv/Gemm/MatMul) inside it: what --keep-fp32 keeps


def float_tensors(model: onnx.ModelProto) -> list[str]:
    """Graph inputs and node outputs that are float activations, in graph order (shape inference
    gives the types; a tensor of unknown type is kept and dropped later if the runtime has no float
    value for it)."""
    inferred = _infer(model)
    types = {v.name: v.type.tensor_type.elem_type for v in list(inferred.graph.value_info)
             + list(inferred.graph.input) + list(inferred.graph.output)}
    inits = {i.name for i in model.graph.initializer}
    out = [i.name for i in model.graph.input if i.name not in inits and types.get(i.name, 1) in FLOAT_TYPES]
    for n in model.graph.node:
        if n.op_type in ("Constant", "Shape", "Size"):
            continue
        for o in n.output:
            if o and types.get(o, onnx.TensorProto.FLOAT) in FLOAT_TYPES and o not in out:
                out.append(o)
    return out


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model)
    except Exception:  # a model shape inference cannot take is still debuggable: types unknown
        return model


def segments(model: onnx.ModelProto, compared: list[str]) -> dict[str, Segment]:
    """For every tensor in `compared`, the segment producing it from other compared tensors."""
    producer = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name for i in model.graph.initializer}
    graph_inputs = {i.name for i in model.graph.input} - inits
    order = {n.name: i for i, n in enumerate(model.graph.node)}
    wanted = set(compared)
    out: dict[str, Segment] = {}
    for t in compared:
        if t in graph_inputs:
            out[t] = Segment(t, "", "input", [], [], None)
            continue
        frontier: list[str] = []
        inside: dict[str, onnx.NodeProto] = {}
        stack = [producer[t]]
        while stack:
            n = stack.pop()
            if n.name in inside:
                continue
            inside[n.name] = n
            for x in n.input:
                if not x or x in inits:
                    continue
                if x in wanted or x in graph_inputs or x not in producer:
                    if x not in frontier:
                        frontier.append(x)
                else:
                    stack.append(producer[x])
        nodes = sorted(inside, key=order.get)
        layer = next((nm for nm in reversed(nodes) if inside[nm].op_type in WEIGHTED_OPS), None)
        p = producer[t]
        out[t] = Segment(t, p.name, p.op_type, frontier, nodes, layer)
    return out


def segment_model(model: onnx.ModelProto, seg: Segment, types: dict[str, int] | None = None) -> onnx.ModelProto:
    """The segment as a standalone FP32 model (inputs = its frontier, output = its tensor). Built by
    hand rather than with onnx.utils.Extractor, which needs an inferred type for every boundary tensor."""
    from onnx import helper

    types = types or {}
    names = set(seg.nodes)
    nodes = [n for n in model.graph.node if n.name in names]
    used = {x for n in nodes for x in n.input}
    inits = [i for i in model.graph.initializer if i.name in used]
    g = helper.make_graph(
        nodes, f"segment:{seg.tensor}",
        [helper.make_tensor_value_info(x, types.get(x, onnx.TensorProto.FLOAT), None) for x in seg.frontier],
        [helper.make_tensor_value_info(seg.tensor, types.get(seg.tensor, onnx.TensorProto.FLOAT), None)], inits)
    m = helper.make_model(g, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    return m


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = _infer(model)
    return {v.name: v.type.tensor_type.elem_type for v in list(inferred.graph.value_info)
            + list(inferred.graph.input) + list(inferred.graph.output) if v.type.tensor_type.elem_type}


def weighted_layers(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type in WEIGHTED_OPS]


def qdq_exposure(qm: onnx.ModelProto, names) -> dict[str, str]:
    """{FP32 tensor name: the tensor of the Q/DQ graph that holds its value as its consumers read it}: the
    DequantizeLinear output of a quantized tensor, else the tensor itself where the graph has it. What a
    backend exposes as an extra output to read that FP32 tensor's counterpart."""
    q_of = {n.input[0]: n.output[0] for n in qm.graph.node if n.op_type == "QuantizeLinear"}
    dq_of = {n.input[0]: n.output[0] for n in qm.graph.node if n.op_type == "DequantizeLinear"}
    produced = {o for n in qm.graph.node for o in n.output} | {i.name for i in qm.graph.input}
    out = {}
    for t in names:
        if t in q_of and q_of[t] in dq_of:
            out[t] = dq_of[q_of[t]]
        elif t in produced:
            out[t] = t
    return out
