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


def test_distillation_lowers_heldout_kl(tiny):
    from edgec.core.compression.distill import _import, finetune

    try:
        _import()
    except InputError as e:
        pytest.skip(f"distillation needs torch and onnx2torch (extra edgec[torch]): {e}")

    student, _ = prune_channels(tiny, 0.5, calibration=None)  # l1, no re-fit: plenty for training to recover
    calib = ArrayDataset({"x": _data(64, 9)})
    out, rep = finetune(student, tiny, calib, minutes=1.0, epochs=3, lr=3e-3, batch=8)
    assert rep["heldout_kl_after"] < 0.9 * rep["heldout_kl_before"], rep
    # written back into the same graph: shapes unchanged, weights changed, a valid model
    onnx.checker.check_model(out, full_check=True)
    assert [t.dims for t in out.graph.initializer] == [t.dims for t in student.graph.initializer]
    assert not np.allclose(_w_of(out, "a.project.w"), _w_of(student, "a.project.w"))
    # the held-out KL of the written-back ONNX matches what torch measured: the write-back is faithful
    x = _data(16, 10)
    t, s0, s1 = _run(tiny, x), _run(student, x), _run(out, x)

    def kl(a, b):
        la = a / 2 - np.log(np.exp(a / 2).sum(1, keepdims=True))
        lb = b / 2 - np.log(np.exp(b / 2).sum(1, keepdims=True))
        return float((np.exp(la) * (la - lb)).sum(1).mean())

    assert kl(t, s1) < kl(t, s0)


def test_batchable_rewrites_batch_one_reshape():
    from edgec.core.compression.distill import batchable

    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    shape = numpy_helper.from_array(np.array([1, -1], np.int64), "shape")
    g = helper.make_graph([helper.make_node("GlobalAveragePool", ["x"], ["p"]),
                           helper.make_node("Reshape", ["p", "shape"], ["f"]),
                           helper.make_node("Gemm", ["f", "w"], ["y"], transB=1)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w, shape])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    b = batchable(m)
    s = ort.InferenceSession(b.SerializeToString(), providers=["CPUExecutionProvider"])
    assert s.run(None, {"x": np.ones((5, 3, 4, 4), np.float32)})[0].shape == (5, 4)


def test_low_rank_factorizes_where_it_cuts_macs_and_is_data_aware():
    from edgec.core.compression.lowrank import factorize

    rng = np.random.default_rng(11)
    # a nearly rank-8 64x256 Gemm behind a nearly rank-8 1x1 conv; inputs with uneven energy
    w1 = (rng.standard_normal((256, 8)) @ rng.standard_normal((8, 32)) + 0.01 * rng.standard_normal((256, 32)))
    w2 = (rng.standard_normal((64, 8)) @ rng.standard_normal((8, 256)) + 0.01 * rng.standard_normal((64, 256)))
    inits = [numpy_helper.from_array(w1.reshape(256, 32, 1, 1).astype(np.float32), "c.w"),
             numpy_helper.from_array(w2.astype(np.float32), "g.w"),
             numpy_helper.from_array(np.zeros(64, np.float32), "g.b")]
    nodes = [helper.make_node("Conv", ["x", "c.w"], ["c"], name="c", kernel_shape=[1, 1]),
             helper.make_node("GlobalAveragePool", ["c"], ["p"], name="p"),
             helper.make_node("Flatten", ["p"], ["f"], name="f"),
             helper.make_node("Gemm", ["f", "g.w", "g.b"], ["y"], name="g", transB=1)]
    g = helper.make_graph(nodes, "lr", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    calib = ArrayDataset({"x": np.random.default_rng(12).standard_normal((16, 32, 4, 4)).astype(np.float32)})
    out, rep = factorize(m, 0.999, calibration=calib)
    assert rep["factorized"] == 2 and rep["macs_after"] < 0.5 * rep["macs_before"]
    assert all(r["rank"] <= 10 for r in rep["layers"])
    onnx.checker.check_model(out, full_check=True)
    x = np.random.default_rng(13).standard_normal((4, 32, 4, 4)).astype(np.float32)
    ref = _run_named(m, x)
    got = _run_named(out, x)
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()
    _, rep_lo = factorize(m, 0.5)
    assert all(r["rank"] <= 8 for r in rep_lo["layers"])


def _run_named(m, x):
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.concatenate([s.run(None, {"x": xi[None]})[0] for xi in x])


@pytest.mark.parametrize("backend", ["onnxruntime", pytest.param("openvino", marks=pytest.mark.slow),
                                     pytest.param("tflite", marks=pytest.mark.slow)])
def test_compile_with_pruned_channels_validates(tiny, tmp_path, backend):
    """compile --prune-channels: the pruned graph goes through quantize -> lower -> validate on each
    CPU backend; MACs in the manifest's compression report drop."""
    import edgec
    from edgec.core.compression import Step

    if backend != "onnxruntime":
        pytest.importorskip({"openvino": "openvino", "tflite": "ai_edge_litert"}[backend])
    src, cal = tmp_path / "m.onnx", tmp_path / "c.npz"
    onnx.save(tiny, src)
    np.savez(cal, x=_data(16, 14))
    art = edgec.compile(str(src), backend=backend, precision="int8", calibration=str(cal),
                        output=str(tmp_path / "art"), compression=[Step("prune_channels", 0.5)], min_cosine=0.5)
    man = art.manifest
    st = man["compression"]["structured"][0]
    assert st["technique"] == "prune_channels" and st["macs_after"] < 0.8 * st["macs_before"]
    assert man["validation"]["samples"] > 0


@pytest.mark.slow
def test_max_drop_walks_the_ratio_ladder(tiny):
    from edgec.core.compression import Step, compress

    calib = ArrayDataset({"x": _data(16, 15)})
    val = ArrayDataset({"x": _data(32, 16)})  # unlabelled: agreement points
    res = compress(tiny, [Step("prune_channels", 0.5)], calibration=calib, validation=val, max_drop=100.0)
    st = res.report["structured"][0]
    assert st["max_drop"]["met"] and len(st["max_drop"]["trials"]) == 1 and st["ratio"] == 0.5
    res = compress(tiny, [Step("prune_channels", 0.5)], calibration=calib, validation=val, max_drop=-1.0)
    st = res.report["structured"][0]
    assert not st["max_drop"]["met"] and len(st["max_drop"]["trials"]) == 4 and st["ratio"] == 0.0


def test_sensitivity_allocation_prunes_the_insensitive_group_more():
    """Block b's projection scaled by 1e-2: its expansion channels barely reach the output, block a's
    do; with the same MACs per channel the budget must go to b, and the MACs must really drop."""
    from edgec.core.compression.sensitivity import allocate, measure, prune_to_budget

    m = _mbv2_like(seed=3)
    for t in m.graph.initializer:
        if t.name == "b.project.w":
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * 0.01, t.name))
    calib = ArrayDataset({"x": _data(32, 8)})
    table = measure(m, calib, grid=(0.5,), samples=16)
    harm = {u: {r: h for r, _, h in rows} for u, rows in table.items()}
    assert harm["b.expand"][0.5] < 0.1 * harm["a.expand"][0.5], harm
    macs_b = {r: s for r, s, _ in table["b.expand"]}[0.5]
    total = model_stats(m)["macs"]
    per_unit, saved, _ = allocate(table, macs_b)
    assert per_unit.get("b.expand", 0) >= 0.5 > per_unit.get("a.expand", 0), per_unit
    assert saved >= macs_b
    out, rep = prune_to_budget(m, macs_b / total, calibration=calib, table=table, samples=16)
    assert rep["allocate"] == "sensitivity" and rep["per_unit"] == per_unit
    assert _w_of(out, "b.expand.w").shape[0] <= 24 and _w_of(out, "a.expand.w").shape[0] == 48
    assert rep["macs_before"] - rep["macs_after"] >= 0.98 * macs_b
    onnx.checker.check_model(out, full_check=True)
    with pytest.raises(InputError):
        prune_to_budget(m, 1.2, calibration=calib, table=table)


def test_cli_prune_channels_allocate_needs_ratio():
    import argparse

    from edgec.core.compression.structured_flags import add_structured_flags, structured_steps

    p = argparse.ArgumentParser()
    add_structured_flags(p)
    st = structured_steps(p.parse_args(["--prune-channels", "0.2", "--prune-channels-allocate", "sensitivity"]), ())
    assert st[0].options["allocate"] == "sensitivity"
    with pytest.raises(InputError):
        structured_steps(p.parse_args(["--prune-channels-allocate", "sensitivity"]), ())


def test_low_rank_with_fewer_calibration_rows_than_inputs_does_not_memorise():
    """A Gemm after global pooling sees one row per image: 16 rows for 256 inputs. Without shrinking H
    the data-aware SVD keeps only the calibration rows' span (rank 16) and fails on held-out inputs."""
    from edgec.core.compression.lowrank import factorize

    rng = np.random.default_rng(11)
    u, v = rng.standard_normal((256, 24)), rng.standard_normal((24, 256))
    w = (u @ v / 16 + 0.01 * rng.standard_normal((256, 256))).astype(np.float32)
    g = helper.make_graph([helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB=1)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256])],
                          [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    calib = ArrayDataset({"x": rng.standard_normal((16, 256)).astype(np.float32)})
    held = rng.standard_normal((64, 256)).astype(np.float32)
    out, rep = factorize(m, 0.99, calibration=calib, samples=16)
    assert rep["factorized"] == 1, rep
    s = ort.InferenceSession(out.SerializeToString(), providers=["CPUExecutionProvider"])
    y = np.concatenate([s.run(None, {"x": h[None]})[0] for h in held])
    ref = held @ w.T
    assert float(np.sum((y - ref) ** 2) / np.sum(ref ** 2)) < 0.05
