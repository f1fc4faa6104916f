"""Gemm and MatMul: FULLY_CONNECTED for a constant right-hand side, BATCH_MATMUL otherwise."""
from __future__ import annotations

import numpy as np

from ..layout import ONNX
from ..lower import BO, BOP, S, attr, handler, unsupported
from ..writer import QParams


def _fc(g, node, w_name, W, wq, bias, bq, keep_dims: bool):
    act, out_name = g.fused_activation(node)
    x = g.inp(node, 0, ONNX)
    w = g.weight_tensor(w_name, np.ascontiguousarray(W), wq)
    if bias is None:
        bt = -1
    else:
        bt = g.weight_tensor(node.name + "/bias", bias, bq)
    o = S.FullyConnectedOptionsT()
    o.fusedActivationFunction, o.keepNumDims = act, keep_dims
    y = g.out(node, 0, ONNX, name=out_name)
    g.emit(BOP.FULLY_CONNECTED, [x, w, bt], [y], BO.FullyConnectedOptions, o)


def _weight_nk(g, name, transposed: bool):
    """The [N, K] weight and its quantization (per output channel on axis 0)."""
    W, wq = g.weight(name)
    if not transposed:
        W = W.T
        if wq is not None and len(wq.scale) > 1:
            wq = QParams(wq.scale, wq.zero_point, 0)
    return np.ascontiguousarray(W), wq


@handler("Gemm")
def gemm(g, node):
    if attr(node, "transA", 0):
        raise unsupported(node, "attribute transA=1")
    alpha, beta = attr(node, "alpha", 1.0), attr(node, "beta", 1.0)
    has_c = len(node.input) > 2 and bool(node.input[2])
    if not g.is_const(node.input[1]):
        return _batch_matmul(g, node, adj_y=bool(attr(node, "transB", 0)), bias=node.input[2] if has_c else None)
    W, wq = _weight_nk(g, node.input[1], bool(attr(node, "transB", 0)))
    n = W.shape[0]
    bias = bq = None
    if has_c:
        if not g.is_const(node.input[2]):
            raise unsupported(node, "a non-constant C input")
        bias, bq = g.weight(node.input[2])
        if bias.size not in (1, n):
            raise unsupported(node, f"C of shape {list(bias.shape)} (only [N] or a scalar)")
        bias = np.broadcast_to(bias.reshape(-1), (n,)).copy()
    if alpha != 1.0 or (has_c and beta != 1.0):
        if wq is None:
            W = W * alpha
            bias = bias * beta if bias is not None else None
            bias, bq = (g.value(node.input[2]).reshape(-1) * beta, None) if bq is not None else (bias, bq)
        else:
            # alpha joins the weight scales; beta*C is re-quantized at the new s_in * s_w.
            wq = QParams(tuple(alpha * s for s in wq.scale), wq.zero_point, 0)
            if has_c:
                if g.q(node.input[0]) is None or g.float_view is not None:
                    bias, bq = np.broadcast_to(g.value(node.input[2]).reshape(-1), (n,)) * beta, None
                else:
                    s_in = g.q(node.input[0]).scale[0]
                    sc = np.asarray(wq.scale if len(wq.scale) == n else wq.scale * n) * s_in
                    bf = np.broadcast_to(g.value(node.input[2]).reshape(-1), (n,)) * beta
                    bias = np.round(bf / sc).astype(np.int32)
                    bq = QParams(tuple(float(v) for v in sc), (0,) * n, 0)
    if bq is not None and wq is None:
        bias, bq = g.value(node.input[2]).reshape(-1), None
    if bias is None and wq is not None and g.q(node.input[0]) is not None and g.float_view is None:
        s_in = g.q(node.input[0]).scale[0]
        sc = wq.scale if len(wq.scale) == n else wq.scale * n
        bias, bq = np.zeros(n, np.int32), QParams(tuple(s_in * s for s in sc), (0,) * n, 0)
    if bias is not None and bq is not None and len(bq.scale) > 1:
        bq = QParams(bq.scale, bq.zero_point, 0)
    _fc(g, node, node.input[1], W, wq, bias, bq, keep_dims=False)


@handler("MatMul")
def matmul(g, node):
    if g.is_const(node.input[1]) and len(g.shape(node.input[1])) == 2 and g.rank(node.input[0]) >= 2:
        W, wq = _weight_nk(g, node.input[1], transposed=False)
        _fc(g, node, node.input[1], W, wq, None, None, keep_dims=g.rank(node.input[0]) > 2)
        return
    _batch_matmul(g, node)


def _batch_matmul(g, node, adj_y=False, bias=None):
    if g.rank(node.input[0]) < 2 or g.rank(node.input[1]) < 2:
        raise unsupported(node, "a 1-D MatMul operand")
    a = g.inp(node, 0, ONNX, quantize_like=node.input[0])
    b = g.inp(node, 1, ONNX, quantize_like=node.input[0])
    o = S.BatchMatMulOptionsT()
    o.adjX, o.adjY = False, adj_y
    if bias is None:
        y = g.out(node, 0, ONNX)
        g.emit(BOP.BATCH_MATMUL, [a, b], [y], BO.BatchMatMulOptions, o)
        return
    if g.q(node.output[0]) is not None and g.float_view is None:
        raise unsupported(node, "an int8 Gemm with a non-constant B and a bias")
    y = g.out(node, 0, ONNX)
    tmp = g.w.tensor(node.name + "/matmul", g.w.tensors[y].shape, np.float32)
    g.emit(BOP.BATCH_MATMUL, [a, b], [tmp], BO.BatchMatMulOptions, o)
    c = g.w.const(node.name + "/bias", np.asarray(g.value(bias), np.float32) * attr(node, "beta", 1.0))
    g.emit(BOP.ADD, [tmp, c], [y], BO.AddOptions, S.AddOptionsT())
