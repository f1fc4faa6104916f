"""Issue 17's INT8 speed-ups keep the numbers: analytic bias correction vs the twin pass, im2col column
means, blocked GPTQ, histogram subsets and the partial calibration cache, the overlapped passes, the
weight-quantization memo."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from edgec.core.backend import QuantFlavour
from test_quantization import data, tiny_cnn


def _parts(**kw):
    from edgec.core.quantization.graph import ensure_node_names
    from edgec.core.quantization.int8 import prepare_int8

    model = ensure_node_names(tiny_cnn())
    return model, prepare_int8(model, data(), flavour=QuantFlavour(), method="auto", percentile=99.99,
                               progress=False, cache_dir=False, **kw)


def test_analytic_bias_deltas_match_the_twin_pass():
    """prepare_int8's deltas (layer-input means, layer_stats.py) are the twin pass's (repair.bias_deltas),
    up to float32 rounding in the twin's convolutions; the ConvTranspose goes through the twin itself."""
    from edgec.core.quantization.repair import bias_deltas

    model, parts = _parts(weight_rounding=True, bias_correction=True)
    twin = bias_deltas(model, parts.ranges, parts.flavour, [], data().take(48), progress=False,
                       rounding=parts.rounding)
    assert set(parts.deltas) == set(twin) == {"stem", "dw", "pw", "up", "fc"}
    for k in twin:
        scale = float(np.abs(twin[k]).max())
        assert scale > 0
        np.testing.assert_allclose(parts.deltas[k], twin[k], rtol=0, atol=1e-4 * scale + 1e-7, err_msg=k)


@pytest.mark.parametrize("n,c,h,w,k,stride,pads,dil,groups,auto", [
    (1, 8, 15, 13, 3, 1, [1, 1, 1, 1], 1, 1, None), (2, 6, 16, 16, 5, 2, [1, 2, 2, 1], 1, 6, None),
    (1, 4, 11, 9, 3, 2, [0, 0, 0, 0], 2, 2, None), (1, 4, 12, 12, 3, 2, None, 1, 1, "SAME_UPPER"),
    (1, 12, 7, 5, 1, 1, [0, 0, 0, 0], 1, 1, None), (3, 12, 7, 5, 1, 1, [0, 0, 0, 0], 1, 4, None),
    (1, 5, 9, 9, 1, 2, [0, 0, 0, 0], 1, 1, None),
    # maps above 28x28: 3x3 takes the phase sums, 5x5 the products (layer_stats._column_means)
    (1, 4, 30, 31, 3, 1, [1, 1, 1, 1], 1, 4, None), (2, 4, 33, 29, 3, 2, [0, 1, 1, 0], 2, 1, None),
    (1, 3, 30, 30, 5, 2, [2, 2, 2, 2], 1, 3, None)])
def test_column_means_equal_the_im2col_means(n, c, h, w, k, stride, pads, dil, groups, auto):
    from edgec.core.quantization.layer_stats import _column_means
    from edgec.core.quantization.rounding import _patches

    kw = dict(kernel_shape=[k, k], strides=[stride, stride], dilations=[dil, dil], group=groups)
    kw.update(auto_pad=auto) if auto else kw.update(pads=pads)
    node = helper.make_node("Conv", ["x", "w"], ["y"], **kw)
    x = np.random.default_rng(0).standard_normal((n, c, h, w)).astype(np.float32)
    ref = _patches(x, node, (k, k), groups).astype(np.float64).mean(1)
    np.testing.assert_allclose(_column_means(x, node, ("conv", (k, k), groups)), ref, rtol=1e-12, atol=1e-12)


def _gptq_columnwise(w, scale, h, qmin, qmax):
    """rounding.gptq_round before the lazy-batch blocks: one rank-1 update of every later column per column."""
    from edgec.core.quantization.rounding import DAMP

    w, h = w.astype(np.float64).copy(), h.astype(np.float64).copy()
    k = h.shape[0]
    h += np.eye(k) * DAMP * float(np.mean(np.diag(h)))
    order = np.argsort(-np.diag(h), kind="stable")
    w, h = w[:, order], h[np.ix_(order, order)]
    hinv = np.linalg.cholesky(np.linalg.inv(h)).T
    q = np.empty_like(w)
    for i in range(k):
        q[:, i] = np.clip(np.round(w[:, i] / scale), qmin, qmax)
        err = (w[:, i] - q[:, i] * scale) / hinv[i, i]
        w[:, i + 1:] -= np.outer(err, hinv[i, i + 1:])
    return q[:, np.argsort(order)]


def test_blocked_gptq_rounds_as_the_columnwise_update():
    from edgec.core.quantization.rounding import BLOCK, gptq_round

    r = np.random.default_rng(3)
    k = 2 * BLOCK + 37
    x = r.standard_normal((3000, k)).astype(np.float32)
    x[:, 1::2] += 0.6 * x[:, ::2][:, :k // 2]  # correlated inputs: the error feedback matters
    h = (x.T @ x).astype(np.float64)
    w = r.normal(0, 0.05, (40, k))
    s = np.abs(w).max(1) / 64
    q, ref = gptq_round(w, s, h, -64, 64), _gptq_columnwise(w, s, h, -64, 64)
    # The same algorithm summed in another order: an integer may move only on an exact .5 tie.
    assert np.abs(q - ref).max() <= 1 and (q != ref).mean() < 1e-3
    err = lambda qq: np.trace((w - s[:, None] * qq) @ h @ (w - s[:, None] * qq).T)  # noqa: E731
    assert err(q) < err(np.clip(np.round(w / s[:, None]), -64, 64))


def test_histogram_subsets_and_the_partial_cache(tmp_path):
    """Histograms of a subset are the full run's, counts for counts; a later compile that needs more
    computes only the missing tensors ("partial") and the next one hits."""
    from edgec.core.quantization.calibration import collect, float_activations

    m = tiny_cnn()
    every = float_activations(m)
    sub = [t for t in every if t not in ("c1", "c2")]
    full = collect(m, data(), cache_dir=False, progress=False)
    first = collect(m, data(), cache_dir=tmp_path, progress=False, tensors=sub)
    assert first.cache == "miss" and set(first.histograms) == set(sub)
    second = collect(m, data(), cache_dir=tmp_path, progress=False)
    third = collect(m, data(), cache_dir=tmp_path, progress=False)
    assert (second.cache, third.cache) == ("partial", "hit")
    for cal in (first, second, third):
        for t, h in cal.histograms.items():
            f = full.histograms[t]
            assert (h.lo, h.width, h.min, h.max) == (f.lo, f.width, f.min, f.max), t
            assert np.array_equal(h.counts, f.counts), t
    assert set(third.histograms) == set(every)


def test_folded_activation_inputs_are_not_histogrammed(tmp_path):
    """A quantized Clip/Relu that is its input's only reader: ORT's quantizer takes the output's range for
    the input, so the input is not calibrated, and the model is byte for byte the all-tensor one."""
    from edgec.core.quantization import quantize
    from edgec.core.quantization.calibration import collect
    from edgec.core.quantization.int8 import folded_inputs

    assert folded_inputs(tiny_cnn(), QuantFlavour(), []) == {"c1": "a1", "c2": "a2"}
    assert folded_inputs(tiny_cnn(), QuantFlavour(), ["relu6"]) == {"c2": "a2"}
    assert folded_inputs(tiny_cnn(), QuantFlavour(placement="every_tensor", quantize_io=True), []) == {}
    q = quantize(tiny_cnn(), "int8", calibration=data(), cache_dir=tmp_path, progress=False)
    cached = collect(tiny_cnn(), data(), cache_dir=tmp_path, progress=False, tensors=["a1"])
    assert cached.cache == "hit"
    stored = collect(tiny_cnn(), data(), cache_dir=tmp_path, progress=False)
    assert stored.cache == "partial"  # c1 and c2 were left out by the first compile
    _, parts = _parts(weight_rounding=True, bias_correction=True, all_tensors=True)
    assert parts.build().SerializeToString() == q.model.SerializeToString()


def test_overlap_consumes_in_order_and_raises(monkeypatch):
    from edgec.core.quantization import overlap

    for env in ("1", "0"):
        monkeypatch.setenv("EDGEC_OVERLAP", env)
        seen = []
        overlap.consume(iter(range(40)), seen.append)
        assert seen == list(range(40))

        def bad(i):
            if i == 7:
                raise ValueError("seven")

        with pytest.raises(ValueError, match="seven"):
            overlap.consume(iter(range(40)), bad)


def test_layer_stats_do_not_depend_on_the_overlap(monkeypatch):
    results = []
    for env in ("1", "0"):
        monkeypatch.setenv("EDGEC_OVERLAP", env)
        _, parts = _parts(weight_rounding=True, bias_correction=True)
        results.append(parts)
    a, b = results
    assert all(np.array_equal(a.rounding[k], b.rounding[k]) for k in a.rounding) and a.rounding
    assert all(np.array_equal(a.deltas[k], b.deltas[k]) for k in a.deltas) and a.deltas


def test_weight_memo_gives_onnxruntimes_own_model(monkeypatch):
    """The memoised QDQQuantizer's model is byte for byte the plain one's, cold and warm."""
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    from edgec.core.quantization import weight_memo
    from edgec.core.quantization.qdq import insert_qdq

    model, parts = _parts(weight_rounding=False, bias_correction=False)
    flav = QuantFlavour(reduce_range=True, depthwise_full_range=True)
    weight_memo._PARAMS.clear()
    weight_memo._WEIGHTS.clear()
    computed = []  # initializers whose scales were computed (vectorised or by onnxruntime), per insertion
    own, fast = QDQQuantizer._calc_initializer_quant_params, weight_memo._per_channel_params

    def counting(self):
        inits = {t.name for t in self.model.initializer()}
        computed[-1] += sum(name in inits for name in self.tensors_to_quantize)
        return own(self)

    def counting_fast(*a):
        computed[-1] += 1
        return fast(*a)

    monkeypatch.setattr(QDQQuantizer, "_calc_initializer_quant_params", counting)
    monkeypatch.setattr(weight_memo, "_per_channel_params", counting_fast)
    computed.append(0)
    cold = insert_qdq(model, parts.ranges, flav).SerializeToString()
    assert weight_memo._PARAMS and weight_memo._WEIGHTS
    computed.append(0)
    warm = insert_qdq(model, parts.ranges, flav).SerializeToString()
    assert computed[0] > 0 and computed[1] == 0, f"weights whose scales were computed, cold then warm: {computed}"
    monkeypatch.setattr(QDQQuantizer, "_calc_initializer_quant_params", own)
    monkeypatch.setattr(weight_memo, "quantizer_class", lambda: QDQQuantizer)
    plain = insert_qdq(model, parts.ranges, flav).SerializeToString()
    assert cold == warm == plain


@pytest.mark.parametrize("flavour", [QuantFlavour(), QuantFlavour(reduce_range=True, depthwise_full_range=True),
                                     QuantFlavour(activation_dtype="int8")], ids=["u8s8", "7bit", "s8s8"])
def test_vectorised_weight_grid_is_onnxruntimes(monkeypatch, flavour):
    """weight_memo's per-channel scales and integers (vectorised over channels) are onnxruntime's own
    loops' byte for byte, including an all-zero channel (the 1.0 scale fallback) and subnormal ones."""
    from onnx import numpy_helper
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    from edgec.core.quantization import weight_memo
    from edgec.core.quantization.graph import ensure_node_names
    from edgec.core.quantization.int8 import prepare_int8
    from edgec.core.quantization.qdq import insert_qdq

    model = ensure_node_names(tiny_cnn(seed=5))
    for t in model.graph.initializer:
        w = numpy_helper.to_array(t)
        if w.ndim == 4 and w.shape[0] >= 3:
            w = w.copy()
            w[0] = 0.0  # scale below float32's tiny: onnxruntime's 1.0 / zero-point 0 branch
            w[1] = np.float32(1e-40) * np.sign(w[1] + 1e-3)  # subnormal weights
            t.CopyFrom(numpy_helper.from_array(w, t.name))
    parts = prepare_int8(model, data(), flavour=flavour, method="auto", percentile=99.99, progress=False,
                         cache_dir=False, bias_correction=False)
    import onnxruntime.quantization.qdq_quantizer as qq

    calls = []
    own = qq.compute_data_quant_params
    monkeypatch.setattr(qq, "compute_data_quant_params", lambda *a, **k: (calls.append(1), own(*a, **k))[1])
    weight_memo._PARAMS.clear()
    weight_memo._WEIGHTS.clear()
    fast = insert_qdq(model, parts.ranges, flavour).SerializeToString()
    fast_calls = len(calls)
    monkeypatch.setattr(weight_memo, "quantizer_class", lambda: QDQQuantizer)
    assert fast == insert_qdq(model, parts.ranges, flavour).SerializeToString()
    assert fast_calls == 0 and len(calls) > 0  # the per-channel loop did not run on the fast path


def test_depthwise_h_from_every_second_position():
    """_patches(every=2) is the full im2col at even output rows and columns (stride, pads, dilation), and
    layer_stats takes it only for depthwise inputs with large output maps."""
    from onnx import helper as oh

    from edgec.core.quantization import layer_stats
    from edgec.core.quantization.rounding import _patches, conv_geometry

    rng = np.random.default_rng(3)
    for attrs, (h, w) in (({"strides": [1, 1], "pads": [1, 1, 1, 1]}, (57, 60)),
                          ({"strides": [2, 2], "pads": [2, 1, 2, 2], "dilations": [1, 2]}, (115, 113)),
                          ({"strides": [1, 1], "pads": [1, 1, 1, 1]}, (20, 21))):
        node = oh.make_node("Conv", ["x", "w"], ["y"], name="dw", group=6, **attrs)
        x = rng.normal(0, 1, (1, 6, h, w)).astype(np.float32)
        full, half = _patches(x, node, (3, 3), 6), _patches(x, node, (3, 3), 6, every=2)
        _, _, _, ho, wo = conv_geometry(x.shape, node, (3, 3))
        grid = full.reshape(6, ho, wo, 9)[:, ::2, ::2].reshape(6, -1, 9)
        assert np.array_equal(half, grid)
        took = layer_stats._h_rows(x, node, lambda a: "all rows", ("conv", (3, 3), 6))
        assert isinstance(took, str) == (ho * wo < layer_stats.DW_EVERY_FROM)
        if not isinstance(took, str):
            assert np.array_equal(took, half)
