"""Weight rounding that minimises each layer's output error instead of each weight's own error.

Round-to-nearest treats every weight alone; what a layer outputs is W @ x, and rounding errors of
weights that see correlated inputs add up. GPTQ (Frantar et al. 2022, the optimal-brain-quantization
update of AdaRound's objective) rounds one input column at a time and pushes the rounding error onto
the not-yet-rounded columns through the inverse of H = E[x x^T], the layer input's second moment on
calibration data. It is closed-form (one Cholesky per layer, no training loop; chosen over AdaRound's
per-layer gradient descent, which needs an autograd library and minutes per model). The grid (ONNX
Runtime's per-channel scales) is kept, only which integer each weight lands on changes, so int32
biases, fusions and speed are untouched. It runs with max_drop or when asked (pipeline.quantize).

Measured on imagenet_eval500, SqueezeNet 1.1 with only the weights quantized: logit NMSE vs FP32
2.4e-4 (round-to-nearest) -> 4.2e-5. Whole INT8 model: 8.0e-4 -> 7.0e-4 (SqueezeNet; activation
rounding dominates), 5.0e-3 -> 3.9e-3 (EfficientNet-Lite0); top-1 agreement moved by <= 1 image.
Scope: Conv of any group count (incl. 1x1, kxk and depthwise, any stride/dilation/padding) and
Gemm/MatMul with a constant 2-D weight. A grouped conv is rounded group by group, each with the H of
its own input channels: a depthwise channel's 9 or 25 weights see neighbouring pixels, which are
strongly correlated, so even that few weights can trade rounding error. On EfficientNet-Lite0 (run
by OpenVINO, eval500, three 400-image calibration subsets) adding the depthwise convs lowered logit
NMSE by 10-13 % on every subset (e.g. 3.55e-3 -> 3.21e-3) and raised the smooth agreement estimate
(repair.flip_probabilities) by 0.1-0.2 points; its block-0 depthwise conv alone is the model's
largest weight-rounding error (output NMSE 4.0e-3 round-to-nearest before bias correction).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable

import numpy as np
import onnx
from onnx import numpy_helper

from .calibration import session
from .graph import initializers, weighted_nodes

BLOCK = 128  # columns per lazy-batch block of gptq_round
DAMP = 0.01  # fraction of mean(diag H) added to H's diagonal: keeps the inverse stable for rank-deficient inputs


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return list(a.ints) if a.ints else (a.i if a.type == onnx.AttributeProto.INT else a.s.decode())
    return default


def _patches(x: np.ndarray, node: onnx.NodeProto, kshape, groups: int = 1, every: int = 1) -> np.ndarray:
    """im2col of a 2-D Conv input: [groups, N*Ho*Wo, Cin/groups*kh*kw], column order matching
    W.reshape(Cout, -1) within a group. `every` > 1: only every `every`-th output row and column."""
    kh, kw = kshape
    xp, (sh, sw), (dh, dw), ho, wo = _padded(x, node, kshape)
    if every > 1:
        sh, sw, ho, wo = sh * every, sw * every, -(-ho // every), -(-wo // every)
    n, c = x.shape[:2]
    cg = c // groups
    if kh == kw == sh == sw == n == 1 and xp is x and x.flags.c_contiguous:
        # A 1x1 conv on one image: the K-major buffer below would be a copy of x in x's own order.
        return x.reshape(groups, cg, ho * wo).transpose(0, 2, 1)
    # Built K-major ([G, C/G, kh, kw, N, Ho, Wo], one strided slice per kernel offset) and returned as a
    # transposed view: a sliding-window gather straight into [G, M, K] took 120 ms for one 56x56x144
    # depthwise input, most of GPTQ's H collection (issue 17); this takes a few.
    out = np.empty((groups, cg, kh, kw, n, ho, wo), x.dtype)
    for i in range(kh):
        for j in range(kw):
            sl = xp[:, :, i * dh:i * dh + (ho - 1) * sh + 1:sh, j * dw:j * dw + (wo - 1) * sw + 1:sw]
            out[:, :, i, j] = sl.reshape(n, groups, cg, ho, wo).transpose(1, 2, 0, 3, 4)
    return out.reshape(groups, cg * kh * kw, n * ho * wo).transpose(0, 2, 1)


def _padded(x: np.ndarray, node: onnx.NodeProto, kshape):
    """A 2-D Conv input with the node's padding applied: (padded x, strides, dilations, Ho, Wo)."""
    (pt, pb, pl, pr), strides, dil, ho, wo = conv_geometry(x.shape, node, kshape)
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr))) if pt or pb or pl or pr else x
    return xp, strides, dil, ho, wo


def conv_geometry(shape, node: onnx.NodeProto, kshape):
    """((top, bottom, left, right) padding, strides, dilations, Ho, Wo) of a 2-D Conv on an NCHW input."""
    kh, kw = kshape
    strides = _attr(node, "strides", [1, 1])
    dil = _attr(node, "dilations", [1, 1])
    pads = _attr(node, "pads", [0, 0, 0, 0])
    auto = _attr(node, "auto_pad", "NOTSET")
    n, c, h, w = shape
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pad = []
        for size, k, s, d in ((h, kh, strides[0], dil[0]), (w, kw, strides[1], dil[1])):
            out = -(-size // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            small = total // 2
            pad.append((small, total - small) if auto == "SAME_UPPER" else (total - small, small))
        (pt, pb), (pl, pr) = pad
    elif auto == "VALID":
        pt = pb = pl = pr = 0
    else:
        pt, pl, pb, pr = pads
    (sh, sw), (dh, dw) = strides, dil
    ho = (h + pt + pb - (kh - 1) * dh - 1) // sh + 1
    wo = (w + pl + pr - (kw - 1) * dw - 1) // sw + 1
    return (pt, pb, pl, pr), (sh, sw), (dh, dw), ho, wo


def _layers(model: onnx.ModelProto):
    """(node, weight as [Cout, K], how an input tensor becomes rows, groups) for every supported layer.

    `rows(x)` gives [G, M, K]: one row block per group (G = 1 except for grouped/depthwise convs, where
    group g's output channels see only its own input channels)."""
    inits = initializers(model)
    out = []
    for node in weighted_nodes(model):
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        if node.op_type == "Conv" and w.ndim == 4 and w.shape[1] * w.shape[2] * w.shape[3] > 1:
            groups = _attr(node, "group", 1)
            out.append((node, w.reshape(w.shape[0], -1),
                        lambda x, node=node, k=w.shape[2:], g=groups: _patches(x, node, k, g), groups))
        elif node.op_type == "Gemm" and w.ndim == 2 and not _attr(node, "transA", 0):
            wt = w if _attr(node, "transB", 0) else w.T  # [out, in]
            out.append((node, wt, lambda x: x.reshape(1, -1, x.shape[-1]), 1))
        elif node.op_type == "MatMul" and w.ndim == 2:
            out.append((node, w.T, lambda x: x.reshape(1, -1, x.shape[-1]), 1))
    return out


@contextlib.contextmanager
def one_blas_thread():
    """numpy's BLAS on one thread: H and GPTQ are thousands of small products (a depthwise layer is one
    [25, M] x [M, 25] per channel), where OpenBLAS's second thread only adds hand-offs. On 2 cores,
    one 5x5 depthwise input (144 x 56 x 56) took 399 ms (median of 5) with two BLAS threads and 12.9 ms
    with one (issue 17). Without threadpoolctl, BLAS keeps its own setting."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(1, user_api="blas"):
        yield


def input_moments(model: onnx.ModelProto, data, layers) -> dict[str, np.ndarray]:
    """H[g] = sum of x x^T over every input row group g of each layer sees on `data` (FP32 activations)."""
    with one_blas_thread():
        return _input_moments(model, data, layers)


def _input_moments(model: onnx.ModelProto, data, layers) -> dict[str, np.ndarray]:
    from .calibration import with_outputs

    names = list(dict.fromkeys(node.input[0] for node, _, _, _ in layers))
    sess = session(with_outputs(model, names))
    hs: dict[str, np.ndarray] = {}
    for s in data:
        acts = dict(zip(names, sess.run(names, {i.name: s.feeds[i.name] for i in sess.get_inputs()})))
        for node, w, rows, _ in layers:
            r = rows(np.asarray(acts[node.input[0]], np.float32))
            h = np.matmul(r.transpose(0, 2, 1), r)
            hs[node.name] = hs.get(node.name, 0.0) + h.astype(np.float64)
    return hs


def gptq_round(w: np.ndarray, scale: np.ndarray, h: np.ndarray, qmin: int = -127, qmax: int = 127) -> np.ndarray:
    """Integers q ([Cout, K]) on the fixed per-row grid `scale` minimising tr((w - s q) H (w - s q)^T).

    Columns are visited in order of decreasing H diagonal ("act order": the inputs with most energy
    are rounded first, while the most columns are left to absorb their error)."""
    w = w.astype(np.float64).copy()
    h = h.astype(np.float64).copy()
    k = h.shape[0]
    dead = np.diag(h) <= 0
    h[dead, dead] = 1.0
    h += np.eye(k) * DAMP * float(np.mean(np.diag(h)))
    order = np.argsort(-np.diag(h), kind="stable")
    w, h = w[:, order], h[np.ix_(order, order)]
    try:
        hinv = np.linalg.cholesky(np.linalg.inv(h)).T  # upper triangular U with U^T U = H^-1
    except np.linalg.LinAlgError:
        return np.clip(np.round(w / scale[:, None]), qmin, qmax)[:, np.argsort(order)]
    s = scale.astype(np.float64)
    # Column-major work arrays (wt[j] is column j, contiguous): the loop below reads and updates whole
    # columns, which in w's row-major layout were strided; the arithmetic is the same element for element.
    wt = np.ascontiguousarray(w.T)
    qt = np.empty_like(wt)
    # Lazy batch updates (GPTQ's own trick): columns are rounded one by one inside a block of BLOCK, and
    # the block's errors reach the later columns in one matrix product. The per-column rank-1 update of
    # all later columns made EfficientNet-Lite0's 1000 x 1280 Gemm alone 7.6 s (issue 17); the same
    # algorithm, summed in another order (an integer lands elsewhere only where w/s sits on a .5 tie).
    for b0 in range(0, k, BLOCK):
        b1 = min(b0 + BLOCK, k)
        wb, hb = wt[b0:b1], hinv[b0:b1, b0:b1]
        errs = np.empty((b1 - b0, w.shape[0]))
        for j in range(b1 - b0):
            qi = np.clip(np.round(wb[j] / s), qmin, qmax)
            qt[b0 + j] = qi
            err = (wb[j] - qi * s) / hb[j, j]
            wb[j + 1:] -= np.outer(hb[j, j + 1:], err)
            errs[j] = err
        if b1 < k:
            wt[b1:] -= hinv[b0:b1, b1:].T @ errs
    return qt.T[:, np.argsort(order)]


def gptq_round_groups(w: np.ndarray, scale: np.ndarray, h: np.ndarray, qmin: int = -127,
                      qmax: int = 127) -> np.ndarray:
    """gptq_round for G independent groups at once: w [G, R, K], scale [G, R], h [G, K, K] -> q [G, R, K].

    A depthwise conv is hundreds of 1x9 problems; one call per group spent ~40 s of EfficientNet-Lite0's
    calibration in Python overhead (8,994 calls, issue 17). The same arithmetic, element for element, in
    one loop over K with the groups as a batch axis (numpy's stacked inv/cholesky call LAPACK per matrix
    as the single calls do), so the result equals the per-group one; a group whose H is not positive
    definite sends the whole batch through gptq_round one group at a time (its own fallback)."""
    if len(w) == 1:  # one group: the plain call is cheaper than the batch bookkeeping
        return gptq_round(w[0], scale[0], h[0], qmin, qmax)[None]
    w0, h0 = w, h
    w = np.array(w, np.float64)
    h = np.array(h, np.float64)
    g, _, k = w.shape
    idx = np.arange(k)
    diag = h[:, idx, idx]
    diag[diag <= 0] = 1.0
    h[:, idx, idx] = diag
    h += np.eye(k) * (DAMP * np.mean(diag, axis=1))[:, None, None]
    order = np.argsort(-h[:, idx, idx], axis=1, kind="stable")
    w = np.take_along_axis(w, order[:, None, :], axis=2)
    h = np.take_along_axis(np.take_along_axis(h, order[:, :, None], axis=1), order[:, None, :], axis=2)
    try:
        hinv = np.linalg.cholesky(np.linalg.inv(h)).transpose(0, 2, 1)
    except np.linalg.LinAlgError:
        return np.stack([gptq_round(wg, sg, hg, qmin, qmax) for wg, sg, hg in zip(w0, scale, h0)])
    s = np.asarray(scale, np.float64)
    q = np.empty_like(w)
    for i in range(k):
        qi = np.clip(np.round(w[:, :, i] / s), qmin, qmax)
        q[:, :, i] = qi
        err = (w[:, :, i] - qi * s) / hinv[:, i, i][:, None]
        w[:, :, i + 1:] -= err[:, :, None] * hinv[:, None, i, i + 1:]
    return np.take_along_axis(q, np.argsort(order)[:, None, :], axis=2)


def _weight_quant(qm: onnx.ModelProto):
    """node name -> (int8 weight initializer, scale, zero point, axis) in ORT's Q/DQ model."""
    qinits = initializers(qm)
    producer = {o: n for n in qm.graph.node for o in n.output}
    out = {}
    for node in qm.graph.node:
        if len(node.input) < 2:
            continue
        dq = producer.get(node.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in qinits:
            continue
        t = qinits[dq.input[0]]
        if t.data_type not in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8):
            continue
        scale = numpy_helper.to_array(qinits[dq.input[1]])
        zp = numpy_helper.to_array(qinits[dq.input[2]]) if len(dq.input) > 2 and dq.input[2] in qinits else None
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        out[node.name] = (t, scale, zp, axis)
    return out


def optimise_rounding(model: onnx.ModelProto, qm: onnx.ModelProto, data, reduce_range: bool = False,
                      moments=None, full_range: Iterable[str] = (), known=None, grids=None) -> dict[str, np.ndarray]:
    """Better-rounded integer weights for `qm` (ORT's Q/DQ model of `model`), keyed by weight initializer.

    Only symmetric weights (zero point 0) with per-channel or per-tensor scales along the output
    channel are handled; anything else keeps ORT's round-to-nearest.

    A layer's integers depend only on its FP32 weights, its H and its grid (scales, integer range), not on
    the other layers or the activation ranges. `known` {weight: (integers, scales, (lo, hi))} from an
    earlier compile of the same model and data (parts_cache.gptq_table) answers every layer whose grid
    matches, so a compile that keeps another layer in float, or calibrates its activations another way,
    rounds only what changed; `grids` (when given) receives each rounded layer's grid for storing."""
    quant = _weight_quant(qm)
    layers = [layer for layer in _layers(model) if layer[0].name in quant]
    if not layers:
        return {}
    known = known or {}
    plans = {node.name: _grid(node, w.shape[0], quant[node.name], reduce_range, full_range) for node, w, _, _ in layers}
    reused = {name: known[plan[0].name][0] for name, plan in plans.items()
              if plan is not None and _matches(known.get(plan[0].name), plan)}
    todo = [layer for layer in layers if plans[layer[0].name] is not None and layer[0].name not in reused]
    # `moments(layers)`: H per layer from elsewhere (int8.py caches it: it depends on the FP32 model and
    # the data only, not on the grid, so another backend's flavour reuses it).
    hs = (moments(todo) if moments is not None else input_moments(model, data, todo)) if todo else {}
    out: dict[str, np.ndarray] = {}
    with one_blas_thread():
        for node, w, _, groups in layers:
            plan = plans[node.name]
            if plan is None:
                continue
            t, s, lo, hi = plan
            if grids is not None:
                grids[t.name] = (s, (lo, hi))
            out[t.name] = reused[node.name] if node.name in reused else _round_layer(node, w, groups, t, s, lo, hi,
                                                                                      hs[node.name])
    return out


def _grid(node, cout: int, quant, reduce_range: bool, full_range):
    """(integer initializer, float64 per-output-channel scales, lo, hi) of a layer GPTQ can round, else None."""
    t, scale, zp, axis = quant
    if zp is not None and np.any(zp != 0):
        return None
    orig_shape = tuple(t.dims)
    if scale.size == 1:
        s = np.full(cout, float(scale.reshape(())), np.float64)
    elif scale.size == cout and _output_axis(node.op_type, len(orig_shape), node) == axis % len(orig_shape):
        s = scale.astype(np.float64)
    else:
        return None
    # The integer range ORT's quantizer put the scales on (quant_utils.get_qmin_qmax_for_qType).
    # `full_range`: FP32 weight names the quantizer kept on the 8-bit grid under reduce_range.
    reduced = reduce_range and node.input[1] not in full_range
    if t.data_type == onnx.TensorProto.INT8:
        lo, hi = (-64, 64) if reduced else (-127, 127)
    else:
        lo, hi = (0, 127) if reduced else (0, 255)
    return t, s, lo, hi


def _matches(prev, plan) -> bool:
    if prev is None or plan is None:
        return False
    q, s, rng = prev
    t, s_now, lo, hi = plan
    return (tuple(q.shape) == tuple(t.dims) and s.shape == s_now.shape and np.array_equal(s, s_now)
            and tuple(rng) == (lo, hi))


def _round_layer(node, w, groups, t, s, lo, hi, h) -> np.ndarray:
    cout = w.shape[0]
    orig_shape = tuple(t.dims)
    per = cout // groups
    q = gptq_round_groups(w.reshape(groups, per, -1), s.reshape(groups, per), h, lo, hi)
    q = q.reshape(cout, -1)
    if node.op_type == "Conv":
        q = q.reshape(orig_shape)
    elif node.op_type == "Gemm" and _attr(node, "transB", 0):
        q = q.reshape(orig_shape)
    else:
        q = q.T.reshape(orig_shape)
    return q.astype(np.int8 if t.data_type == onnx.TensorProto.INT8 else np.uint8)


def _output_axis(op_type: str, rank: int, node: onnx.NodeProto) -> int:
    from .weights import channel_axis

    return channel_axis(op_type, rank, _attr(node, "transB", 0))


def apply_rounding(qm: onnx.ModelProto, table: dict[str, np.ndarray]) -> onnx.ModelProto:
    """Replace the named integer weight initializers of `qm` in place (same names, shapes and scales)."""
    for i, t in enumerate(qm.graph.initializer):
        q = table.get(t.name)
        if q is not None and tuple(t.dims) == q.shape:
            qm.graph.initializer[i].CopyFrom(numpy_helper.from_array(q, t.name))
    return qm
