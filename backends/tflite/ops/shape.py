"""Data movement: Reshape / Flatten / Squeeze / Unsqueeze, Transpose, Concat, Slice, Split, Pad.

All of them keep the integer scale (TFLite requires it), so an int8 output whose range the core did
not share gets a re-quantization after the op (`Lowering.same_scale_out`)."""
from __future__ import annotations

import numpy as np

from .. import layout as L
from ..lower import BO, BOP, S, attr, handler, unsupported
from .elementwise import common_layout


@handler("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def reshape(g, node):
    n = g.name(node.input[0])
    shp = g.shape(n)
    made = g.layout_of(n)
    lay = made if L.same_bytes(shp, made, L.ONNX) else L.ONNX
    x = g.inp(node, 0, lay)
    out_shape = g.shape(node.output[0])
    y, finish = g.same_scale_out(node, n, 0, L.ONNX)
    g.emit_reshape(x, y, out_shape)
    finish()


@handler("Transpose")
def transpose(g, node):
    n = g.name(node.input[0])
    rank = g.rank(n)
    p = attr(node, "perm", list(range(rank))[::-1])
    lay = g.layout_of(n)
    x = g.inp(node, 0, lay)
    inv = np.argsort(L.perm(lay, rank))
    q_in, q_out = g.q(n), g.q(node.output[0])
    same_q = g.float_view is not None or q_in is None or q_in.same(q_out)
    for out_lay in ([L.NHWC, L.ONNX] if rank == 4 else [L.ONNX]):
        q = [int(inv[p[j]]) for j in L.perm(out_lay, rank)]
        if q == list(range(rank)) and same_q and node.output[0] not in g.graph_outputs:
            o = g.name(node.output[0])
            g.mat[(o, out_lay)] = x
            g.made_in[o] = out_lay
            return
    q = [int(inv[p[j]]) for j in range(rank)]
    y, finish = g.same_scale_out(node, n, 0, L.ONNX)
    g.emit(BOP.TRANSPOSE, [x, g.w.const("perm", np.array(q, np.int32))], [y])
    finish()


@handler("Concat")
def concat(g, node):
    names = [i for i in node.input if i]
    lay = common_layout(g, node, names)
    rank = g.rank(node.output[0])
    out_name = node.output[0]
    qo = g.q(out_name) if g.float_view is None else None
    xs = []
    for i, name in enumerate(node.input):
        if not name:
            continue
        x = g.inp(node, i, lay, quantize_like=out_name)
        if qo is not None and not g.is_const(name):
            x = g.requantize_to(x, g.q(name), qo, g.w.tensors[x].shape, g.name(name), g.dtype(out_name))
        xs.append(x)
    o = S.ConcatenationOptionsT()
    o.axis = L.axis(attr(node, "axis"), rank, lay)
    act, out_name = g.fused_activation(node)
    o.fusedActivationFunction = act
    y = g.out(node, 0, lay, name=out_name)
    g.emit(BOP.CONCATENATION, xs, [y], BO.ConcatenationOptions, o)


def _const_ints(g, node, i, what):
    v = g.value(node.input[i]) if len(node.input) > i and node.input[i] else None
    if v is None and len(node.input) > i and node.input[i]:
        raise unsupported(node, f"non-constant {what}")
    return None if v is None else [int(x) for x in np.asarray(v).reshape(-1)]


@handler("Slice")
def slice_(g, node):
    n = g.name(node.input[0])
    shp = g.shape(n)
    rank = len(shp)
    if len(node.input) > 1:
        starts, ends = _const_ints(g, node, 1, "starts"), _const_ints(g, node, 2, "ends")
        axes, steps = _const_ints(g, node, 3, "axes"), _const_ints(g, node, 4, "steps")
    else:
        starts, ends, axes, steps = attr(node, "starts"), attr(node, "ends"), attr(node, "axes"), None
    axes = axes or list(range(len(starts)))
    steps = steps or [1] * len(starts)
    begin, end, stride = [0] * rank, list(shp), [1] * rank
    end_mask = 0
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        ax %= rank
        en = max(min(en, 2 ** 31 - 1), -(2 ** 31))
        r = range(*slice(st, en, sp).indices(shp[ax]))
        begin[ax], stride[ax] = r.start, sp
        end[ax] = r.stop
        if r.stop < 0:
            end_mask |= 1 << ax  # a negative step running to the first element
    lay = g.layout_of(n) if rank == 4 else L.ONNX
    p = L.perm(lay, rank)
    x = g.inp(node, 0, lay)
    o = S.StridedSliceOptionsT()
    o.endMask = sum(1 << i for i, a in enumerate(p) if end_mask >> a & 1)
    y, finish = g.same_scale_out(node, n, 0, lay)
    g.emit(BOP.STRIDED_SLICE, [x, g.w.const("begin", np.array([begin[a] for a in p], np.int32)),
                               g.w.const("end", np.array([end[a] for a in p], np.int32)),
                               g.w.const("strides", np.array([stride[a] for a in p], np.int32))],
           [y], BO.StridedSliceOptions, o)
    finish()


@handler("Split")
def split(g, node):
    n = g.name(node.input[0])
    rank = g.rank(n)
    ax = attr(node, "axis", 0) % rank
    sizes = _const_ints(g, node, 1, "split") or attr(node, "split")
    if sizes is None:
        sizes = [g.shape(o)[ax] for o in node.output]
    lay = g.layout_of(n) if rank == 4 else L.ONNX
    x = g.inp(node, 0, lay)
    outs, finishes = [], []
    for i in range(len(node.output)):
        y, f = g.same_scale_out(node, n, i, lay)
        outs.append(y)
        finishes.append(f)
    o = S.SplitVOptionsT()
    o.numSplits = len(outs)
    g.emit(BOP.SPLIT_V, [x, g.w.const("size_splits", np.array(sizes, np.int32)),
                         g.w.const("axis", np.array(L.axis(ax, rank, lay), np.int32))], outs, BO.SplitVOptions, o)
    for f in finishes:
        f()


@handler("Pad")
def pad(g, node):
    n = g.name(node.input[0])
    rank = g.rank(n)
    mode = attr(node, "mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    pads = _const_ints(g, node, 1, "pads") if len(node.input) > 1 else attr(node, "pads")
    axes = _const_ints(g, node, 3, "axes") if len(node.input) > 3 else None
    full = [[0, 0] for _ in range(rank)]
    axes = [a % rank for a in axes] if axes else list(range(rank))
    k = len(axes)
    for j, a in enumerate(axes):
        full[a] = [pads[j], pads[j + k]]
    if any(v < 0 for p in full for v in p):
        raise unsupported(node, "negative pads (cropping)")
    lay = g.layout_of(n) if rank == 4 else L.ONNX
    p = L.perm(lay, rank)
    paddings = g.w.const("paddings", np.array([full[a] for a in p], np.int32))
    x = g.inp(node, 0, lay)
    y, finish = g.same_scale_out(node, n, 0, lay)
    if mode == "constant":
        value = 0.0
        if len(node.input) > 2 and node.input[2]:
            v = g.value(node.input[2])
            if v is None:
                raise unsupported(node, "a non-constant constant_value")
            value = float(np.asarray(v).reshape(()))
        q = g.q(n) if g.float_view is None else None
        if value == 0.0 and q is None:
            g.emit(BOP.PAD, [x, paddings], [y], BO.PadOptions, S.PadOptionsT())
        else:
            if q is None:
                cv = np.array(value, np.float32)
            else:
                info = np.iinfo(g.dtype(n))
                cv = np.array(np.clip(round(value / q.scale[0]) + q.zero_point[0], info.min, info.max), g.dtype(n))
            g.emit(BOP.PADV2, [x, paddings, g.w.const("pad_value", cv, q)], [y], BO.PadV2Options, S.PadV2OptionsT())
    elif mode == "reflect":
        o = S.MirrorPadOptionsT()
        o.mode = S.MirrorPadMode.REFLECT
        g.emit(BOP.MIRROR_PAD, [x, paddings], [y], BO.MirrorPadOptions, o)
    else:
        raise unsupported(node, f"attribute mode={mode!r}")
    finish()
