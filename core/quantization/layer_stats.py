"""One FP32 pass over the first calibration samples for what GPTQ and bias correction read of each
layer's input (issue 17).

GPTQ needs H = sum x x^T of every layer input (rounding.py) and bias correction the mean shift that a
layer's own quantization adds to its output. For a Conv or Gemm that shift is linear in the input:
mean_p(W_q . DQ(Q(x))_p - W . x_p) = W_q . mean_p DQ(Q(x))_p - W . mean_p x_p over the im2col rows p,
so it needs only the column means of each layer's im2col, FP32 and through the layer's input Q/DQ.
Those come from the same pass that fetches the inputs for H: no twin model (every layer run twice,
each pair of outputs fetched) and no second Q/DQ insertion. On EfficientNet-Lite0 (2 cores) the twin
pass over 64 images plus its Q/DQ model took ~13 s, the FP32 pass for H over 32 images ~9 s.
Layers this cannot express (ConvTranspose, 1-D/3-D convs, non-symmetric weights) keep the twin
method (repair.bias_deltas over just those).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from .calibration import session, with_outputs
from .graph import initializers
from .rounding import _attr, _output_axis, _patches, _weight_quant, conv_geometry, one_blas_thread

_QRANGE = {onnx.TensorProto.UINT8: (0, 255), onnx.TensorProto.INT8: (-128, 127),
           onnx.TensorProto.UINT16: (0, 65535), onnx.TensorProto.INT16: (-32768, 32767)}


def input_qdq(qm: onnx.ModelProto) -> dict[str, tuple[float, int, int, int] | None]:
    """node name -> (scale, zero point, qmin, qmax) of the per-tensor Q/DQ pair on its data input in the
    Q/DQ model `qm`, or None where that input stays float."""
    qinits = initializers(qm)
    prod = {o: n for n in qm.graph.node for o in n.output}
    out: dict = {}
    for node in qm.graph.node:
        if not node.input:
            continue
        dq = prod.get(node.input[0])
        q = prod.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear":
            out[node.name] = None
            continue
        try:
            scale = numpy_helper.to_array(qinits[q.input[1]])
            zpt = qinits[q.input[2]] if len(q.input) > 2 and q.input[2] else None
        except KeyError:
            out[node.name] = "unknown"  # computed scale: not ours to emulate
            continue
        zp = numpy_helper.to_array(zpt) if zpt is not None else np.zeros((), np.uint8)
        rng = _QRANGE.get(zpt.data_type if zpt is not None else onnx.TensorProto.UINT8)
        if scale.size != 1 or zp.size != 1 or rng is None:
            out[node.name] = "unknown"
            continue
        out[node.name] = (np.float32(scale.reshape(())), int(zp.reshape(())), *rng)
    return out


def _dqq(x: np.ndarray, qp) -> np.ndarray:
    """DequantizeLinear(QuantizeLinear(x)) as onnxruntime computes it (x / scale rounded half to even)."""
    if qp is None:
        return x
    s, zp, lo, hi = qp
    q = np.rint(np.divide(x, s, dtype=np.float32))
    np.clip(q, lo - zp, hi - zp, out=q)  # (q + zp) clipped to [lo, hi], minus zp: exact on integers
    q *= s
    return q


def _column_means(x: np.ndarray, node: onnx.NodeProto, kind) -> np.ndarray:
    """Mean over every im2col row (batch x output position) of a layer input: [G, K], the columns in
    the order of rounding._patches (and of W.reshape(Cout, -1) within a group).

    Without building the im2col or padding (a strided slice sum per tap was 12 s for EfficientNet-Lite0's
    50 layers x 64 images); two ways below, whichever is faster for the layer's geometry (the same sums
    in float64: they agree to the last bit on EfficientNet-Lite0's depthwise geometries)."""
    if kind[0] == "rows":
        return x.reshape(-1, x.shape[-1]).mean(0, dtype=np.float64)[None]
    _, (kh, kw), groups = kind
    (pt, pb, pl, pr), (sh, sw), (dh, dw), ho, wo = conv_geometry(x.shape, node, (kh, kw))
    n, c, h, w = x.shape
    if kh == kw == sh == sw == 1 and not (pt or pb or pl or pr):  # a plain 1x1 conv: channel means
        return (x.transpose(1, 0, 2, 3).reshape(c, -1).sum(axis=1, dtype=np.float64) / (n * h * w)).reshape(groups, -1)
    xs = x[0] if n == 1 else x.sum(axis=0, dtype=np.float64)
    if h * w <= 28 * 28 or kh * kw >= 25:
        # Small maps or 5x5 kernels: all taps as two float64 products, R . x . S^T with R, S the 0/1 maps of
        # the rows / columns each kernel row / column reads (_taps). One BLAS thread, EfficientNet-Lite0:
        # 240x28x28 5x5 1.5 vs 3.1 ms, 1152x7x7 5x5 0.6 vs 1.8 ms; larger 3x3 maps are faster below.
        rows_hit, cols_hit = _taps(h, kh, pt, sh, dh, ho), _taps(w, kw, pl, sw, dw, wo)
        y = (np.asarray(xs, np.float64).reshape(c * h, w) @ cols_hit.T).reshape(c, h, kw)
        out = (rows_hit @ y.transpose(1, 0, 2).reshape(h, c * kw)).reshape(kh, c, kw).transpose(1, 0, 2)
        return (out / (n * ho * wo)).reshape(groups, -1)
    # Kernel row i sees the input rows of one stride phase minus a few at the borders: one pass sums each
    # phase's rows, then each tap subtracts the border rows and picks its columns on a [C, W] array.
    phases = {}
    out = np.empty((c, kh, kw), np.float64)
    for i in range(kh):
        u0 = i * dh - pt  # input row of output row 0 (negative: padding)
        ph, last = u0 % sh, u0 + (ho - 1) * sh
        if ph not in phases:
            phases[ph] = xs[:, ph::sh, :].sum(axis=1, dtype=np.float64)
        a = phases[ph].copy()
        if u0 > ph:
            a -= xs[:, ph:u0:sh, :].sum(axis=1, dtype=np.float64)
        if last + sh < h:
            a -= xs[:, last + sh::sh, :].sum(axis=1, dtype=np.float64)
        for j in range(kw):
            v = j * dw - pl + sw * np.arange(wo)
            out[:, i, j] = a[:, v[(v >= 0) & (v < w)]].sum(axis=1)
    out /= n * ho * wo
    return out.reshape(groups, -1)


def _taps(size: int, k: int, pad: int, stride: int, dil: int, n_out: int) -> np.ndarray:
    """[k, size] 0/1: which input rows (or columns) kernel row i reads over the n_out output positions
    (padding reads nothing). Two small products with these replace a Python loop over every tap."""
    m = np.zeros((k, size), np.float64)
    for i in range(k):
        u = i * dil - pad + stride * np.arange(n_out)
        m[i, u[(u >= 0) & (u < size)]] = 1.0
    return m


def _kind(node: onnx.NodeProto, w: np.ndarray, groups: int, model_w_shape):
    if node.op_type == "Conv":
        return ("conv", tuple(model_w_shape[2:]), groups)
    return ("rows",)


class LayerStats:
    """The FP32 layer-input pass, run at most once, lazily, for whichever of H and the column means the
    caller asks first (and the other too when it will be wanted: `h_samples`, `mean_samples` > 0).

    `layers` are rounding._layers(model); `qparams()` returns input_qdq of the Q/DQ model whose input
    grids bias correction emulates (asked only when means are computed)."""

    def __init__(self, model: onnx.ModelProto, data, layers, *, h_samples: int, mean_samples: int,
                 qparams, progress: bool = False):
        self.model, self.data, self.layers = model, data, layers
        self.h_samples, self.mean_samples, self.qparams, self.progress = h_samples, mean_samples, qparams, progress
        self._h: dict | None = None
        self._means: dict | None = None
        self._h_layers: list[str] = []

    def moments(self, layers) -> dict[str, np.ndarray]:
        """H per layer of `layers`: rounding.input_moments' sums in the same arithmetic, except that a
        depthwise conv with a large output map sums every 2nd output row and column (_h_rows)."""
        names = [node.name for node, _, _, _ in layers]
        if self._h is None or not set(names) <= set(self._h):
            self._run(h_for=names, means=self._means is None and self.mean_samples > 0)
        return {k: self._h[k] for k in names}

    def means(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """node name -> (mean of im2col(x), mean of im2col(DQ(Q(x)))), each [G, K], over `mean_samples`."""
        if self._means is None:
            self._run(h_for=[], means=True)
        return self._means

    def _shape(self, name: str) -> list[int]:
        if not hasattr(self, "_shapes"):
            import onnx

            g = onnx.shape_inference.infer_shapes(self.model).graph
            self._shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
                            for v in list(g.value_info) + list(g.input) + list(g.output)}
        return self._shapes.get(name) or [1]

    def _run(self, h_for: list[str], means: bool) -> None:
        with one_blas_thread():
            self._pass(h_for, means)

    def _pass(self, h_for: list[str], means: bool) -> None:
        layers = self.layers
        want_h = set(h_for)
        qp = self.qparams() if means else {}
        mean_layers = [layer for layer in layers if means and qp.get(layer[0].name, "unknown") != "unknown"]
        inits = initializers(self.model)
        kinds = {node.name: _kind(node, w, g, tuple(inits[node.input[1]].dims)) for node, w, _, g in layers}
        used = [layer for layer in layers if layer[0].name in want_h] + mean_layers
        names = list(dict.fromkeys(node.input[0] for node, _, _, _ in used))
        n = max(self.h_samples if want_h else 0, self.mean_samples if mean_layers else 0)
        hs: dict[str, np.ndarray] = {}
        sums: dict[str, list] = {}
        if names and n:
            from .overlap import consume, shards, workers

            sess = session(with_outputs(self.model, names), overlapped=True)
            it = iter(self.data.take(n))
            if self.progress:
                from edgec.core.progress import bar

                it = bar(it, total=n, desc="layer statistics", unit="sample")

            def runs():
                for k, s in enumerate(it):
                    yield k, sess.run(names, {i.name: s.feeds[i.name] for i in sess.get_inputs()})

            # Each layer's sums belong to one shard (worker): split by input size, both cores share the
            # numpy work and every sum is still made in sample order.
            size = lambda node: float(np.prod([d or 1 for d in self._shape(node.input[0])]))  # noqa: E731
            h_layers = [layer for layer in layers if layer[0].name in want_h]
            jobs = [("h", layer) for layer in h_layers] + [("m", layer) for layer in mean_layers]
            cost = [size(layer[0]) * (3.0 if kind == "h" else 1.0) for kind, layer in jobs]
            groups = shards(cost, workers())

            def update_for(group):
                mine = [jobs[i] for i in group]

                def update(item):
                    k, outs = item
                    acts = dict(zip(names, outs))
                    for kind, (node, w, rows, _) in mine:
                        x = np.asarray(acts[node.input[0]], np.float32)
                        if kind == "h":
                            if k < self.h_samples:
                                r = _h_rows(x, node, rows, kinds[node.name])
                                h = np.matmul(r.transpose(0, 2, 1), r)
                                if node.name in hs:
                                    hs[node.name] += h  # float64 += float32: the same sum, no float64 temporary
                                else:
                                    hs[node.name] = h.astype(np.float64)
                        elif k < self.mean_samples:
                            kd = kinds[node.name]
                            acc = sums.setdefault(node.name, [0.0, 0.0, 0])
                            acc[0] = acc[0] + _column_means(x, node, kd)
                            acc[1] = acc[1] + _column_means(_dqq(x, qp[node.name]), node, kd)
                            acc[2] += 1
                return update

            consume(runs(), [update_for(g) for g in groups])
        if want_h:
            self._h = {**(self._h or {}), **hs}
        if means:
            self._means = {k: (a / c, b / c) for k, (a, b, c) in sums.items()}


DW_EVERY_FROM = 28 * 28  # depthwise output positions per image from which H takes every 2nd row and column


def _h_rows(x: np.ndarray, node, rows, kind):
    """The rows GPTQ's H sums for one layer input: all of them, except for a depthwise conv with a large
    output map, where every 2nd output row and column is plenty (32 images x 196+ positions for a 9x9
    or 25x25 H) and the im2col copy plus the per-channel products were the layer-statistics pass's
    largest cost (issue 17). GPTQ's damping and updates are invariant to H's scale."""
    if kind[0] == "conv" and len(kind[1]) == 2 and x.ndim == 4 and kind[2] > 1 and x.shape[1] == kind[2]:
        _, kshape, groups = kind  # depthwise: one input channel per group
        _, _, _, ho, wo = conv_geometry(x.shape, node, kshape)
        if ho * wo >= DW_EVERY_FROM:
            return _patches(x, node, kshape, groups, every=2)
    return rows(x)


def analytic_deltas(qm: onnx.ModelProto, layers, means, rounding, targets) -> tuple[dict, list[str]]:
    """Bias deltas (repair.bias_deltas' meaning: mean output shift of each layer's own quantization,
    per output channel) for the `targets` whose means are known; the rest are returned unhandled.

    Returns (deltas, unhandled target names)."""
    quant = _weight_quant(qm)
    prod = {o: n.op_type for n in qm.graph.node for o in n.output}
    dq_weights = {n.name for n in qm.graph.node if len(n.input) > 1 and prod.get(n.input[1]) == "DequantizeLinear"}
    by_name = {node.name: (node, w, g) for node, w, _, g in layers}
    deltas: dict[str, np.ndarray] = {}
    left = []
    for name in targets:
        got, wq = by_name.get(name), quant.get(name)
        if wq is None:
            if name in dq_weights:
                left.append(name)  # a 16-bit or computed weight grid: the twin pass handles it
            continue  # weight left float by the quantizer: no delta (as repair.bias_deltas)
        if got is None or name not in means:
            left.append(name)
            continue
        node, w, groups = got
        t, scale, zp, axis = wq
        cout = w.shape[0]
        if zp is not None and np.any(zp != 0) or (scale.size == cout > 1 and
                                                  _output_axis(node.op_type, len(t.dims), node) != axis % len(t.dims)):
            left.append(name)
            continue
        q = rounding.get(t.name)
        q = (q if q is not None else numpy_helper.to_array(t)).astype(np.float64)
        if node.op_type == "Conv" or (node.op_type == "Gemm" and _attr(node, "transB", 0)):
            q = q.reshape(cout, -1)
        else:
            q = q.reshape(-1, cout).T
        s = scale.astype(np.float64).reshape(-1)
        if s.size not in (1, cout):
            left.append(name)
            continue
        wdq = q * (s[:, None] if s.size == cout else s[0])
        m, mq = means[name]
        per = cout // groups
        d = (np.einsum("gck,gk->gc", wdq.reshape(groups, per, -1), mq)
             - np.einsum("gck,gk->gc", w.reshape(groups, per, -1), m)).reshape(cout)
        if node.op_type == "Gemm":
            d = d * (next((a.f for a in node.attribute if a.name == "alpha"), 1.0))
        deltas[name] = d.astype(np.float32)
    return deltas, left
