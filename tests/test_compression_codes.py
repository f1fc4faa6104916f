"""Fine-tuning with frozen integer codes (core/compression/codes.py, `--ecq/--cluster ... --finetune distill`):
the codes and the entropy-coded size are unchanged, the held-out error drops, INT8 keeps the codes, bad input."""
from __future__ import annotations

import numpy as np
import pytest

from edgec.core.backend import QuantFlavour
from edgec.core.compression import Step, compress, size_report
from edgec.core.compression.codes import finetune_codes, grid_codes
from edgec.core.errors import InputError
from edgec.core.quantization import quantize
from test_compression import ALL, _int8_weights, build_net, data, net_files, run, weights  # noqa: F401

FROZEN = ("w1", "w2", "w3", "wf")


def _torch():
    from edgec.core.compression.distill import _import

    try:
        _import()
    except InputError as e:
        pytest.skip(f"fine-tuning needs torch and onnx2torch (extra edgec[torch]; not in the CI test command): {e}")


def _kl(t, s, temp=2.0):
    lt = t / temp - np.log(np.exp(t / temp).sum(1, keepdims=True))
    ls = s / temp - np.log(np.exp(s / temp).sum(1, keepdims=True))
    return float((np.exp(lt) * (lt - ls)).sum(1).mean())


def _codes(model, qmax=64):
    w = weights(model)
    return {n: grid_codes(w[n] if n != "w3" else w[n].T, qmax) for n in FROZEN}


@pytest.fixture(scope="module")
def tuned():
    """ECQ on the 7-bit grid at a coarse slope, then the same with frozen-code distillation (one run each)."""
    _torch()
    m = build_net()
    stats: dict = {}
    calib = data(96, seed=3)
    plain = compress(m, [Step("ecq", 3e-4, None, ALL)], calibration=calib, hessians=stats, qmax=64)
    ft = compress(m, [Step("ecq", 3e-4, None, ALL), Step("distill", 1.0, None, (), options={"epochs": 6, "batch": 8,
                                                                                           "lr_scale": 1e-2,
                                                                                           "lr_bias": 1e-2})],
                  calibration=calib, hessians=stats, qmax=64)
    return m, plain, ft


def test_frozen_codes_and_entropy_size_unchanged(tuned):
    _, plain, ft = tuned
    before, after = _codes(plain.model), _codes(ft.model)
    for n in FROZEN:
        assert before[n] is not None and after[n] is not None, n
        assert np.array_equal(before[n], after[n]), n
    assert not np.allclose(weights(plain.model)["w2"], weights(ft.model)["w2"])  # the scales did move
    assert size_report(ft.model, layers=False)["ans_bytes"] == size_report(plain.model, layers=False)["ans_bytes"]
    rep = ft.report["finetune"]
    assert rep["mode"] == "frozen codes" and rep["codes_changed"] == 0 and rep["frozen_layers"] == 3
    assert rep["untrained_compressed"] == ["w3"]  # MatMul: a constant in onnx2torch
    assert ft.report["size_after"]["ans_bytes"] == plain.report["size_after"]["ans_bytes"]


def test_frozen_code_finetuning_lowers_heldout_error(tuned):
    m, plain, ft = tuned
    rep = ft.report["finetune"]
    assert rep["heldout_kl_after"] < 0.8 * rep["heldout_kl_before"], rep
    x = np.stack([s.feeds["input"][0] for s in data(64, seed=11)])  # images neither trained nor selected on
    t = run(m, x)
    assert _kl(t, run(ft.model, x)) < 0.8 * _kl(t, run(plain.model, x))


def test_int8_keeps_the_frozen_codes(tuned):
    _, _, ft = tuned
    q = quantize(ft.model, "int8", flavour=QuantFlavour(reduce_range=True), calibration=data(), progress=False).model
    q = ft.enforce(q)
    assert ft.report["enforced_after_quantization"]["changed_integers"] == 0
    ints, codes = _int8_weights(q), _codes(ft.model)
    by_weight = {ly.name: ly.weight for ly in ft.layers}
    for node, a in ints.items():
        want = codes[by_weight[node]]
        assert np.array_equal(a if by_weight[node] != "w3" else a.T, want), node


def test_weights_off_the_grid_are_refused_before_training():
    m = build_net()  # FP32 weights: not on any INT8 grid
    with pytest.raises(InputError, match="not on its INT8 grid"):
        finetune_codes(m, m, data(), ["w2"], qmax=64)


def test_grid_codes():
    s = np.array([0.5, 0.01])[:, None]
    q = np.array([[64, -3, 0], [1, -64, 7]])
    assert np.array_equal(grid_codes(s * q, 64), q)
    assert grid_codes(s * q + 1e-3 * np.array([[0, 0, 0], [0, 0, 0.3]]), 64) is None


@pytest.mark.parametrize("flags, expect", [
    (["--cluster", "16", "--cluster-method", "nearest", "--finetune", "distill"], "pass --calib"),
    (["--prune", "0.5", "--finetune", "distill", "--calib", "CAL"], "no integer codes to keep"),
    (["--ecq", "1e-6", "--finetune", "distill", "--finetune-minutes", "0", "--calib", "CAL"], "--finetune-minutes"),
    (["--ecq", "1e-6", "--finetune-codes", "ste", "--calib", "CAL"], "needs --finetune distill"),
    (["--finetune", "distill", "--finetune-codes", "ste", "--calib", "CAL"], "give one of them"),
    (["--ecq", "1e-6", "--finetune", "distill", "--finetune-codes", "all", "--calib", "CAL"], "invalid choice"),
])
def test_finetune_flag_bad_input(net_files, tmp_path, run_cli, flags, expect):
    src, cal = net_files
    out = tmp_path / "o.onnx"
    code, _, err = run_cli("compress", str(src), "-o", str(out), *[str(cal) if f == "CAL" else f for f in flags])
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and expect in lines[0], err
    assert not out.exists()


def test_ste_codes_train_on_their_levels_and_int8_keeps_them(tuned):
    m, plain, ft = tuned
    calib = data(96, seed=3)
    ste = compress(m, [Step("ecq", 3e-4, None, ALL), Step("distill", 1.0, None, (), options={
        "epochs": 6, "batch": 8, "lr_scale": 1e-2, "lr_bias": 1e-2, "mode": "ste", "lr_codes": 0.05})],
        calibration=calib, qmax=64)
    rep = ste.report["finetune"]
    assert rep["mode"] == "ste codes" and 0 < rep["codes_changed"] < rep["codes_total"], rep
    assert rep["heldout_kl_after"] < rep["heldout_kl_before"], rep
    before, after = _codes(plain.model), _codes(ste.model)
    for n in ("w1", "w2", "wf"):  # on the grid, on the layer's own levels, each channel's +-64 kept
        assert set(np.unique(after[n]).tolist()) <= set(np.unique(before[n]).tolist()), n
        assert np.all(np.abs(after[n].reshape(after[n].shape[0], -1)).max(1) == 64), n
    q = ste.enforce(quantize(ste.model, "int8", flavour=QuantFlavour(reduce_range=True), calibration=data(),
                             progress=False).model)
    assert ste.report["enforced_after_quantization"]["changed_integers"] == 0
    by_weight = {ly.name: ly.weight for ly in ste.layers}
    for node, a in _int8_weights(q).items():
        assert np.array_equal(a if by_weight[node] != "w3" else a.T, after[by_weight[node]]), node


def test_compile_finetuned_keeps_codes_and_records_it(net_files, tmp_path, run_cli):
    """`edgec compile --cluster 8 --finetune distill`: the manifest records the fine-tuning, and the artifact's
    int8 weights are exactly the clustered codes (<= 8 values; the same integers as without fine-tuning)."""
    import json

    import onnx

    _torch()
    model, d = net_files
    arts = {}
    for tag, extra in (("plain", []), ("tuned", ["--finetune", "distill", "--finetune-epochs", "2"])):
        out = tmp_path / tag
        code, so, err = run_cli("compile", model, "--backend", "onnxruntime", "--precision", "int8", "--calib", d,
                                "--val", d, "--cluster", "8", "--layers", "*", "-o", out, "--json",
                                "-O", "weight_range=reduced", *extra)
        assert code == 0, err
        arts[tag] = (json.loads(so), _int8_weights(onnx.load(str(out / "model.onnx"))))
    man, ints = arts["tuned"]
    ft = man["compression"]["finetune"]
    assert ft["mode"] == "frozen codes" and ft["codes_changed"] == 0 and ft["epochs_run"] >= 1
    assert man["compression"]["enforced_after_quantization"]["changed_integers"] == 0
    for node, a in ints.items():
        assert np.unique(a).size <= 8 and np.array_equal(a, arts["plain"][1][node]), node


def test_per_tensor_grid_keeps_one_scale():
    _torch()
    m = build_net()
    calib = data(64, seed=3)
    res = compress(m, [Step("cluster", 8, None, ("conv2",)), Step("distill", 1.0, None, (), options={
        "epochs": 2, "batch": 8, "lr_scale": 1e-2})], calibration=calib, per_channel=False)
    w = weights(res.model)["w2"]
    assert grid_codes(w, 127, per_channel=False) is not None and np.unique(w).size <= 8
    assert res.report["finetune"]["scale_parameters"] == 1
