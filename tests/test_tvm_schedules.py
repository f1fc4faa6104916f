"""TVM schedule rules (backends/tvm/schedules): every kernel shape they claim, checked against onnxruntime.

Models are built with onnx.helper so each rule meets the shapes that trip register tiling: strided
and asymmetric padding, 5x5 depthwise, 3-channel stems, channel counts that are not a multiple of the
vector width (24, 40) or of 4 at all (6), 7x7 maps, residual adds, a dense classifier. Each compile is
validated by edgec itself; the tests also run the artifact on fresh inputs against onnxruntime, and
check from the manifest which rule scheduled which function.
"""
from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("tvm", reason="TVM backend needs: pip install 'edgec[tvm]'")

import edgec


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EDGEC_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "edgec-cache"))


def _w(rng, *shape, scale=0.3):
    return rng.standard_normal(shape).astype(np.float32) * scale


def build_mbconv(size: int = 16, c_stem: int = 16, c_mid: int = 24, c_out: int = 40, classes: int = 10,
                 seed: int = 0) -> onnx.ModelProto:
    """An EfficientNet-Lite-shaped network: 3x3/s2 stem with the asymmetric padding TF exports use,
    depthwise 3x3/s1 + ReLU6, pointwise (projection), pointwise + residual add, depthwise 5x5/s2,
    pointwise + ReLU6, global average pool, dense classifier."""
    rng = np.random.default_rng(seed)
    inits = {
        "w_stem": _w(rng, c_stem, 3, 3, 3), "b_stem": _w(rng, c_stem, scale=0.1),
        "w_dw1": _w(rng, c_stem, 1, 3, 3), "b_dw1": _w(rng, c_stem, scale=0.1),
        "w_pw1": _w(rng, c_mid, c_stem, 1, 1), "b_pw1": _w(rng, c_mid, scale=0.1),
        "w_pw2": _w(rng, c_mid, c_mid, 1, 1), "b_pw2": _w(rng, c_mid, scale=0.1),
        "w_dw2": _w(rng, c_mid, 1, 5, 5), "b_dw2": _w(rng, c_mid, scale=0.1),
        "w_pw3": _w(rng, c_out, c_mid, 1, 1), "b_pw3": _w(rng, c_out, scale=0.1),
        "w_fc": _w(rng, classes, c_out), "b_fc": _w(rng, classes, scale=0.1),
        "lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32),
    }
    n = helper.make_node
    nodes = [
        n("Conv", ["input", "w_stem", "b_stem"], ["stem"], strides=[2, 2], pads=[0, 0, 1, 1]),
        n("Clip", ["stem", "lo", "hi"], ["stem6"]),
        n("Conv", ["stem6", "w_dw1", "b_dw1"], ["dw1"], pads=[1, 1, 1, 1], group=c_stem),
        n("Clip", ["dw1", "lo", "hi"], ["dw1_6"]),
        n("Conv", ["dw1_6", "w_pw1", "b_pw1"], ["pw1"]),
        n("Conv", ["pw1", "w_pw2", "b_pw2"], ["pw2"]),
        n("Add", ["pw2", "pw1"], ["res"]),
        n("Conv", ["res", "w_dw2", "b_dw2"], ["dw2"], strides=[2, 2], pads=[2, 2, 2, 2], group=c_mid),
        n("Conv", ["dw2", "w_pw3", "b_pw3"], ["pw3"]),
        n("Clip", ["pw3", "lo", "hi"], ["pw3_6"]),
        n("GlobalAveragePool", ["pw3_6"], ["gap"]),
        n("Flatten", ["gap"], ["flat"]),
        n("Gemm", ["flat", "w_fc", "b_fc"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(nodes, "mbconv",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _ort(model, feeds):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def _compile_and_compare(model, tmp_path, options=None, batch_shape=None):
    art = edgec.compile(model, backend="tvm", output=tmp_path / "art", options=options or {})
    assert art.manifest["validation"]["passed"]
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(11).uniform(-1, 3, shape).astype(np.float32)  # reaches both ReLU6 bounds
    runner = edgec.load(art.path)
    try:
        out = runner.run({"input": x})["logits"]
    finally:
        runner.close()
    np.testing.assert_allclose(out, _ort(model, {"input": x})[0], rtol=2e-4, atol=2e-4)
    return art.manifest["backend_info"]["schedules"]


# 28: 14x14 then 7x7 maps (7-pixel tiles); 26: 13-wide rows (13 has no divisor in 4..8: whole-row tiles)
@pytest.mark.parametrize("size", [16, 28, 26])
def test_rules_schedule_every_conv_kind_and_match_onnxruntime(tmp_path, size):
    s = _compile_and_compare(build_mbconv(size=size), tmp_path)
    by = s["by_function"]
    kinds = set(by.values())
    assert {"rules:conv", "rules:depthwise", "rules:pointwise", "rules:dense",
            "rules:channel_last_reduction"} <= kinds, by
    assert sum(v == "rules:depthwise" for v in by.values()) == 2
    assert sum(v == "rules:pointwise" for v in by.values()) == 3  # incl. the one with the residual add
    # Only layout glue (the input transpose, the flatten) is left, and the injective rule takes it.
    assert all(v.startswith("rules:") for v in by.values()), by
    assert sum(v == "rules:injective" for v in by.values()) <= 3
    assert s["scheduled_functions"] == s["functions"]
    assert s["sources"]["rules:pointwise"] == 3


def test_odd_channel_counts_still_match_onnxruntime(tmp_path):
    """6 and 10 channels: no vector width divides them, so the rules run scalar-wide tiles (or leave the
    function to the fallback); either way the numbers must hold."""
    _compile_and_compare(build_mbconv(size=12, c_stem=6, c_mid=10, c_out=6, classes=5, seed=3), tmp_path)


# Two tests, not one: the sampled path (MetaSchedule, whose first use imports the tensor intrinsics) and the
# naive one are each a full compile, and one test holding both unbalanced the two xdist workers.
def test_sampled_schedule_with_nchw_layout_keeps_the_old_path(tmp_path):
    s = _compile_and_compare(build_mbconv(size=12), tmp_path / "a", {"schedule": "sampled", "layout": "nchw"})
    assert set(s["by_function"].values()) == {"sampled"} and s["scheduled_functions"] == s["functions"]


def test_naive_schedule_keeps_the_old_path(tmp_path):
    s = _compile_and_compare(build_mbconv(size=12), tmp_path / "b", {"schedule": "naive"})
    assert set(s["by_function"].values()) == {"naive"} and s["scheduled_functions"] == 0


def test_bad_layout_is_a_one_line_input_error(tmp_path, tiny_cnn_path):
    from edgec.core.errors import InputError

    with pytest.raises(InputError, match="layout='nchwc'"):
        edgec.compile(tiny_cnn_path, backend="tvm", output=tmp_path / "x", options={"layout": "nchwc"})


def test_vector_shape_comes_from_the_target():
    import tvm
    from edgec.backends.tvm import targets
    from edgec.backends.tvm.schedules.common import vector_shape

    rpi = vector_shape(tvm.target.Target(targets.resolve("rpi4").tvm_target))
    assert (rpi.lanes, rpi.registers, rpi.cores) == (4, 32, 4)
    avx2 = vector_shape(tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "haswell"}))
    assert (avx2.lanes, avx2.registers) == (8, 16)
    avx512 = vector_shape(tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "skylake-avx512"}))
    assert (avx512.lanes, avx512.registers) == (16, 32)


def test_rules_cross_compile_for_aarch64_with_neon_tiles(tmp_path):
    """Lowering only (no board): the rules apply to the rpi4 target with 4-lane tiles and the .so is aarch64."""
    if shutil.which("aarch64-linux-gnu-gcc") is None:
        pytest.skip("apt-get install gcc-aarch64-linux-gnu")
    import tvm
    from edgec.backends.tvm import build, targets
    from edgec.backends.tvm.backend import _elf_machine

    rt = targets.resolve("rpi4")
    target = tvm.target.Target(rt.tvm_target)
    fused = build.lower_to_fused_tir(build.import_onnx(build_mbconv(size=16), 1), target)
    fused, sources = build.schedule_untuned(fused, target, "rules")
    assert sum(v.startswith("rules:") for v in sources.values()) >= 7
    # NEON: the vectorized loops of the pointwise kernels are 4 lanes wide.
    text = "\n".join(f.script() for gv, f in fused.functions.items() if sources.get(gv.name_hint) == "rules:pointwise")
    assert "T.vectorized(T.int64(4))" in text and "T.vectorized(T.int64(16))" not in text
    lib = tmp_path / "module.so"
    build.compile_module(fused, target, lib, rt.cross_cc)
    assert _elf_machine(lib) == "aarch64"


def test_clip_becomes_relax_ops_so_relu6_fuses_into_its_convolution():
    """Without the rewrite, ConvertLayout wraps each ReLU6 in transposes and splits it from its conv."""
    import tvm
    from edgec.backends.tvm import build, targets

    target = tvm.target.Target(targets.resolve("host").tvm_target)
    fused = build.lower_to_fused_tir(build.import_onnx(build_mbconv(size=16), 1), target)
    names = [gv.name_hint for gv, f in fused.functions.items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert not any(n.startswith(("fused_transpose", "maximum", "minimum")) and "conv" not in n for n in names
                   if n != "transpose" and "reshape" not in n), names
    assert sum("conv2d" in n and "maximum" in n and "minimum" in n for n in names) == 3


@pytest.mark.slow  # a real tuning run: about a minute on 2 cores
def test_tuning_is_seeded_with_the_rules_kernels(tmp_path):
    """Tuning measures each rule-scheduled kernel first and stores it as a record, so the database's best
    record for a task is never worse than the untuned default; the next compile applies the records."""
    rng = np.random.default_rng(5)
    n = helper.make_node
    graph = helper.make_graph(
        [n("Conv", ["input", "w", "b"], ["c"]), n("Clip", ["c", "lo", "hi"], ["logits"])], "pw",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 16, 6, 6])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 32, 6, 6])],
        [numpy_helper.from_array(_w(rng, 32, 16, 1, 1), "w"), numpy_helper.from_array(_w(rng, 32, scale=0.1), "b"),
         numpy_helper.from_array(np.array(0.0, np.float32), "lo"), numpy_helper.from_array(np.array(6.0, np.float32), "hi")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    a = edgec.compile(model, backend="tvm", output=tmp_path / "t1", options={"tune": True, "trials": 4, "tune_minutes": 0.5})
    t = a.manifest["backend_info"]["tuning"]
    # Every task is rule-scheduled (the conv, and since schedules/injective.py the two layout transposes),
    # so every task is seeded; this said 1 from before the transposes had a rule.
    assert t["rule_records_seeded"] == t["tasks"] == 3 and t["records_after"] >= 3
    s = _compile_and_compare(model, tmp_path / "t2")
    assert s["by_function"]["fused_conv2d_add_maximum_minimum"] == "tuned"


def test_int8_qdq_fuses_into_the_rule_scheduled_convolutions(tmp_path):
    """Per-tensor Q/DQ become elementwise arithmetic ConvertLayout understands (layout.qdq_as_elementwise):
    they fuse into the convolutions' epilogues instead of sitting between transposes on their own."""
    model = build_mbconv(size=16)
    rng = np.random.default_rng(2)
    data = tmp_path / "calib.npz"
    np.savez(data, input=rng.uniform(-1, 3, (16, 3, 16, 16)).astype(np.float32))
    art = edgec.compile(model, backend="tvm", precision="int8", calibration=data, output=tmp_path / "q")
    assert art.manifest["validation"]["passed"]
    info = art.manifest["backend_info"]
    by = info["schedules"]["by_function"]
    # 6 convs, the pool, the dense: as in fp32; the layout glue (input transpose, flatten) is injective
    assert sum(v.startswith("rules:") and v != "rules:injective" for v in by.values()) == 8, by
    assert sum(v == "sampled" for v in by.values()) == 0 and sum(v == "rules:injective" for v in by.values()) <= 3, by
    assert not any("transpose" in f and "conv2d" not in f and ("round" in f or "quantize" in f)
                   and f.count("transpose") > 1 for f in by), by
    assert info["int8"]["kernels_with_integer_operands"] == 0 and info["int8"]["functions_with_quantize_dequantize"] > 0


def test_max_pooling_is_a_channel_last_reduction(tmp_path):
    """Padded, strided max pooling after a convolution (SqueezeNet's, Fashion-MNIST's), on an odd-sized
    map. (A pool reading the graph input directly stays NCHW, as ConvertLayout leaves it, and is sampled.)"""
    rng = np.random.default_rng(4)
    n = helper.make_node
    graph = helper.make_graph(
        [n("Conv", ["input", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1]), n("Relu", ["c0"], ["r0"]),
         n("MaxPool", ["r0"], ["mp"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
         n("Conv", ["mp", "w", "b"], ["c"]), n("Relu", ["c"], ["r"]),
         n("GlobalAveragePool", ["r"], ["gap"]), n("Flatten", ["gap"], ["flat"]),
         n("Gemm", ["flat", "wf", "bf"], ["logits"], transB=1)], "pool",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 15, 15])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5])],
        [numpy_helper.from_array(_w(rng, 16, 3, 3, 3), "w0"), numpy_helper.from_array(_w(rng, 16, scale=0.1), "b0"),
         numpy_helper.from_array(_w(rng, 32, 16, 1, 1), "w"), numpy_helper.from_array(_w(rng, 32, scale=0.1), "b"),
         numpy_helper.from_array(_w(rng, 5, 32), "wf"), numpy_helper.from_array(_w(rng, 5, scale=0.1), "bf")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    s = _compile_and_compare(model, tmp_path)
    assert s["sources"]["rules:channel_last_reduction"] == 2, s["by_function"]  # the max pool and the mean
    assert s["sources"]["rules:pointwise"] == 1 and s["sources"]["rules:dense"] == 1 and s["sources"]["rules:conv"] == 1


def test_functions_without_a_reduction_get_the_injective_rule(tmp_path):
    """Elementwise ops with a rank-0 operand, a transpose, a concatenation, a pad, a reshape and a rank-0
    result: each fused function is scheduled by the injective rule (no MetaSchedule sampling, whose first
    use imports every TVMScript tensor intrinsic), and the numbers match onnxruntime. 64x32x32 elements
    are enough for a parallel outer loop on a multi-core target; 3x5 has no vector width."""
    n = helper.make_node
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        [n("Mul", ["x", "s"], ["xs"]), n("Transpose", ["xs"], ["t"], perm=[0, 2, 3, 1]),
         n("Relu", ["t"], ["tr"]), n("Concat", ["tr", "tr"], ["big"], axis=3),
         n("Pad", ["small", "pads"], ["sp"], mode="constant"), n("Reshape", ["sp", "shape"], ["spr"]),
         n("Mul", ["s", "s"], ["s2"])], "injective",
        [helper.make_tensor_value_info("x", f, [1, 32, 32, 32]), helper.make_tensor_value_info("s", f, []),
         helper.make_tensor_value_info("small", f, [3, 5])],
        [helper.make_tensor_value_info("big", f, [1, 32, 32, 64]), helper.make_tensor_value_info("spr", f, [35]),
         helper.make_tensor_value_info("s2", f, [])],
        [numpy_helper.from_array(np.array([1, 1, 1, 1], np.int64), "pads"),
         numpy_helper.from_array(np.array([35], np.int64), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    rng = np.random.default_rng(6)
    feeds = {"x": rng.standard_normal((1, 32, 32, 32), np.float32), "s": np.array(-1.5, np.float32),
             "small": rng.standard_normal((3, 5), np.float32)}
    for opts in ({}, {"target": '{"kind": "llvm", "num-cores": 2}'}):  # the 1-thread and the parallel schedule
        art = edgec.compile(model, backend="tvm", output=tmp_path / f"a{len(opts)}", validation=[feeds], threads=1,
                            options=opts)
        s = art.manifest["backend_info"]["schedules"]
        assert set(s["by_function"].values()) == {"rules:injective"}, s["by_function"]
        assert s["scheduled_functions"] == s["functions"] >= 2
        runner = edgec.load(art.path, threads=2)
        try:
            out = runner.run(feeds)
        finally:
            runner.close()
        ref = _ort(model, feeds)
        for name, want in zip(("big", "spr", "s2"), ref):
            assert out[name].shape == want.shape, name
            np.testing.assert_allclose(out[name], want, rtol=1e-6, atol=1e-6)
