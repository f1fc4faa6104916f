"""core/compression on tiny models: exact sparsity, <= N integers per clustered layer after INT8,
Huffman sizes against hand-computed codes, SparseGPT reconstruction vs magnitude, pack/unpack, CLI errors."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.core.backend import QuantFlavour
from edgec.core.compression import Step, compress, size_report
from edgec.core.compression.entropy import ans_bits, huffman_bits, shannon_bits, table_bits
from edgec.core.compression.layers import find_layers
from edgec.core.data import ArrayDataset
from edgec.core.quantization import quantize
from edgec.core.quantization.rounding import _weight_quant

ALL = ("*",)


def _f(name, a):
    return numpy_helper.from_array(np.asarray(a, np.float32), name)


def build_net(seed: int = 0) -> onnx.ModelProto:
    """Conv 3x3 (2304 weights), Conv 1x1 (2048), MatMul (3072), Gemm transB (480): every weight layout."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flat"),
        helper.make_node("MatMul", ["flat", "w3"], ["m3"], name="matmul3"),
        helper.make_node("Relu", ["m3"], ["r3"], name="relu3"),
        helper.make_node("Gemm", ["r3", "wf", "bf"], ["logits"], transB=1, name="fc"),
    ]
    inits = [_f("w1", rng.standard_normal((32, 8, 3, 3)) * 0.2), _f("b1", rng.standard_normal(32) * 0.1),
             _f("w2", rng.standard_normal((64, 32, 1, 1)) * 0.2), _f("b2", rng.standard_normal(64) * 0.1),
             _f("w3", rng.standard_normal((64, 48)) * 0.3), _f("wf", rng.standard_normal((10, 48)) * 0.3),
             _f("bf", rng.standard_normal(10) * 0.1)]
    g = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 8, 8, 8])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def data(n: int = 48, seed: int = 1, labels=None) -> ArrayDataset:
    """Smooth inputs (upsampled 4x4 noise): neighbouring pixels correlate, as in images."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8, 4, 4)).repeat(2, 2).repeat(2, 3) + 0.3 * rng.standard_normal((n, 8, 8, 8))
    return ArrayDataset({"input": x.astype(np.float32)}, labels=labels)


def run(model, x):
    import onnxruntime as ort

    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {"input": x})[0]


def weights(model):
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


# ------------------------------------------------------------------------------------------- pruning

@pytest.mark.parametrize("method", ["magnitude", "obs"])
def test_prune_reaches_exact_sparsity(method):
    m = build_net()
    res = compress(m, [Step("prune", 0.37, method, ALL)], calibration=data())
    w = weights(res.model)
    for name in ("w1", "w2", "w3", "wf"):
        assert int((w[name] == 0).sum()) == int(round(0.37 * w[name].size)), name
    assert {r["layer"] for r in res.report["layers"]} == {"conv1", "conv2", "matmul3", "fc"}


def test_global_magnitude_prunes_the_smallest_overall():
    m = build_net()
    res = compress(m, [Step("prune", 0.5, "global", ALL)])
    w = weights(res.model)
    total = sum(w[k].size for k in ("w1", "w2", "w3", "wf"))
    zeros = sum(int((w[k] == 0).sum()) for k in ("w1", "w2", "w3", "wf"))
    assert zeros == round(0.5 * total)
    kept_min = min(np.abs(w[k][w[k] != 0]).min() for k in ("w1", "w2", "w3", "wf"))
    orig = weights(m)
    pruned_max = max(np.abs(orig[k][w[k] == 0]).max() for k in ("w1", "w2", "w3", "wf"))
    assert pruned_max <= kept_min


def test_sparsegpt_reconstruction_beats_magnitude():
    """Same sparsity, lower output error on held-out inputs, layer by layer and at the logits."""
    m = build_net()
    calib, held = data(48, seed=1), data(48, seed=7)
    x = np.stack([s.feeds["input"][0] for s in held])
    ref = run(m, x)
    errs = {}
    for method in ("magnitude", "obs"):
        res = compress(m, [Step("prune", 0.6, method, ALL)], calibration=calib)
        errs[method] = float(np.mean((run(res.model, x) - ref) ** 2))
    assert errs["obs"] < 0.7 * errs["magnitude"], errs


def test_obs_prune_lowers_the_layer_objective():
    from edgec.core.compression.sparsegpt import obs_prune

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 6)) @ rng.standard_normal((6, 64))  # rank-6 inputs: strongly correlated
    x += 0.05 * rng.standard_normal(x.shape)
    h = x.T @ x
    w = rng.standard_normal((16, 64))
    n = int(0.5 * w.size)
    w_obs, mask = obs_prune(w, h, n)
    thr = np.sort(np.abs(w).ravel())[n - 1]
    w_mag = np.where(np.abs(w) <= thr, 0.0, w)

    def obj(v):
        return float(np.sum(((v - w) @ x.T) ** 2))

    assert int(mask.sum()) == n and np.all(w_obs[mask] == 0)
    assert obj(w_obs) < 0.5 * obj(w_mag)


# ------------------------------------------------------------------------------------------- clustering

def _int8_weights(q):
    return {node: numpy_helper.to_array(t) for node, (t, *_rest) in _weight_quant(q).items()}


@pytest.mark.parametrize("steps,n", [([Step("cluster", 8, None, ALL)], 8),
                                     ([Step("prune", 0.5, None, ALL), Step("cluster", 6, None, ALL)], 6),
                                     ([Step("cluster", 5, "nearest", ALL)], 5)])
@pytest.mark.parametrize("rounding", [False, True])
def test_clustered_layers_have_at_most_n_integers_after_int8(steps, n, rounding):
    m = build_net()
    res = compress(m, steps, calibration=data())
    q = quantize(res.model, "int8", flavour=QuantFlavour(), calibration=data(), progress=False,
                 weight_rounding=rounding).model
    before = {k: v.copy() for k, v in _int8_weights(q).items()}
    q = res.enforce(q)
    ints = _int8_weights(q)
    assert set(ints) == {"conv1", "conv2", "matmul3", "fc"}
    for node, a in ints.items():
        assert np.unique(a).size <= n, (node, np.unique(a))
        # On the grid by construction: the quantizer (with or without GPTQ) lands every weight on its level.
        assert np.array_equal(before[node], a), node
    if any(s.technique == "prune" for s in steps):
        w = weights(res.model)
        for node, wname in (("conv1", "w1"), ("fc", "wf")):
            assert np.array_equal(ints[node] == 0, w[wname] == 0)
    assert res.report["enforced_after_quantization"]["changed_integers"] == 0


def test_pruned_zeros_survive_gptq_rounding():
    m = build_net()
    res = compress(m, [Step("prune", 0.5, "obs", ALL)], calibration=data())
    q = res.enforce(quantize(res.model, "int8", flavour=QuantFlavour(), calibration=data(), progress=False,
                             weight_rounding=True).model)
    w = weights(res.model)
    ints = _int8_weights(q)
    assert np.all(ints["conv2"][w["w2"] == 0] == 0) and np.all(ints["matmul3"][w["w3"] == 0] == 0)


def test_data_aware_assignment_beats_nearest():
    m = build_net()
    held = data(48, seed=7)
    x = np.stack([s.feeds["input"][0] for s in held])
    ref = run(m, x)
    err = {meth: float(np.mean((run(compress(m, [Step("cluster", 6, meth, ALL)], calibration=data()).model, x)
                                - ref) ** 2)) for meth in ("nearest", "obs")}
    assert err["obs"] < err["nearest"], err


def test_default_selection_skips_depthwise_and_small_layers():
    from conftest import build_tiny_cnn

    from edgec.core.compression.layers import select

    layers = find_layers(build_net())
    assert {ly.name for ly in select(layers, None)} == {"conv1", "conv2", "matmul3"}  # fc has 480 weights
    tiny = find_layers(build_tiny_cnn())
    dw = [ly.name for ly in tiny if ly.depthwise]
    assert dw and not set(dw) & {ly.name for ly in select(tiny, None)}
    assert set(dw) <= {ly.name for ly in select(tiny, ["Conv"])}  # named: included


# ------------------------------------------------------------------------------------------- entropy

def test_huffman_matches_hand_computed_codes():
    # CLRS 16.3: a..f with these counts have an optimal code of 224 bits.
    assert huffman_bits({"a": 45, "b": 13, "c": 12, "d": 16, "e": 9, "f": 5}) == 224
    assert huffman_bits({0: 5, 1: 2, 2: 1}) == 5 * 1 + 2 * 2 + 1 * 2
    assert huffman_bits({7: 10}) == 10  # one symbol: one bit each


def test_ans_codes_at_the_shannon_bound():
    rng = np.random.default_rng(0)
    sym = rng.choice(16, 50000, p=np.r_[0.5, np.full(15, 0.5 / 15)])
    bound = shannon_bits(sym)
    assert bound <= ans_bits(sym) <= bound * 1.01 + 64


def test_size_report_of_a_known_int8_tensor():
    a = np.array([0] * 900 + [1] * 300 + [-1] * 200 + [5] * 100, np.int8).reshape(100, 15)
    g = helper.make_graph([helper.make_node("Identity", ["q"], ["y"])], "g", [],
                          [helper.make_tensor_value_info("y", TensorProto.INT8, [100, 15])],
                          [numpy_helper.from_array(a, "q")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    rep = size_report(m)
    huff = 900 * 1 + 300 * 2 + 200 * 3 + 100 * 3 + table_bits(4, 8)
    assert rep["huffman_bytes"] == -(-huff // 8)
    row = rep["layers"][0]
    assert row["distinct"] == 4 and row["sparsity"] == 0.6 and row["raw_bits_per_weight"] == 8.0


def test_clustered_float_weights_are_counted_as_grid_integers():
    m = build_net()
    res = compress(m, [Step("cluster", 8, "nearest", ALL)])
    rows = {r["tensor"]: r for r in size_report(res.model)["layers"]}
    assert rows["w3"]["kind"] == "float-on-int8-grid" and rows["w3"]["ans_bits_per_weight"] < 4.5
    assert size_report(m)["layers"][0]["kind"] == "float"


# ------------------------------------------------------------------------------------------- max_drop

def test_max_drop_selects_per_layer_and_meets_the_budget():
    m = build_net()
    val = data(64, seed=3)
    x = np.stack([s.feeds["input"][0] for s in val])
    labelled = data(64, seed=3, labels=run(m, x).argmax(1))
    res = compress(m, [Step("prune", 0.9, "obs", ALL)], calibration=data(), validation=labelled, max_drop=5.0)
    md = res.report["max_drop"]
    assert md["met"] and md["trials"] and all(t["drop_bound"] is not None for t in md["trials"])
    sp = [r["sparsity"] for r in res.report["layers"]]
    assert sp and max(sp) <= 0.9 + 1e-9
    again = compress(m, [Step(**s) for s in res.report["chosen_steps"]], calibration=data())
    assert all(np.array_equal(a, weights(again.model)[k]) for k, a in weights(res.model).items())


# ------------------------------------------------------------------------------------------- CLI, compile, pack

@pytest.fixture
def net_files(tmp_path):
    p = tmp_path / "net.onnx"
    onnx.save(build_net(), str(p))
    d = tmp_path / "data.npz"
    ds = data(48)
    x = np.stack([s.feeds["input"][0] for s in ds])
    np.savez(d, input=x, labels=run(build_net(), x).argmax(1))
    return p, d


def test_compress_cli_writes_model_and_report(net_files, tmp_path, run_cli):
    model, d = net_files
    out = tmp_path / "small.onnx"
    code, so, err = run_cli("compress", model, "-o", out, "--prune", "0.5", "--cluster", "8", "--layers", "*",
                            "--calib", d, "--val", d, "--json")
    assert code == 0, err
    rep = json.loads(so)
    assert out.is_file() and rep["validation"]["samples"] == 48 and "drop_se" in rep["validation"]
    assert rep["size_after"]["ans_bytes"] < rep["size_before"]["ans_bytes"] / 4


@pytest.mark.parametrize("weight_range", ["full", "reduced"])
def test_compile_with_compression_records_it(net_files, tmp_path, run_cli, weight_range):
    """Clustering follows the backend's weight grid (127, or 64 for 7-bit weights): either way the
    quantizer lands on the shared levels."""
    model, d = net_files
    out = tmp_path / "art"
    code, so, err = run_cli("compile", model, "--backend", "onnxruntime", "--precision", "int8", "--calib", d,
                            "--val", d, "--prune", "0.5", "--cluster", "8", "--layers", "*", "-o", out, "--json",
                            "-O", f"weight_range={weight_range}")
    assert code == 0, err
    man = json.loads(so)
    assert man["compression"]["layers"] and man["size"]["weights"]["ans_bytes"] > 0
    assert man["compression"]["grid_qmax"] == (64 if weight_range == "reduced" else 127)
    assert man["size"]["files"]["raw_bytes"] == sum(f["size"] for f in man["files"].values())
    q = onnx.load(str(out / "model.onnx"))
    for node, a in _int8_weights(q).items():
        assert np.unique(a).size <= 8, node


def _compile(model, d, out, backend, precision="int8"):
    import edgec

    return edgec.compile(str(model), backend=backend, precision=precision, calibration=str(d), output=str(out),
                         compression=[Step("cluster", 8, None, ALL)], min_cosine=0.5)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_pack_unpack_is_byte_identical(net_files, tmp_path, run_cli, backend):
    if backend == "openvino":
        pytest.importorskip("openvino")
    model, d = net_files
    art = _compile(model, d, tmp_path / "art", backend).path
    code, so, err = run_cli("pack", art, "-o", tmp_path / "a.edgec", "--json")
    assert code == 0, err
    summary = json.loads(so)
    assert summary["ans_segments"] >= 1 and summary["packed_bytes"] < summary["raw_bytes"]
    code, _, err = run_cli("unpack", tmp_path / "a.edgec", "-o", tmp_path / "back")
    assert code == 0, err
    files = sorted(p.relative_to(art) for p in art.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "back") for p in (tmp_path / "back").rglob("*") if p.is_file())
    for f in files:
        assert (art / f).read_bytes() == (tmp_path / "back" / f).read_bytes(), f


@pytest.mark.slow
def test_pack_unpack_tvm_artifact(net_files, tmp_path, run_cli):
    pytest.importorskip("tvm")
    model, d = net_files
    art = _compile(model, d, tmp_path / "art", "tvm", "fp32").path
    assert run_cli("pack", art, "-o", tmp_path / "a.edgec")[0] == 0
    assert run_cli("unpack", tmp_path / "a.edgec", "-o", tmp_path / "back")[0] == 0
    for p in art.rglob("*"):
        if p.is_file():
            assert p.read_bytes() == (tmp_path / "back" / p.relative_to(art)).read_bytes()


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one stderr line, got: {err!r}"
    return lines[0]


def _nothing_new(tmp_path, before):
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("case,expect", [
    (lambda t, m, d: ["compress", t / "nope.onnx", "-o", t / "o.onnx", "--prune", "0.5"], "not found"),
    (lambda t, m, d: ["compress", m, "-o", t / "o.onnx", "--prune", "1.5"], "strictly between 0 and 1"),
    (lambda t, m, d: ["compress", m, "-o", t / "o.onnx", "--cluster", "300"], "3..254"),
    (lambda t, m, d: ["compress", m, "-o", t / "o.onnx"], "nothing to do"),
    (lambda t, m, d: ["compress", m, "-o", t / "o.onnx", "--prune", "0.5", "--layers", "zzz*"], "matches no"),
    (lambda t, m, d: ["compress", m, "-o", t / "o.onnx", "--prune", "0.5", "--prune-method", "obs"], "--calib"),
    (lambda t, m, d: ["compress", m, "-o", t / "o.onnx", "--prune", "0.5", "--max-drop", "1"], "--val"),
    (lambda t, m, d: ["compress", m, "-o", m, "--prune", "0.5"], "already exists"),
    (lambda t, m, d: ["pack", t, "-o", t / "a.edgec"], "not an edgec artifact"),
    (lambda t, m, d: ["pack", t / "missing", "-o", t / "a.edgec"], "artifact"),
    (lambda t, m, d: ["unpack", m, "-o", t / "back"], "not an edgec pack"),
    (lambda t, m, d: ["unpack", t / "missing.edgec", "-o", t / "back"], "archive not found"),
])
def test_bad_input_one_line_exit_2_nothing_written(net_files, tmp_path, run_cli, case, expect):
    model, d = net_files
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = run_cli(*case(tmp_path, model, d))
    assert code == 2 and expect in _one_line(err), err
    _nothing_new(tmp_path, before)


def test_unpack_rejects_a_corrupt_archive(net_files, tmp_path, run_cli):
    model, d = net_files
    art = _compile(model, d, tmp_path / "art", "onnxruntime").path
    assert run_cli("pack", art, "-o", tmp_path / "a.edgec")[0] == 0
    raw = bytearray((tmp_path / "a.edgec").read_bytes())
    raw[-5] ^= 0xFF  # flip bits inside the last payload blob
    (tmp_path / "bad.edgec").write_bytes(bytes(raw))
    (tmp_path / "short.edgec").write_bytes(bytes(raw[:-100]))
    before = sorted(p.name for p in tmp_path.iterdir())
    for bad in ("bad.edgec", "short.edgec"):
        code, _, err = run_cli("unpack", tmp_path / bad, "-o", tmp_path / "back")
        assert code == 2 and "corrupt" in _one_line(err), err
    _nothing_new(tmp_path, before)
    code, _, err = run_cli("unpack", tmp_path / "a.edgec", "-o", art)
    assert code == 2 and "--force" in _one_line(err)


def test_inspect_shows_entropy_coded_size(net_files, run_cli):
    model, _ = net_files
    code, so, _ = run_cli("inspect", model, "--json")
    assert code == 0 and json.loads(so)["size"]["ans_bytes"] > 0
    code, so, _ = run_cli("inspect", model)
    assert "ANS" in so and "bits/weight" in so


@pytest.mark.slow
@pytest.mark.parametrize("backend,precision", [("tflite", "int8"), ("tensorrt", "int8"), ("qnn", "int8"),
                                               ("snpe", "int8")])
def test_pack_unpack_every_other_backend(net_files, tmp_path, run_cli, backend, precision):
    """Every backend's artifact round-trips byte-identically (onnxruntime / OpenVINO / TVM above)."""
    import edgec
    from edgec.core.errors import EdgecError

    model, d = net_files
    try:
        art = edgec.compile(str(model), backend=backend, precision=precision, calibration=str(d),
                            output=str(tmp_path / "art"), compression=[Step("cluster", 8, None, ALL)], min_cosine=0.0)
    except EdgecError as e:  # a backend whose SDK or builder is not installed here
        pytest.skip(f"{backend} cannot build here: {str(e).splitlines()[0]}")
    art = art.path
    assert run_cli("pack", art, "-o", tmp_path / "a.edgec")[0] == 0
    assert run_cli("unpack", tmp_path / "a.edgec", "-o", tmp_path / "back")[0] == 0
    files = sorted(p.relative_to(art) for p in art.rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to(tmp_path / "back") for p in (tmp_path / "back").rglob("*")
                                     if p.is_file())
    for f in files:
        assert (art / f).read_bytes() == (tmp_path / "back" / f).read_bytes(), (backend, f)


def test_delta_pack_against_an_earlier_artifact(net_files, tmp_path, run_cli):
    import shutil

    from edgec.core.compression.pack import pack, unpack
    from edgec.core.errors import InputError

    model, d = net_files
    old = _compile(model, d, tmp_path / "old", "onnxruntime").path
    new = tmp_path / "new"
    shutil.copytree(old, new)  # same weights, a different manifest: what a re-validated release ships
    man = new / "manifest.json"
    man.write_text(man.read_text().replace('"backend"', '"backend" ', 1))
    full = pack(new, tmp_path / "full.edgec")
    delta = pack(new, tmp_path / "delta.edgec", base=old)
    assert delta["delta"]["unchanged_files"] == delta["files"] - 1
    assert delta["packed_bytes"] < full["packed_bytes"] / 3
    code, _, err = run_cli("unpack", tmp_path / "delta.edgec", "-o", tmp_path / "back", "--base", old)
    assert code == 0, err
    for p in new.rglob("*"):
        if p.is_file():
            assert p.read_bytes() == (tmp_path / "back" / p.relative_to(new)).read_bytes(), p
    with pytest.raises(InputError, match="--base"):
        unpack(tmp_path / "delta.edgec", tmp_path / "back2")
    with pytest.raises(InputError, match="not the file this delta"):
        unpack(tmp_path / "delta.edgec", tmp_path / "back3", base=new)  # new's manifest differs from old's
