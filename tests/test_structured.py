"""Structured channel pruning (core/compression/channels.py, reconstruct.py) on tiny models."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.core.compression.channels import analyse, prune_graph
from edgec.core.compression.reconstruct import n_remove, prune_channels
from edgec.core.data import ArrayDataset
from edgec.core.errors import InputError
from edgec.core.graph_stats import model_stats


def _w(rng, *shape, scale=0.5):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _mbv2_like(seed=0) -> onnx.ModelProto:
    """stem -> [expand 1x1 -> BN -> Relu6 -> depthwise 3x3 -> Relu -> project 1x1 (+ residual)] x 2
    -> GAP -> Flatten -> Gemm, plus a fire-like Concat before the head. Residual Adds tie the stem's
    and both projections' channels."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def init(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def conv(name, x, cin, cout, k=1, group=1, pad=0):
        w = init(name + ".w", _w(rng, cout, cin // group, k, k, scale=1.0 / np.sqrt(cin // group * k * k)))
        b = init(name + ".b", _w(rng, cout, scale=0.1))
        nodes.append(helper.make_node("Conv", [x, w, b], [name], name=name, group=group, kernel_shape=[k, k],
                                      pads=[pad] * 4))
        return name

    init("lo", np.array(0.0, np.float32))
    init("hi", np.array(6.0, np.float32))
    s = conv("stem", "x", 3, 16, k=3, pad=1)
    s = _relu(nodes, s)
    for blk in ("a", "b"):
        e = conv(f"{blk}.expand", s, 16, 48)
        bn = [init(f"{blk}.bn.{k}", v) for k, v in
              (("s", 1 + _w(rng, 48, scale=0.1)), ("b", _w(rng, 48, scale=0.1)), ("m", _w(rng, 48, scale=0.1)),
               ("v", 1 + np.abs(_w(rng, 48, scale=0.1))))]
        nodes.append(helper.make_node("BatchNormalization", [e] + bn, [f"{blk}.bn"], name=f"{blk}.bn"))
        nodes.append(helper.make_node("Clip", [f"{blk}.bn", "lo", "hi"], [f"{blk}.r6"], name=f"{blk}.r6"))
        d = conv(f"{blk}.dw", f"{blk}.r6", 48, 48, k=3, group=48, pad=1)
        d = _relu(nodes, d)
        p = conv(f"{blk}.project", d, 48, 16)
        nodes.append(helper.make_node("Add", [s, p], [f"{blk}.add"], name=f"{blk}.add"))
        s = f"{blk}.add"
    sq = _relu(nodes, conv("sq", s, 16, 16))
    e1 = _relu(nodes, conv("e1", sq, 16, 24))
    e3 = _relu(nodes, conv("e3", sq, 16, 24, k=3, pad=1))
    nodes.append(helper.make_node("Concat", [e1, e3], ["cat"], name="cat", axis=1))
    h = _relu(nodes, conv("head", "cat", 48, 64))
    nodes.append(helper.make_node("GlobalAveragePool", [h], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flat", axis=1))
    init("fc.w", _w(rng, 10, 64, scale=0.2))
    init("fc.b", _w(rng, 10, scale=0.1))
    nodes.append(helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc", transB=1))
    g = helper.make_graph(nodes, "mbv2_like", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _relu(nodes, x):
    nodes.append(helper.make_node("Relu", [x], [x + ".relu"], name=x + ".relu"))
    return x + ".relu"


def _run(m, x):
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.concatenate([s.run(None, {"x": xi[None]})[0] for xi in x])


def _data(n, seed):
    return np.random.default_rng(seed).standard_normal((n, 3, 12, 12)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny():
    return _mbv2_like()


def _w_of(m, name):
    return {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}[name]


def test_units_tie_residual_channels_and_split_concat(tiny):
    cg = analyse(tiny)
    units = {u.name: u for u in cg.units}
    assert units["stem"].producers == ["stem", "a.project", "b.project"] and units["stem"].size == 16
    assert not units["a.expand"].tied and units["a.expand"].consumers == ["a.project"]
    assert units["e1"].consumers == ["head"] and units["e3"].consumers == ["head"]
    assert units["head"].consumers == ["fc"] and not units["head"].blocked
    assert units["fc"].blocked  # the graph output


def test_removal_is_exact_where_channels_are_zeroed(tiny):
    """Deleting channels == zeroing their consumer columns in the original (the surgery loses nothing
    else: BN, depthwise, residual, Concat and Flatten slices line up)."""
    cg = analyse(tiny)
    remove = set()
    for name in ("stem", "a.expand", "e3", "head"):
        remove |= set(cg.unit(name).channels[::3])
    pruned = prune_graph(cg, remove)
    onnx.checker.check_model(pruned, full_check=True)
    ref = onnx.ModelProto()
    ref.CopyFrom(cg.model)
    inits = {t.name: t for t in ref.graph.initializer}
    for node in ref.graph.node:
        if node.name in cg.consumers:
            k = cg.keep_mask(node.input[0], remove)
            w = numpy_helper.to_array(inits[node.input[1]]).copy()
            if node.op_type == "Conv":
                w[:, ~k] = 0
            else:
                w[:, ~k] = 0  # Gemm transB=1: [out, in]
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(w, node.input[1]))
    x = _data(4, 1)
    np.testing.assert_allclose(_run(pruned, x), _run(ref, x), rtol=1e-4, atol=1e-4)


def test_tied_residual_channels_pruned_consistently(tiny):
    calib = ArrayDataset({"x": _data(8, 2)})
    out, rep = prune_channels(tiny, 0.5, calibration=calib, tied=True)
    for name in ("stem.w", "a.project.w", "b.project.w"):
        assert _w_of(out, name).shape[0] == 8, name
    for name in ("a.expand.w", "b.expand.w", "sq.w"):
        assert _w_of(out, name).shape[1] == 8, name
    assert _w_of(out, "a.dw.w").shape[0] == 24
    dw = next(n for n in out.graph.node if n.name == "a.dw")
    assert helper.get_attribute_value(next(a for a in dw.attribute if a.name == "group")) == 24
    assert _w_of(out, "a.bn.s").shape == (24,)
    assert _w_of(out, "head.w").shape[1] == 32 and _w_of(out, "fc.w").shape[1] == 32  # 24 -> 16 each (x8)
    onnx.checker.check_model(out, full_check=True)
    assert _run(out, _data(2, 3)).shape == (2, 10)
    before, after = model_stats(tiny), model_stats(out)
    assert after["macs"] < 0.6 * before["macs"] and after["parameters"] < before["parameters"]
    assert rep["macs_after"] == after["macs"]


def test_default_leaves_residual_stream_alone(tiny):
    out, rep = prune_channels(tiny, 0.5, calibration=None)
    assert rep["method"] == "l1" and not rep["reconstruct"]
    assert _w_of(out, "stem.w").shape[0] == 16 and _w_of(out, "a.expand.w").shape[0] == 24


def test_reconstruction_beats_no_reconstruction(tiny):
    calib, held = ArrayDataset({"x": _data(16, 4)}), _data(32, 5)
    ref = _run(tiny, held)
    errs = {}
    for recon in (False, True):
        out, _ = prune_channels(tiny, 0.5, calibration=calib, method="activation", reconstruct=recon, samples=16)
        errs[recon] = float(np.mean((_run(out, held) - ref) ** 2))
    assert errs[True] < 0.7 * errs[False], errs


def test_reconstruction_ranking_beats_l1(tiny):
    calib, held = ArrayDataset({"x": _data(16, 6)}), _data(32, 7)
    ref = _run(tiny, held)
    err = {}
    for method in ("l1", "reconstruction"):
        out, _ = prune_channels(tiny, 0.5, calibration=calib, method=method, samples=16)
        err[method] = float(np.mean((_run(out, held) - ref) ** 2))
    assert err["reconstruction"] <= err["l1"], err


def test_kept_counts_round_to_multiples_of_8():
    assert n_remove(96, 0.3) == 24  # 67.2 kept -> 72
    assert n_remove(1152, 0.3) == 344
    assert n_remove(10, 0.5) == 5  # small groups: exact
    assert n_remove(16, 0.99) == 8  # at least one block of 8 stays


def test_bad_ratio_and_method(tiny):
    with pytest.raises(InputError, match="prune-channels"):
        prune_channels(tiny, 1.5)
    with pytest.raises(InputError, match="calibration"):
        prune_channels(tiny, 0.3, method="reconstruction")


def test_cli_compress_prune_channels(tiny, tmp_path):
    from edgec.core.cli import main

    src, out, cal = tmp_path / "m.onnx", tmp_path / "p.onnx", tmp_path / "c.npz"
    onnx.save(tiny, src)
    np.savez(cal, x=_data(16, 8))
    assert main(["compress", str(src), "-o", str(out), "--prune-channels", "0.5", "--calib", str(cal),
                 "--json"]) == 0
    m = onnx.load(out)
    assert _w_of(m, "a.expand.w").shape[0] == 24
    assert main(["compress", str(src), "-o", str(out), "--prune-channels", "2", "--force"]) == 2
