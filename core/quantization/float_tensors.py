"""Return chosen activation tensors of a Q/DQ model to float, with the layers around them in FP32.

The repair unit of max_drop. On SqueezeNet 1.1 the INT8 error is activation rounding spread over
~36 quantized tensors; keeping one *layer* FP32 through the quantizer's exclude list barely changes
it (logit NMSE 4.4e-4 -> 4.1-4.8e-4 for every single layer on calib500[200:500]), because the
layer's input and output stay quantized for its quantized neighbours. Removing a tensor's Q/DQ pair
removes that error outright. Every weighted node that then reads or writes a float tensor cannot
become an integer kernel any more, so it gets its original FP32 weights and bias: DQ(int8 weight) ->
float Conv is what ONNX Runtime would otherwise run, dequantizing the weights on every call, and that
was slower than FP32 itself (SqueezeNet 1.1 with all activations float and int8 weights: 0.85x FP32).
"""
from __future__ import annotations

from typing import Iterable

import onnx
from onnx import helper

from .graph import WEIGHTED_OPS, folded_activation, initializers, topo_sort


def quantized_activations(qm: onnx.ModelProto) -> list[str]:
    """Activation tensors (not weights) that a QuantizeLinear quantizes, in graph order."""
    inits = initializers(qm)
    return [n.input[0] for n in qm.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]


def float_tensors(qm: onnx.ModelProto, fp32: onnx.ModelProto, tensors: Iterable[str]) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of `qm` with the Q/DQ of `tensors` removed; returns it and the weighted nodes now in FP32.

    A Relu/Clip that the quantizer folded into the removed Q's range is put back (copied from `fp32`),
    so the float path computes what the FP32 model computes."""
    tensors = set(tensors)
    m = onnx.ModelProto()
    m.CopyFrom(qm)
    g = m.graph
    inits = initializers(m)
    rename: dict[str, str] = {}
    drop: set[str] = set()
    extra: list[onnx.NodeProto] = []
    for n in g.node:
        if n.op_type != "QuantizeLinear" or n.input[0] not in tensors or n.input[0] in inits:
            continue
        t = n.input[0]
        act = folded_activation(m, fp32, t, t, dst=f"{t}/float")
        if act is not None:
            act.name = f"{act.name}/float"
            extra.append(act)
        src = t if act is None else act.output[0]
        drop.add(n.name)
        for d in g.node:
            if d.op_type == "DequantizeLinear" and d.input[0] == n.output[0]:
                rename[d.output[0]] = src
                drop.add(d.name)
    nodes = []
    for n in g.node:
        if n.name in drop:
            continue
        for i, x in enumerate(n.input):
            n.input[i] = rename.get(x, x)
        nodes.append(n)
    for o in g.output:
        if o.name in rename:
            nodes.append(helper.make_node("Identity", [rename[o.name]], [o.name], name=f"{o.name}/float_out"))
    del g.node[:]
    g.node.extend(nodes + extra)
    return _fp32_weights_where_float(m, fp32, set(rename.values()) | tensors)


def _fp32_weights_where_float(m: onnx.ModelProto, fp32: onnx.ModelProto, float_names: set[str]):
    """Give FP32 weights and bias to the weighted nodes that read or write one of the restored float tensors."""
    g = m.graph
    f_nodes = {n.name: n for n in fp32.graph.node}
    f_inits = initializers(fp32)
    inits = initializers(m)
    prod = {o: n for n in g.node for o in n.output}
    changed = []
    for n in g.node:
        orig = f_nodes.get(n.name)
        if n.op_type not in WEIGHTED_OPS or orig is None or len(n.input) < 2:
            continue
        wprod = prod.get(n.input[1])
        if wprod is None or wprod.op_type != "DequantizeLinear":
            continue
        if n.input[0] not in float_names and n.output[0] not in float_names:
            continue
        for j in range(1, len(orig.input)):
            name = orig.input[j]
            if not name or name not in f_inits:
                continue
            local = f"{name}/fp32"
            if local not in inits:
                t = onnx.TensorProto()
                t.CopyFrom(f_inits[name])
                t.name = local
                g.initializer.append(t)
                inits[local] = t
            if j < len(n.input):
                n.input[j] = local
            else:
                n.input.append(local)
        changed.append(n.name)
    return _prune(topo_sort(m)), changed


def _prune(m: onnx.ModelProto) -> onnx.ModelProto:
    """Drop the orphaned weight/bias DQs and unused initializers: onnx-ir's pass, as the optimizer's
    dead_code uses."""
    import onnx_ir as ir
    from onnx_ir.passes.common import RemoveUnusedNodesPass

    model = ir.serde.deserialize_model(m)
    RemoveUnusedNodesPass()(model)
    return ir.serde.serialize_model(model)
