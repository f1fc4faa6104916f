"""Elementwise arithmetic and activations, Softmax, Identity."""
from __future__ import annotations

import numpy as np

from .. import layout as L
from ..lower import BO, BOP, S, activation_code, attr, clip_bounds, handler, unsupported

A = S.ActivationFunctionType


def common_layout(g, node, names):
    """The layout of the first rank-4 activation among `names` (constants follow it)."""
    for n in names:
        if n and not g.is_const(n) and g.rank(n) == 4:
            return g.layout_of(n)
    return L.ONNX


_BINARY = {"Add": (BOP.ADD, BO.AddOptions, S.AddOptionsT), "Sub": (BOP.SUB, BO.SubOptions, S.SubOptionsT),
           "Mul": (BOP.MUL, BO.MulOptions, S.MulOptionsT), "Div": (BOP.DIV, BO.DivOptions, S.DivOptionsT)}


def _binary(g, node):
    code, ot, cls = _BINARY[node.op_type]
    lay = common_layout(g, node, node.input)
    out_rank = g.rank(node.output[0])
    for i in node.input:
        if not g.is_const(i) and g.rank(i) != out_rank and lay == L.NHWC:
            raise unsupported(node, f"broadcasting a rank-{g.rank(i)} activation against an NHWC tensor")
    act, out_name = g.fused_activation(node)
    ref = next(i for i in node.input if not g.is_const(i))
    a = g.inp(node, 0, lay, quantize_like=ref)
    b = g.inp(node, 1, lay, quantize_like=ref)
    o = cls()
    o.fusedActivationFunction = act
    y = g.out(node, 0, lay, name=out_name)
    g.emit(code, [a, b], [y], ot, o)


handler("Add", "Sub", "Mul")(_binary)
handler("Div", int8=False)(_binary)  # TFLite's DIV has no int8 kernel


def _unary(g, node, code, ot=0, options=None):
    lay = common_layout(g, node, node.input[:1])
    x = g.inp(node, 0, lay)
    y = g.out(node, 0, lay)
    g.emit(code, [x], [y], ot, options)


@handler("Relu")
def relu(g, node):
    _unary(g, node, BOP.RELU)


@handler("Sigmoid")
def sigmoid(g, node):
    _unary(g, node, BOP.LOGISTIC)


@handler("Tanh")
def tanh(g, node):
    _unary(g, node, BOP.TANH)


@handler("HardSwish")
def hard_swish(g, node):
    _unary(g, node, BOP.HARD_SWISH)


@handler("LeakyRelu")
def leaky_relu(g, node):
    o = S.LeakyReluOptionsT()
    o.alpha = float(attr(node, "alpha", 0.01))
    _unary(g, node, BOP.LEAKY_RELU, BO.LeakyReluOptions, o)


def _clip_int8(g, node):
    lo, hi = clip_bounds(g, node)
    return lo is not None and activation_code(g, node) is not None


@handler("Clip", int8=_clip_int8)
def clip(g, node):
    lo, hi = clip_bounds(g, node)
    if lo is None:
        raise unsupported(node, "non-constant min/max")
    code = {(0.0, 6.0): BOP.RELU6, (0.0, float("inf")): BOP.RELU, (-1.0, 1.0): BOP.RELU_N1_TO_1,
            (0.0, 1.0): BOP.RELU_0_TO_1}.get((lo, hi))
    if code is not None:
        return _unary(g, node, code)
    lay = common_layout(g, node, node.input[:1])
    x = g.inp(node, 0, lay)
    y = g.out(node, 0, lay)
    shp = g.w.tensors[y].shape
    cur = x
    if lo > -np.inf:
        t = g.w.tensor(node.name + "/max", shp, np.float32) if hi < np.inf else y
        g.emit(BOP.MAXIMUM, [cur, g.w.const("clip_min", np.array(lo, np.float32))], [t])
        cur = t
    if hi < np.inf:
        g.emit(BOP.MINIMUM, [cur, g.w.const("clip_max", np.array(hi, np.float32))], [y])
    if lo == -np.inf and hi == np.inf:
        g.emit_reshape(x, y, shp)


@handler("HardSigmoid", int8=False)
def hard_sigmoid(g, node):
    """max(0, min(1, alpha * x + beta)): no TFLite builtin, so MUL, ADD, RELU_0_TO_1."""
    alpha, beta = float(attr(node, "alpha", 0.2)), float(attr(node, "beta", 0.5))
    lay = common_layout(g, node, node.input[:1])
    x = g.inp(node, 0, lay)
    y = g.out(node, 0, lay)
    shp = g.w.tensors[y].shape
    t1 = g.w.tensor(node.name + "/scaled", shp, np.float32)
    g.emit(BOP.MUL, [x, g.w.const("alpha", np.array(alpha, np.float32))], [t1], BO.MulOptions, S.MulOptionsT())
    t2 = g.w.tensor(node.name + "/shifted", shp, np.float32)
    g.emit(BOP.ADD, [t1, g.w.const("beta", np.array(beta, np.float32))], [t2], BO.AddOptions, S.AddOptionsT())
    g.emit(BOP.RELU_0_TO_1, [t2], [y])


@handler("PRelu")
def prelu(g, node):
    lay = common_layout(g, node, node.input[:1])
    x = g.inp(node, 0, lay)
    slope = g.value(node.input[1])
    if slope is None:
        raise unsupported(node, "a non-constant slope")
    rank = g.rank(node.input[0])
    # The slope broadcasts against the input; PRELU wants it without the batch axis.
    full = np.broadcast_to(slope.reshape((1,) * (rank - slope.ndim) + slope.shape), (1,) + g.shape(node.input[0])[1:])
    full = L.data(np.ascontiguousarray(full, np.float32), lay, rank)[0]
    if g.q(node.input[0]) is not None and g.float_view is None:
        from ..lower import quantize_tensor

        qa, p = quantize_tensor(full, g.dtype(node.input[0]))
        s = g.w.const(node.input[1], qa, p)
    else:
        s = g.w.const(node.input[1], full.astype(np.float32))
    y = g.out(node, 0, lay)
    g.emit(BOP.PRELU, [x, s], [y])


@handler("Softmax")
def softmax(g, node):
    rank = g.rank(node.input[0])
    opset = next((o.version for o in g.model.opset_import if o.domain in ("", "ai.onnx")), 13)
    ax = attr(node, "axis", -1 if opset >= 13 else 1) % rank
    if opset < 13 and ax != rank - 1:
        raise unsupported(node, f"attribute axis={ax} with opset {opset} (flattening softmax)")
    lay = common_layout(g, node, node.input[:1])
    if L.axis(ax, rank, lay) != rank - 1:
        if rank == 4 and L.axis(ax, rank, L.ONNX) == rank - 1:
            lay = L.ONNX
        else:
            raise unsupported(node, f"attribute axis={ax} (softmax over a non-last axis)")
    o = S.SoftmaxOptionsT()
    o.beta = 1.0
    x = g.inp(node, 0, lay)
    y = g.out(node, 0, lay)
    g.emit(BOP.SOFTMAX, [x], [y], BO.SoftmaxOptions, o)


@handler("Identity", "Dropout")
def identity(g, node):
    if len(node.output) > 1 and node.output[1]:
        raise unsupported(node, "the mask output")
    if node.output[0] in g.graph_outputs:
        lay = g.layout_of(node.input[0])
        x = g.inp(node, 0, lay)
        y = g.out(node, 0, lay)
        g.emit_reshape(x, y, g.w.tensors[y].shape)
        return
    g.alias_output(node, 0, node.input[0])


@handler("BatchNormalization", int8=False)
def batch_norm(g, node):
    """Inference BatchNormalization left unfolded (--no-optimize): a per-channel MUL and ADD."""
    if len(node.output) > 1 and any(node.output[1:]):
        raise unsupported(node, "training-mode outputs")
    vals = [g.value(i) for i in node.input[1:5]]
    if any(v is None for v in vals):
        raise unsupported(node, "non-constant scale/bias/mean/var")
    scale, bias, mean, var = (np.asarray(v, np.float32) for v in vals)
    k = scale / np.sqrt(var + attr(node, "epsilon", 1e-5))
    rank = g.rank(node.input[0])
    shape = (-1,) + (1,) * (rank - 2)
    lay = common_layout(g, node, node.input[:1])
    x = g.inp(node, 0, lay)
    y = g.out(node, 0, lay)
    t = g.w.tensor(g.name(node.output[0]) + "/scaled", g.w.tensors[y].shape, np.float32)
    r = 4 if lay == L.NHWC else rank
    g.emit(BOP.MUL, [x, g.w.const("bn_scale", L.data(k.reshape(shape), lay, r))], [t], BO.MulOptions, S.MulOptionsT())
    g.emit(BOP.ADD, [t, g.w.const("bn_bias", L.data((bias - mean * k).reshape(shape), lay, r))], [y],
           BO.AddOptions, S.AddOptionsT())
