"""Conv (plain, depthwise, grouped as SPLIT + convs + CONCATENATION), ConvTranspose."""
from __future__ import annotations

import math

import numpy as np

from ..layout import NHWC
from ..lower import BO, BOP, S, attr, handler, unsupported
from ..writer import QParams


def spatial_pads(g, node, in_hw, kernel, strides, dilations):
    """ONNX pads (explicit or auto_pad) as ((top, bottom), (left, right))."""
    auto = attr(node, "auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        out = []
        for i, k, s, d in zip(in_hw, kernel, strides, dilations):
            total = max((math.ceil(i / s) - 1) * s + (k - 1) * d + 1 - i, 0)
            small = total // 2
            out.append((small, total - small) if auto == "SAME_UPPER" else (total - small, small))
        return tuple(out)
    if auto == "VALID":
        return ((0, 0), (0, 0))
    p = attr(node, "pads", [0, 0, 0, 0])
    return ((p[0], p[2]), (p[1], p[3]))


def tf_same(in_hw, kernel, strides, dilations):
    out = []
    for i, k, s, d in zip(in_hw, kernel, strides, dilations):
        total = max((math.ceil(i / s) - 1) * s + (k - 1) * d + 1 - i, 0)
        out.append((total // 2, total - total // 2))
    return tuple(out)


def padded_input(g, x: int, x_name: str, pads, value: float | None = 0.0):
    """(padding, tensor): SAME / VALID when TFLite's own padding equals the ONNX pads, else an explicit
    PAD (PADV2 with `value` for max pooling) and VALID."""
    n, h, w, c = g.w.tensors[x].shape
    (t, b), (l, r) = pads
    if t == b == l == r == 0:
        return S.Padding.VALID, x
    paddings = np.array([[0, 0], [t, b], [l, r], [0, 0]], np.int32)
    q = g.q(x_name) if g.float_view is None else None
    dt = np.float32 if q is None else g.dtype(x_name)
    y = g.w.tensor(g.name(x_name) + "/padded", (n, h + t + b, w + l + r, c), dt, q)
    if value in (0.0, None) and (q is None or value is None):
        g.emit(BOP.PAD, [x, g.w.const("paddings", paddings)], [y], BO.PadOptions, S.PadOptionsT())
    else:
        if q is None:
            cv = np.array(value, np.float32)
        else:
            info = np.iinfo(dt)
            cv = np.array(info.min if value == -np.inf else
                          np.clip(round(value / q.scale[0]) + q.zero_point[0], info.min, info.max), dt)
        cst = g.w.const("pad_value", cv, q)
        g.emit(BOP.PADV2, [x, g.w.const("paddings", paddings), cst], [y], BO.PadV2Options, S.PadV2OptionsT())
    return S.Padding.VALID, y


def choose_padding(g, node, x, x_name, in_hw, kernel, strides, dilations, value=0.0):
    pads = spatial_pads(g, node, in_hw, kernel, strides, dilations)
    if pads == tf_same(in_hw, kernel, strides, dilations) and any(sum(p) for p in pads):
        return S.Padding.SAME, x
    return padded_input(g, x, x_name, pads, value)


def _bias(g, node, out_ch, w_q, x_name):
    if len(node.input) > 2 and node.input[2]:
        b, bq = g.weight(node.input[2])
        if bq is not None and w_q is None:  # int32 bias next to float weights: use its float value
            b, bq = g.value(node.input[2]), None
        return b, bq
    if w_q is not None and g.q(x_name) is not None and g.float_view is None:
        s_in = g.q(x_name).scale[0]
        return np.zeros(out_ch, np.int32), QParams(tuple(s_in * s for s in _per_channel(w_q.scale, out_ch)),
                                                  (0,) * out_ch, 0)
    return np.zeros(out_ch, np.float32), None


def _per_channel(scale, n):
    return tuple(scale) if len(scale) == n else tuple(scale) * n


def _slice_q(q: QParams | None, lo, hi, n):
    if q is None:
        return None
    if len(q.scale) == 1:
        return q
    return QParams(q.scale[lo:hi], q.zero_point[lo:hi], q.axis)


@handler("Conv")
def conv(g, node):
    x_name = node.input[0]
    if g.rank(x_name) != 4:
        raise unsupported(node, f"{g.rank(x_name) - 2}-D convolution (only 2-D)")
    W, wq = g.weight(node.input[1])
    O, Ig, kh, kw = W.shape
    C = g.shape(x_name)[1]
    group = attr(node, "group", 1)
    strides = attr(node, "strides", [1, 1])
    dil = attr(node, "dilations", [1, 1])
    in_hw = g.shape(x_name)[2:]
    act, out_name = g.fused_activation(node)
    x = g.inp(node, 0, NHWC)
    padding, x = choose_padding(g, node, x, x_name, in_hw, (kh, kw), strides, dil)
    b, bq = _bias(g, node, O, wq, x_name)
    y_shape = (1,) + tuple(g.shape(out_name)[2:]) + (O,)
    if group == 1:
        o = S.Conv2DOptionsT()
        o.padding, o.strideH, o.strideW = padding, strides[0], strides[1]
        o.dilationHFactor, o.dilationWFactor, o.fusedActivationFunction = dil[0], dil[1], act
        w = g.weight_tensor(node.input[1], W.transpose(0, 2, 3, 1), wq)
        bt = g.weight_tensor(node.input[2] if len(node.input) > 2 else node.name + "/bias", b, bq)
        y = g.out(node, 0, NHWC, name=out_name)
        g.emit(BOP.CONV_2D, [x, w, bt], [y], BO.Conv2DOptions, o)
        return
    if Ig == 1 and group == C:
        o = S.DepthwiseConv2DOptionsT()
        o.padding, o.strideH, o.strideW = padding, strides[0], strides[1]
        o.dilationHFactor, o.dilationWFactor, o.fusedActivationFunction = dil[0], dil[1], act
        o.depthMultiplier = O // C
        dq = QParams(wq.scale, wq.zero_point, 3) if wq is not None else None
        w = g.weight_tensor(node.input[1], W.transpose(1, 2, 3, 0), dq)
        bt = g.weight_tensor(node.input[2] if len(node.input) > 2 else node.name + "/bias", b, bq)
        y = g.out(node, 0, NHWC, name=out_name)
        g.emit(BOP.DEPTHWISE_CONV_2D, [x, w, bt], [y], BO.DepthwiseConv2DOptions, o)
        return
    # Grouped: TFLite's CONV_2D group support is kernel-dependent, so one conv per group.
    xs_shape = list(g.w.tensors[x].shape)
    xs_shape[3] //= group
    xq = g.q(x_name) if g.float_view is None else None
    xdt = g.dtype(x_name) if xq is not None else np.float32
    parts = [g.w.tensor(f"{node.name}/group{k}/in", xs_shape, xdt, xq) for k in range(group)]
    so = S.SplitOptionsT()
    so.numSplits = group
    g.emit(BOP.SPLIT, [g.w.const("axis", np.array(3, np.int32)), x], parts, BO.SplitOptions, so)
    og = O // group
    yq = g.q(out_name) if g.float_view is None else None
    ydt = g.dtype(out_name) if yq is not None else np.float32
    outs = []
    for k in range(group):
        o = S.Conv2DOptionsT()
        o.padding, o.strideH, o.strideW = padding, strides[0], strides[1]
        o.dilationHFactor, o.dilationWFactor, o.fusedActivationFunction = dil[0], dil[1], act
        sl = slice(k * og, (k + 1) * og)
        w = g.weight_tensor(f"{node.input[1]}/group{k}", np.ascontiguousarray(W[sl].transpose(0, 2, 3, 1)),
                            _slice_q(wq, sl.start, sl.stop, O))
        bt = g.weight_tensor(f"{node.name}/bias/group{k}", b[sl], _slice_q(bq, sl.start, sl.stop, O))
        yk = g.w.tensor(f"{node.name}/group{k}/out", y_shape[:3] + (og,), ydt, yq)
        g.emit(BOP.CONV_2D, [parts[k], w, bt], [yk], BO.Conv2DOptions, o)
        outs.append(yk)
    co = S.ConcatenationOptionsT()
    co.axis = 3
    y = g.out(node, 0, NHWC, name=out_name)
    g.emit(BOP.CONCATENATION, outs, [y], BO.ConcatenationOptions, co)


@handler("ConvTranspose")
def conv_transpose(g, node):
    x_name = node.input[0]
    if g.rank(x_name) != 4:
        raise unsupported(node, "non-2-D ConvTranspose")
    if attr(node, "group", 1) != 1:
        raise unsupported(node, f"attribute group={attr(node, 'group')}")
    if any(d != 1 for d in attr(node, "dilations", [1, 1])):
        raise unsupported(node, f"attribute dilations={attr(node, 'dilations')}")
    auto = attr(node, "auto_pad", b"NOTSET")
    if (auto.decode() if isinstance(auto, bytes) else auto) != "NOTSET":
        raise unsupported(node, f"attribute auto_pad={auto}")
    W, wq = g.weight(node.input[1])  # [Cin, Cout, kh, kw]
    Cin, O, kh, kw = W.shape
    s = attr(node, "strides", [1, 1])
    p = attr(node, "pads", [0, 0, 0, 0])
    op = attr(node, "output_padding", [0, 0])
    _, _, h, w_ = g.shape(x_name)
    full = ((h - 1) * s[0] + kh, (w_ - 1) * s[1] + kw)
    _, _, ho, wo = g.shape(node.output[0])
    if p[2] < op[0] or p[3] < op[1]:
        raise unsupported(node, f"output_padding={op} larger than the end pads {p[2:]}")
    act, out_name = g.fused_activation(node)
    x = g.inp(node, 0, NHWC)
    wq2 = QParams(wq.scale, wq.zero_point, 0) if wq is not None else None
    wt = g.weight_tensor(node.input[1], np.ascontiguousarray(W.transpose(1, 2, 3, 0)), wq2)
    b, bq = _bias(g, node, O, wq, x_name)
    bt = g.weight_tensor(node.input[2] if len(node.input) > 2 else node.name + "/bias", b, bq)
    o = S.TransposeConvOptionsT()
    o.padding, o.strideH, o.strideW, o.fusedActivationFunction = S.Padding.VALID, s[0], s[1], act
    crop = (p[0], p[1]) != (0, 0) or full != (ho, wo)
    y = g.out(node, 0, NHWC, name=out_name)
    if not crop:
        g.emit(BOP.TRANSPOSE_CONV, [g.w.const("output_shape", np.array([1, ho, wo, O], np.int32)), wt, x, bt], [y],
               BO.TransposeConvOptions, o)
        return
    yq = g.q(out_name) if g.float_view is None else None
    ydt = g.dtype(out_name) if yq is not None else np.float32
    if g.float_view is not None:
        ydt = np.float32
    big = g.w.tensor(node.name + "/uncropped", (1,) + full + (O,), ydt, yq)
    g.emit(BOP.TRANSPOSE_CONV, [g.w.const("output_shape", np.array([1, *full, O], np.int32)), wt, x, bt], [big],
           BO.TransposeConvOptions, o)
    g.emit(BOP.SLICE, [big, g.w.const("begin", np.array([0, p[0], p[1], 0], np.int32)),
                       g.w.const("size", np.array([1, ho, wo, O], np.int32))], [y], BO.SliceOptions, S.SliceOptionsT())
