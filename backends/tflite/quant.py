"""The core's Q/DQ model -> quantization parameters on TFLite tensors.

The core quantizes in the `every_tensor` flavour (ONNX Runtime's QDQQuantizer fed edgec's ranges):
each activation X is written X -> QuantizeLinear -> DequantizeLinear -> readers, weights are
DequantizeLinear(int8 initializer, per-channel scales), biases DequantizeLinear(int32, s_in*s_w).
TFLite has no such pairs: a tensor simply *is* int8 with a scale. So a DequantizeLinear of a
constant becomes an integer constant, a DequantizeLinear of an activation is dropped (its readers
read the integer tensor), and a QuantizeLinear whose float input has no other reader is dropped by
making the producer write the integer tensor. What remains (a float graph input's Q, a graph
output's DQ, a re-quantization) is lowered as QUANTIZE / DEQUANTIZE.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from edgec.core.quantization.graph import input_readers

from .writer import QParams

# TFLite's integer kernels demand these output parameters exactly (softmax.cc, activations.cc).
FIXED_OUTPUT = {
    "Softmax": {np.dtype(np.int8): (1 / 256, -128), np.dtype(np.uint8): (1 / 256, 0)},
    "Sigmoid": {np.dtype(np.int8): (1 / 256, -128), np.dtype(np.uint8): (1 / 256, 0)},
    "Tanh": {np.dtype(np.int8): (1 / 128, 0), np.dtype(np.uint8): (1 / 128, 128)},
}


@dataclass
class Folded:
    nodes: list
    qparams: dict = field(default_factory=dict)
    qconsts: dict = field(default_factory=dict)
    dtypes: dict = field(default_factory=dict)
    fixed: list = field(default_factory=list)


def _attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def fold(model: onnx.ModelProto) -> Folded:
    g = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and _attr(n, "value", None) is not None:
            consts[n.output[0]] = numpy_helper.to_array(_attr(n, "value", None))
    graph_inputs = {i.name for i in g.input} - set(consts)
    graph_outputs = {o.name for o in g.output}
    nodes = []
    for n in g.node:
        c = onnx.NodeProto()
        c.CopyFrom(n)
        nodes.append(c)
    if not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in nodes):
        return Folded(nodes)

    def params(node, arr_ndim):
        scale = np.asarray(consts[node.input[1]], np.float32).ravel()
        if len(node.input) > 2 and node.input[2]:
            zp_arr = consts[node.input[2]]
            zp = np.asarray(zp_arr).ravel()
            dtype = zp_arr.dtype
        else:
            zp, dtype = np.zeros(scale.size, np.int64), np.dtype(np.uint8)
        axis = _attr(node, "axis", 1) if scale.size > 1 else 0
        if axis < 0:
            axis += arr_ndim
        return QParams(tuple(float(s) for s in scale), tuple(int(z) for z in zp), int(axis)), np.dtype(dtype)

    out = Folded([])
    rename: dict[str, str] = {}
    producers = {o: n for n in nodes for o in n.output}
    readers = input_readers(nodes)
    drop = set()
    for n in nodes:
        if n.op_type == "QuantizeLinear" and n.input[0] in consts:  # a constant quantized in the graph
            p, dt = params(n, consts[n.input[0]].ndim)
            x = consts[n.input[0]].astype(np.float32)
            info = np.iinfo(dt)
            sc, zp = p.broadcast(x.ndim)
            consts[n.output[0]] = np.clip(np.round(x / sc) + zp, info.min, info.max).astype(dt)
            drop.add(id(n))
    for n in nodes:
        if n.op_type == "DequantizeLinear" and n.input[0] in consts:
            arr = consts[n.input[0]]
            p, _ = params(n, arr.ndim)
            out.qconsts[n.output[0]] = (arr, p)
            drop.add(id(n))
        elif n.op_type == "QuantizeLinear" and id(n) not in drop:
            p, dt = params(n, 0)
            out.qparams[n.output[0]] = p
            out.dtypes[n.output[0]] = dt
    for n in nodes:
        if n.op_type == "DequantizeLinear" and id(n) not in drop:
            if n.input[0] not in out.qparams:  # an integer graph input (integer I/O)
                out.qparams[n.input[0]], out.dtypes[n.input[0]] = params(n, 0)
            if n.output[0] in graph_outputs:
                continue
            rename[n.output[0]] = n.input[0]
            drop.add(id(n))

    def resolve(x):
        while x in rename:
            x = rename[x]
        return x

    for n in nodes:
        if n.op_type != "QuantizeLinear" or id(n) in drop:
            continue
        src = resolve(n.input[0])
        if src in out.qparams and out.qparams[src].same(out.qparams[n.output[0]]) and \
                out.dtypes.get(src) == out.dtypes[n.output[0]]:
            rename[n.output[0]] = src  # a Q after a DQ with the same parameters: the same integers
            drop.add(id(n))
            continue
        p = producers.get(n.input[0])
        if (p is None or n.input[0] in graph_inputs or n.input[0] in graph_outputs or src != n.input[0]
                or len(readers.get(n.input[0], [])) != 1 or p.op_type in ("QuantizeLinear", "DequantizeLinear")
                or id(p) in drop):
            continue
        p.output[list(p.output).index(n.input[0])] = n.output[0]
        drop.add(id(n))
    out.nodes = [n for n in nodes if id(n) not in drop]
    for n in out.nodes:
        for i, x in enumerate(n.input):
            if x:
                n.input[i] = resolve(x)
    for n in out.nodes:
        fixed = FIXED_OUTPUT.get(n.op_type)
        o = n.output[0] if n.output else None
        if fixed and o in out.qparams and out.dtypes[o] in fixed:
            s, z = fixed[out.dtypes[o]]
            out.qparams[o] = QParams((s,), (z,))
            out.fixed.append(o)
    return out
