"""The optimizer's pass manager: rollback, reporting, opset conversion, external data, stats."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.core.errors import InputError
from edgec.core.graph_stats import model_stats
from edgec.core.optimizer import format_report, optimize, register_pass, unregister_pass

RNG = np.random.default_rng(1)
F = TensorProto.FLOAT


def _init(name, shape, low=-1.0, high=1.0):
    return numpy_helper.from_array(RNG.uniform(low, high, shape).astype(np.float32), name)


def messy_model(opset=17, width=8):
    """A small CNN written the way careless exporters write them: BN, Identity, Dropout,
    explicit Pad, MatMul+Add, a scale Mul, duplicated constants, dead branches."""
    c = width
    inits = [
        numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"),
        _init("W1", [c, 3, 3, 3]), _init("g1", [c], 0.5, 1.5), _init("b1", [c]), _init("m1", [c]),
        _init("v1", [c], 0.5, 1.5), _init("s1", [c, 1, 1], 0.5, 1.5),
        _init("W2", [c, c, 1, 1]), _init("B2", [c]),
        _init("Wfc", [c, 10]), _init("Bfc", [10]), _init("unused", [100]),
        numpy_helper.from_array(np.array([1, c], np.int64), "flat_shape"),
        numpy_helper.from_array(np.array([1, c], np.int64), "flat_shape_copy"),
        numpy_helper.from_array(np.array(6.0, np.float32), "six"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
    ]
    nodes = [
        helper.make_node("Identity", ["input"], ["x0"], name="id0"),
        helper.make_node("Pad", ["x0", "pads"], ["xp"], name="pad"),
        helper.make_node("Conv", ["xp", "W1"], ["c1"], name="conv1"),
        helper.make_node("BatchNormalization", ["c1", "g1", "b1", "m1", "v1"], ["bn1"], name="bn1"),
        helper.make_node("Mul", ["bn1", "s1"], ["sc1"], name="scale1"),
        helper.make_node("Clip", ["sc1", "zero", "six"], ["a1"], name="clip1"),
        helper.make_node("Dropout", ["a1"], ["d1"], name="drop"),
        helper.make_node("Conv", ["d1", "W2", "B2"], ["c2"], name="conv2"),
        helper.make_node("Add", ["c2", "d1"], ["r2"], name="res"),
        helper.make_node("Relu", ["r2"], ["a2"], name="relu2"),
        helper.make_node("Neg", ["a2"], ["dead"], name="dead_neg"),
        helper.make_node("GlobalAveragePool", ["a2"], ["gap"], name="gap"),
        helper.make_node("Reshape", ["gap", "flat_shape"], ["flat"], name="reshape"),
        helper.make_node("Reshape", ["flat", "flat_shape_copy"], ["flat2"], name="reshape_same"),
        helper.make_node("MatMul", ["flat2", "Wfc"], ["mm"], name="fc"),
        helper.make_node("Add", ["mm", "Bfc"], ["logits"], name="fc_bias"),
    ]
    graph = helper.make_graph(nodes, "messy", [helper.make_tensor_value_info("input", F, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", F, [1, 10])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _ort_run(model_or_path, x):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    src = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def test_full_pipeline_shrinks_messy_model_and_stays_equivalent():
    m = messy_model()
    msgs = []
    res = optimize(m, progress=msgs.append)
    ops = [n.op_type for n in res.model.graph.node]
    assert sorted(ops) == sorted(["Conv", "Clip", "Conv", "Add", "Relu", "GlobalAveragePool",
                                  "Reshape", "Gemm"])
    rep = res.report
    assert rep["equivalence"]["ok"] and rep["equivalence"]["samples"] == 2
    assert rep["verification"] == "final"
    assert rep["before"]["nodes"] == 16 and rep["after"]["nodes"] == 8
    assert rep["after"]["parameters"] < rep["before"]["parameters"]
    assert not any(p["rolled_back"] for p in rep["passes"])
    applied = {p["name"] for p in rep["passes"] if p["applied"]}
    assert {"noop_removal", "dead_code", "fold_pad", "fold_batchnorm", "fold_mul_add",
            "matmul_add_to_gemm"} <= applied
    assert {f["pattern"] for f in rep["fusions"]} >= {"Conv+Clip", "Conv+Add+Relu"}
    json.dumps(rep)  # the manifest stores it as JSON
    assert any(msg.startswith("fold_batchnorm") for msg in msgs)
    x = RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(_ort_run(res.model, x), _ort_run(m, x), rtol=1e-4, atol=1e-5)
    text = format_report(rep)
    assert "fold_batchnorm" in text and "equivalence: OK" in text and "Conv+Clip" in text


def test_node_count_not_above_onnxslim_and_onnxsim():
    onnxslim = pytest.importorskip("onnxslim")
    onnxsim = pytest.importorskip("onnxsim")
    m = messy_model()
    ours = len(optimize(m).model.graph.node)
    slim = len(onnxslim.slim(messy_model()).graph.node)
    sim, ok = onnxsim.simplify(messy_model())
    assert ok
    assert ours <= slim and ours <= len(sim.graph.node)


def test_broken_pass_is_rolled_back_and_named():
    @register_pass("test_break_weights")
    def break_weights(model: ir.Model, ctx) -> int:
        """Deliberately wrong: replaces every Conv weight by zeros."""
        for node in model.graph:
            if node.op_type == "Conv":
                w = node.inputs[1].const_value.numpy()
                v = ir.Value(name=node.name + "_zeros", shape=ir.Shape(w.shape),
                             type=ir.TensorType(ir.DataType.FLOAT),
                             const_value=ir.tensor(np.zeros_like(w), name=node.name + "_zeros"))
                model.graph.register_initializer(v)
                node.replace_input_with(1, v)
        return 1

    @register_pass("test_raises")
    def raises(model: ir.Model, ctx) -> int:
        """Deliberately crashes after half-editing the graph."""
        model.graph.remove(next(iter(model.graph)))
        raise ValueError("boom")

    try:
        m = messy_model()
        names = ["normalize", "test_break_weights", "fold_batchnorm", "test_raises"]
        each = optimize(m, passes=names, check_each_pass=True)
        res = optimize(m, passes=names)  # optimistic: the final check fails, then per pass
        assert res.report["verification"].startswith("per-pass (the single final check failed")
        assert each.report["verification"] == "per-pass"
        assert [p["rolled_back"] for p in each.report["passes"]] == \
            [p["rolled_back"] for p in res.report["passes"]] == [False, True, False, True]
        by_name = {p["name"]: p for p in res.report["passes"]}
        assert by_name["test_break_weights"]["rolled_back"]
        assert "max abs error" in by_name["test_break_weights"]["reason"]
        assert by_name["test_raises"]["rolled_back"] and "boom" in by_name["test_raises"]["reason"]
        assert by_name["fold_batchnorm"]["applied"] and not by_name["fold_batchnorm"]["rolled_back"]
        assert res.report["equivalence"]["ok"]
        assert "ROLLED BACK" in format_report(res.report)
        x = RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)
        np.testing.assert_allclose(_ort_run(res.model, x), _ort_run(m, x), rtol=1e-4, atol=1e-5)
    finally:
        unregister_pass("test_break_weights")
        unregister_pass("test_raises")


def test_broken_pass_is_kept_when_verification_is_off_only_if_it_does_not_crash():
    @register_pass("test_raises2")
    def raises(model, ctx):
        raise RuntimeError("always")

    try:
        res = optimize(messy_model(), passes=["test_raises2", "dead_code"], verify=False)
        assert res.report["passes"][0]["rolled_back"]
        assert res.report["equivalence"]["ok"] is None
    finally:
        unregister_pass("test_raises2")


def test_unknown_pass_names_fail_with_the_known_list():
    with pytest.raises(InputError, match="fold_batchnorm"):
        optimize(messy_model(), passes=["no_such_pass"])
    with pytest.raises(InputError):
        optimize(messy_model(), skip=["no_such_pass"])


def test_skip_leaves_pass_out():
    res = optimize(messy_model(), skip=["fold_batchnorm"])
    assert "fold_batchnorm" not in {p["name"] for p in res.report["passes"]}
    assert "BatchNormalization" in [n.op_type for n in res.model.graph.node]


@pytest.mark.parametrize("source,rng,expected", [(9, None, 11), (17, (13, 15), 15), (11, (13, 21), 13),
                                                  (17, None, 17)])
def test_version_conversion(source, rng, expected):
    m = messy_model(opset=source) if source >= 11 else _opset9_model()
    res = optimize(m, opset_range=rng)
    assert res.model.opset_import[0].version == expected
    assert res.report["equivalence"]["ok"]


@pytest.mark.parametrize("opset", [11, 13, 18, 21, 25, onnx.defs.onnx_opset_version()])
def test_pipeline_across_opsets(opset):
    """Up to the newest opset onnx knows; beyond what onnxruntime loads, the equivalence check
    runs in onnx's reference runtime instead."""
    res = optimize(messy_model(opset=opset))
    assert res.report["equivalence"]["ok"] and res.report["after"]["nodes"] == 8
    assert res.report["equivalence"]["runtime"] in ("onnxruntime", "onnx.reference")
    assert res.model.opset_import[0].version == opset


def _opset9_model():
    inits = [_init("W", [4, 3, 3, 3]), _init("g", [4]), _init("b", [4]), _init("m", [4]),
             _init("v", [4], 0.5, 1.5)]
    nodes = [helper.make_node("Pad", ["input"], ["xp"], pads=[0, 0, 1, 1, 0, 0, 1, 1]),
             helper.make_node("Conv", ["xp", "W"], ["c"]),
             helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["bn"]),
             helper.make_node("Clip", ["bn"], ["logits"], min=0.0, max=6.0)]
    graph = helper.make_graph(nodes, "old", [helper.make_tensor_value_info("input", F, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", F, [1, 4, 8, 8])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    m.ir_version = 4
    return m


def test_external_data_model_takes_the_large_model_path(tmp_path):
    """A model saved with external data, optimized with the >2 GB threshold lowered to 1 kB:
    checker, onnxruntime and saving all go through files, never one in-memory protobuf."""
    src = tmp_path / "src"
    src.mkdir()
    m = messy_model(width=32)
    onnx.save_model(m, src / "model.onnx", save_as_external_data=True, location="weights.bin",
                    size_threshold=256)
    assert (src / "weights.bin").stat().st_size > 4000
    x = RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)
    want = _ort_run(str(src / "model.onnx"), x)

    for given in (onnx.load(src / "model.onnx"), str(src / "model.onnx"),
                  onnx.load(src / "model.onnx", load_external_data=False)):
        res = optimize(given, large_model_bytes=1024, base_dir=str(src))
        assert res.report["large_model"] is True
        assert res.report["equivalence"]["ok"], res.report["equivalence"]
        assert res.report["after"]["nodes"] < res.report["before"]["nodes"]
        out = tmp_path / "out" / "opt.onnx"
        out.parent.mkdir(exist_ok=True)
        res.save(out)
        assert (tmp_path / "out" / "opt.onnx.data").exists()
        assert (out.stat().st_size) < 4000  # the weights went to the data file
        onnx.checker.check_model(str(out))
        np.testing.assert_allclose(_ort_run(str(out), x), want, rtol=1e-4, atol=1e-5)


def test_small_model_with_external_data_comes_back_self_contained(tmp_path):
    """Below the threshold, weights read lazily from the input's data file end up inline."""
    m = messy_model(width=32)
    onnx.save_model(m, tmp_path / "model.onnx", save_as_external_data=True, location="w.bin",
                    size_threshold=256)
    res = optimize(str(tmp_path / "model.onnx"))
    assert res.report["large_model"] is False and res.report["equivalence"]["ok"]
    x = RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)
    want = _ort_run(str(tmp_path / "model.onnx"), x)
    np.testing.assert_allclose(_ort_run(res.model, x), want, rtol=1e-4, atol=1e-5)
    other = tmp_path / "elsewhere"
    other.mkdir()
    res.save(other / "opt.onnx")
    assert [p.name for p in other.iterdir()] == ["opt.onnx"]
    np.testing.assert_allclose(_ort_run(str(other / "opt.onnx"), x), want, rtol=1e-4, atol=1e-5)


def test_model_stats_counts_macs_per_op():
    inits = [_init("W", [8, 3, 3, 3]), _init("WT", [8, 4, 2, 2]), _init("G", [4 * 4 * 4, 10]),
             _init("M", [10, 7])]
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("ConvTranspose", ["r", "WT"], ["t"], strides=[1, 1]),
             helper.make_node("Flatten", ["t"], ["f"]),
             helper.make_node("Gemm", ["f", "G"], ["g"]),
             helper.make_node("MatMul", ["g", "M"], ["y"])]
    graph = helper.make_graph(nodes, "s", [helper.make_tensor_value_info("x", F, ["N", 3, 6, 6])],
                              [helper.make_tensor_value_info("y", F, None)], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    s = model_stats(m)
    conv = (8 * 3 * 3) * 3 * 3 * 3      # out elems (N=1, 8x3x3) x Cin x k x k
    relu = 8 * 3 * 3
    convt = (8 * 3 * 3) * 4 * 2 * 2     # in elems x Cout x k x k -> output 4x4x4
    gemm = 10 * 64
    matmul = 7 * 10
    assert s["macs"] == conv + relu + convt + gemm + matmul
    assert s["nodes"] == 6 and s["initializers"] == 4
    assert s["parameters"] == 8 * 27 + 8 * 16 + 640 + 70
    assert s["bytes"] == 4 * s["parameters"]
