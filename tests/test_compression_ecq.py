"""Entropy-constrained quantization (core/compression/ecq.py) on tiny models: on the INT8 grid through
quantization, smaller and coarser as lambda grows, the sensitivity pass, the shrinkage of rank-deficient H, the CLI flag."""
from __future__ import annotations

import numpy as np
import pytest

from edgec.core.backend import QuantFlavour
from edgec.core.compression import Step, compress, size_report
from edgec.core.compression import ecq
from edgec.core.compression.layers import find_layers, moments
from edgec.core.quantization import quantize
from test_compression import ALL, _int8_weights, build_net, data, net_files, run, weights  # noqa: F401


@pytest.fixture(scope="module")
def stats():
    return {}  # compress(hessians=...) fills it once: H, means, row counts, sensitivities


def _held():
    return np.stack([s.feeds["input"][0] for s in data(48, seed=7)])


@pytest.mark.parametrize("rounding", [False, True])
def test_ecq_weights_stay_on_their_levels_through_int8(stats, rounding):
    m = build_net()
    res = compress(m, [Step("ecq", 1e-5, None, ALL)], calibration=data(), hessians=stats)
    q = quantize(res.model, "int8", flavour=QuantFlavour(), calibration=data(), progress=False,
                 weight_rounding=rounding).model
    before = {k: v.copy() for k, v in _int8_weights(q).items()}
    q = res.enforce(q)
    assert res.report["enforced_after_quantization"]["changed_integers"] == 0
    by_node = {ly.name: ly for ly in res.layers}
    for node, a in _int8_weights(q).items():
        assert np.array_equal(before[node], a), node
        assert set(np.unique(a).tolist()) <= set(by_node[node].codebook.tolist()), node
    entries = {r["layer"]: r["steps"][-1] for r in res.report["layers"]}
    assert set(entries) == {"conv1", "conv2", "matmul3", "fc"}
    assert all(e["step"] == "ecq" and e["sensitivity"] > 0 for e in entries.values())


def test_ecq_on_the_7bit_grid_is_counted_on_it(stats):
    res = compress(build_net(), [Step("ecq", 1e-5, None, ALL)], calibration=data(), hessians=stats, qmax=64)
    w = weights(res.model)
    for name in ("w1", "w2", "w3"):
        rows = w[name].reshape(w[name].shape[0], -1) if name != "w3" else w[name].T
        u = rows / (np.abs(rows).max(1, keepdims=True) / 64)
        assert np.allclose(u, np.round(u), atol=1e-3) and np.abs(np.round(u)).max() == 64, name
    rows = {r["tensor"]: r for r in size_report(res.model)["layers"]}
    assert rows["w2"]["kind"] == "float-on-int8-grid"


def test_larger_lambda_is_smaller_and_less_accurate(stats):
    m = build_net()
    x = _held()
    ref = run(m, x)
    out = []
    for lam in (1e-7, 1e-6, 1e-5):
        res = compress(m, [Step("ecq", lam, None, ALL)], calibration=data(), hessians=stats)
        out.append((size_report(res.model, layers=False)["ans_bytes"], float(np.mean((run(res.model, x) - ref) ** 2)),
                    float(np.mean(weights(res.model)["w3"] == 0))))
    sizes, errs, zeros = zip(*out)
    assert sizes[0] > sizes[1] > sizes[2], out
    assert errs[0] < errs[1] < errs[2], out
    assert zeros[2] > zeros[0], out  # the dead zone grows with lambda: sparsity comes out of the rate term


def test_sensitivity_of_the_last_linear_layer_is_one():
    """The logits are the fc's output: a relative output error e there is a logit NMSE of e."""
    m = build_net()
    layers = find_layers(m)
    hs, _ = moments(m, layers, data())
    g = ecq.sensitivities(m, layers, hs, data())
    assert g["fc"] == pytest.approx(1.0, rel=0.15)
    assert all(v > 0 for v in g.values())


def test_shrink_regularises_a_rank_deficient_h():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 40))  # 5 rows for 40 inputs
    h = (x.T @ x)[None]
    assert np.linalg.matrix_rank(h[0]) == 5
    s = ecq.shrink(h, rows=5)
    assert np.linalg.matrix_rank(s[0]) == 40
    assert np.allclose(np.diag(s[0]), 2 * np.diag(h[0]))  # a = min(1, 40/5) = 1
    big = ecq.shrink(h, rows=4000)
    assert np.allclose(np.diag(big[0]), 1.01 * np.diag(h[0]))


def test_compress_cli_ecq(net_files, tmp_path, run_cli):
    model, d = net_files
    out = tmp_path / "c.onnx"
    code, so, err = run_cli("compress", model, "-o", out, "--ecq", "1e-5", "--calib", d, "--json")
    assert code == 0, err
    import json
    rep = json.loads(so)
    assert rep["steps"][0]["technique"] == "ecq" and rep["size_after"]["ans_bytes"] < rep["size_before"]["ans_bytes"]
    code, _, err = run_cli("compress", model, "-o", tmp_path / "d.onnx", "--ecq", "-1", "--calib", d)
    assert code == 2 and "--ecq" in err
    code, _, err = run_cli("compress", model, "-o", tmp_path / "e.onnx", "--ecq", "1e-5")
    assert code == 2 and "calibration" in err
    code, so, err = run_cli("compress", model, "-o", tmp_path / "f.onnx", "--ecq", "1e-3", "--calib", d,
                            "--val", d, "--max-drop", "5")
    assert code == 0, err
    assert "max-drop     budget 5.0 -> ecq lambda" in so and (tmp_path / "f.onnx").exists()


def test_max_drop_bisects_the_slope_and_returns_what_it_measured(stats):
    """The returned lambda meets the budget and every slope tried above it missed; the chosen step
    rebuilds the same weights and biases without a search (bias correction applied once)."""
    m = build_net()
    val = data(64, seed=3)
    x = np.stack([s.feeds["input"][0] for s in val])
    labelled = data(64, seed=3, labels=run(m, x).argmax(1))
    res = compress(m, [Step("ecq", 1e-3, None, ALL)], calibration=data(), validation=labelled, max_drop=5.0,
                   hessians=stats)
    md = res.report["max_drop"]
    assert md["searched"] == "ecq lambda" and md["met"], md
    lam = md["tau"]
    tried = md["trials"]
    assert not tried[0]["met"], tried  # 1e-3 wipes the tiny net out: the search had to come down
    assert all(not t["met"] for t in tried if t["lambda"] > lam * 1.001), tried
    assert all(t["drop_bound"] <= 5.0 for t in tried if t["met"]), tried
    sizes = {t["lambda"]: t["ans_bytes"] for t in tried}
    assert sizes[max(sizes)] <= sizes[min(sizes)], tried
    again = compress(m, [Step(**s) for s in res.report["chosen_steps"]], calibration=data(), hessians=stats)
    w1, w2 = weights(res.model), weights(again.model)
    assert w1.keys() == w2.keys() and all(np.array_equal(w1[k], w2[k]) for k in w1)


def test_max_drop_with_ecq_and_another_step_is_refused():
    from edgec.core.errors import InputError

    with pytest.raises(InputError, match="one slope"):
        compress(build_net(), [Step("prune", 0.5, None, ALL), Step("ecq", 1e-5, None, ALL)], calibration=data(),
                 validation=data(16, seed=3), max_drop=1.0)
