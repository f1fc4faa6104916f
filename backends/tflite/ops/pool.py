"""Pooling and reductions: MAX_POOL_2D / AVERAGE_POOL_2D, global pools and ReduceMean/Max as MEAN / REDUCE_MAX."""
from __future__ import annotations


import numpy as np

from .. import layout as L
from ..lower import BO, BOP, S, attr, handler, unsupported
from .conv import padded_input, spatial_pads, tf_same


def _pool(g, node, code, pad_value):
    x_name = node.input[0]
    if g.rank(x_name) != 4:
        raise unsupported(node, "non-2-D pooling")
    k = attr(node, "kernel_shape")
    s = attr(node, "strides", [1, 1])
    if any(d != 1 for d in attr(node, "dilations", [1, 1])):
        raise unsupported(node, f"attribute dilations={attr(node, 'dilations')}")
    if len(node.output) > 1 and node.output[1]:
        raise unsupported(node, "the Indices output")
    in_hw = g.shape(x_name)[2:]
    out_hw = g.shape(node.output[0])[2:]
    pads = spatial_pads(g, node, in_hw, k, s, (1, 1))
    # ceil_mode: the extra window at the end reads padding (shape inference gave the ceil'd size).
    pads = tuple((b, e + max(0, (o - 1) * st + kk - (i + b + e))) for (b, e), o, st, kk, i in zip(pads, out_hw, s, k, in_hw))
    x = g.inp(node, 0, L.NHWC)
    act, out_name = g.fused_activation(node)
    if pads == tf_same(in_hw, k, s, (1, 1)) and any(sum(p) for p in pads):
        padding = S.Padding.SAME  # TFLite's SAME average excludes the padding, ONNX's count_include_pad=0
        if code == BOP.AVERAGE_POOL_2D and attr(node, "count_include_pad", 0):
            padding, x = padded_input(g, x, x_name, pads, 0.0)
    elif any(sum(p) for p in pads):
        if code == BOP.AVERAGE_POOL_2D and not attr(node, "count_include_pad", 0):
            raise unsupported(node, f"pads={attr(node, 'pads')} with count_include_pad=0 that are not TFLite's SAME")
        padding, x = padded_input(g, x, x_name, pads, pad_value)
    else:
        padding = S.Padding.VALID
    o = S.Pool2DOptionsT()
    o.padding, o.strideH, o.strideW, o.filterHeight, o.filterWidth = padding, s[0], s[1], k[0], k[1]
    o.fusedActivationFunction = act
    if out_name != node.output[0]:
        y = g.out(node, 0, L.NHWC, name=out_name)
        g.emit(code, [x], [y], BO.Pool2DOptions, o)
        return
    y, finish = g.same_scale_out(node, x_name, 0, L.NHWC)
    g.emit(code, [x], [y], BO.Pool2DOptions, o)
    finish()


@handler("MaxPool")
def max_pool(g, node):
    if attr(node, "storage_order", 0):
        raise unsupported(node, "attribute storage_order=1")
    _pool(g, node, BOP.MAX_POOL_2D, -np.inf)


@handler("AveragePool")
def average_pool(g, node):
    _pool(g, node, BOP.AVERAGE_POOL_2D, 0.0)


def _reduce(g, node, code, axes, keepdims, same_scale):
    x_name = node.input[0]
    rank = g.rank(x_name)
    axes = sorted(a % rank for a in axes) if axes is not None else list(range(rank))
    lay = g.layout_of(x_name) if rank == 4 else L.ONNX
    if not keepdims and lay == L.NHWC:
        kept = [a for a in L.perm(lay, rank) if a not in axes]
        if kept != sorted(kept):
            lay = L.ONNX  # the kept axes would come out in another order
    x = g.inp(node, 0, lay)
    t_axes = np.array(sorted(L.axis(a, rank, lay) for a in axes), np.int32)
    out_lay = lay if keepdims else L.ONNX
    o = S.ReducerOptionsT()
    o.keepDims = bool(keepdims)
    if same_scale:
        y, finish = g.same_scale_out(node, x_name, 0, out_lay)
    else:
        y, finish = g.out(node, 0, out_lay), (lambda: None)
    g.emit(code, [x, g.w.const("axes", t_axes)], [y], BO.ReducerOptions, o)
    finish()


@handler("GlobalAveragePool")
def global_average_pool(g, node):
    _reduce(g, node, BOP.MEAN, list(range(2, g.rank(node.input[0]))), True, False)


@handler("GlobalMaxPool")
def global_max_pool(g, node):
    _reduce(g, node, BOP.REDUCE_MAX, list(range(2, g.rank(node.input[0]))), True, True)


def _axes(g, node):
    if len(node.input) > 1 and node.input[1]:
        v = g.value(node.input[1])
        if v is None:
            raise unsupported(node, "non-constant axes")
        return [int(a) for a in np.asarray(v).reshape(-1)] or None
    a = attr(node, "axes")
    if a is None and attr(node, "noop_with_empty_axes", 0):
        raise unsupported(node, "noop_with_empty_axes=1")
    return list(a) if a is not None else None


@handler("ReduceMean")
def reduce_mean(g, node):
    _reduce(g, node, BOP.MEAN, _axes(g, node), attr(node, "keepdims", 1), False)


@handler("ReduceMax")
def reduce_max(g, node):
    _reduce(g, node, BOP.REDUCE_MAX, _axes(g, node), attr(node, "keepdims", 1), True)
