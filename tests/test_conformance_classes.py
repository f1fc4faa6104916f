"""Issue #12's failure classes, one tiny onnx.helper model each, through the real runtimes.

Each test is a model with the property that broke (a [3,4,5] input, a scalar, a sequence output, NaN in
a correct output, an unused input, a zero-size dim, a dynamic width, opset 11, an int64 input...).
The full ONNX node-test sweep is `benchmarks/bench_conformance.py` (minutes); a slow-marked sample of it
runs at the end of this file.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as oh
from onnx import numpy_helper

import edgec
from edgec.core.errors import EdgecError, InputError, ValidationFailed
from edgec.core.metrics import OutputAgreement

REPO = Path(__file__).resolve().parents[1]


def _have(mod: str) -> bool:
    try:
        __import__(mod)
        return True
    except Exception:  # noqa: BLE001
        return False


BACKENDS = ["onnxruntime",
            pytest.param("openvino", marks=pytest.mark.skipif(not _have("openvino"), reason="openvino not installed")),
            pytest.param("tvm", marks=pytest.mark.skipif(not _have("tvm"), reason="apache-tvm not installed"))]
# TVM compiles take seconds each on 2 shared cores: the classes that are TVM's own (scalars, unused
# inputs, the stale module, layout, zero-size dims) run by default, the rest of its cells under -m slow.
BACKENDS_TVM_SLOW = BACKENDS[:2] + [
    pytest.param("tvm", marks=[pytest.mark.slow,
                               pytest.mark.skipif(not _have("tvm"), reason="apache-tvm not installed")])]


def model(nodes, inputs, outputs, inits=(), opset=17):
    g = oh.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = oh.make_model(g, opset_imports=[oh.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def vi(name, elem, shape):
    return oh.make_tensor_value_info(name, elem, shape)


def compile_and_run(m, backend, samples, tmp_path, **kw):
    art = edgec.compile(m, backend=backend, output=tmp_path / f"a-{backend}", force=True, validation=samples,
                        threads=1, **kw)
    runner = edgec.load(art.path, threads=1)
    try:
        return art, [runner.run(s) for s in samples]
    finally:
        runner.close()


# 1. OpenVINO pinned dim 0 of every input to 1 --------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS_TVM_SLOW)
def test_static_leading_dims_are_the_models_own(backend, tmp_path):
    m = model([oh.make_node("Add", ["x", "y"], ["z"])], [vi("x", T.FLOAT, [3, 4, 5]), vi("y", T.FLOAT, [3, 4, 5])],
              [vi("z", T.FLOAT, [3, 4, 5])])
    rng = np.random.default_rng(0)
    s = [{"x": rng.standard_normal((3, 4, 5), np.float32), "y": rng.standard_normal((3, 4, 5), np.float32)}]
    art, out = compile_and_run(m, backend, s, tmp_path)
    np.testing.assert_allclose(out[0]["z"], s[0]["x"] + s[0]["y"], rtol=1e-6)
    assert art.manifest["validation"]["input_shapes"] == {"x": [3, 4, 5], "y": [3, 4, 5]}


# 2. Scalars ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_scalar_input_stays_rank_0(backend, tmp_path):
    m = model([oh.make_node("Mul", ["x", "s"], ["y"])], [vi("x", T.FLOAT, [2, 3]), vi("s", T.FLOAT, [])],
              [vi("y", T.FLOAT, [2, 3])])
    s = [{"x": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.array(2.5, np.float32)}]
    _, out = compile_and_run(m, backend, s, tmp_path)
    assert out[0]["y"].shape == (2, 3)
    np.testing.assert_allclose(out[0]["y"], s[0]["x"] * 2.5)


# 3. TVM NHWC only where convolutions pay ---------------------------------------------------------------------

@pytest.mark.skipif(not _have("tvm"), reason="apache-tvm not installed")
def test_tvm_keeps_nchw_without_convolutions(tmp_path):
    m = model([oh.make_node("Softmax", ["x"], ["y"], axis=1)], [vi("x", T.FLOAT, [1, 3, 4, 4])],
              [vi("y", T.FLOAT, [1, 3, 4, 4])])
    art, _ = compile_and_run(m, "tvm", [{"x": np.random.default_rng(0).standard_normal((1, 3, 4, 4), np.float32)}],
                             tmp_path)
    assert art.manifest["backend_info"]["layout"] == "nchw"


# 4. Sequence / optional / string values ----------------------------------------------------------------------

def test_sequence_output_through_optimizer_verify_and_metrics(tmp_path):
    m = model([oh.make_node("SplitToSequence", ["x"], ["seq"], axis=0)], [vi("x", T.FLOAT, [3, 2])],
              [oh.make_tensor_sequence_value_info("seq", T.FLOAT, None)])
    s = [{"x": np.arange(6, dtype=np.float32).reshape(3, 2)}]
    art, out = compile_and_run(m, "onnxruntime", s, tmp_path)
    assert art.manifest["validation"]["passed"]
    assert art.manifest["outputs"][0]["dtype"] == "sequence(float32)"
    assert [a.tolist() for a in out[0]["seq"]] == [[[0, 1]], [[2, 3]], [[4, 5]]]


def test_sequence_input_has_a_dtype_and_validates_on_given_feeds(tmp_path):
    m = model([oh.make_node("SequenceAt", ["seq", "i"], ["y"])],
              [oh.make_tensor_sequence_value_info("seq", T.FLOAT, None), vi("i", T.INT64, [])],
              [vi("y", T.FLOAT, ["n"])])
    s = [{"seq": [np.ones(2, np.float32), np.full(3, 2, np.float32)], "i": np.array(1, np.int64)}]
    art, out = compile_and_run(m, "onnxruntime", s, tmp_path)
    assert art.manifest["inputs"][0]["dtype"] == "sequence(float32)"
    np.testing.assert_array_equal(out[0]["y"], [2, 2, 2])
    with pytest.raises(InputError, match="sequence.*pass --val"):  # random validation cannot invent a sequence
        edgec.compile(m, backend="onnxruntime", output=tmp_path / "r", force=True)


def test_string_outputs_compare_exactly():
    acc = OutputAgreement(["s"])
    acc.update({"s": np.array(["a", "b"], dtype=object)}, {"s": np.array(["a", "b"], dtype=object)})
    assert acc.summary()["cosine"] == 1.0 and "mismatches" not in acc.summary()
    acc.update({"s": np.array(["a", "c"], dtype=object)}, {"s": np.array(["a", "b"], dtype=object)})
    assert "string values differ" in acc.summary()["mismatches"]["s"]["reason"]


# 5. Non-finite values, shape mismatches ------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS_TVM_SLOW)
def test_correct_inf_and_nan_outputs_pass(backend, tmp_path):
    m = model([oh.make_node("Log", ["x"], ["y"])], [vi("x", T.FLOAT, [4])], [vi("y", T.FLOAT, [4])])
    art, out = compile_and_run(m, backend, [{"x": np.array([0, -1, 1, 2], np.float32)}], tmp_path)
    assert art.manifest["validation"]["passed"]
    assert np.isneginf(out[0]["y"][0]) and np.isnan(out[0]["y"][1])


def test_nonfinite_positions_and_shapes_are_validation_failures():
    acc = OutputAgreement(["y"])
    acc.update({"y": np.array([np.nan, 1.0])}, {"y": np.array([1.0, 1.0])})
    s = acc.summary()
    assert s["cosine"] == 0.0 and "NaN/inf" in s["mismatches"]["y"]["reason"]
    acc = OutputAgreement(["y"])
    acc.update({"y": np.zeros((2, 3))}, {"y": np.zeros((3, 2))})  # was a ValueError
    assert "shape [2, 3], reference [3, 2]" in acc.summary()["mismatches"]["y"]["reason"]
    acc = OutputAgreement(["y"])  # finite values still by the metric next to matching infinities
    acc.update({"y": np.array([np.inf, 1.0, 2.0])}, {"y": np.array([np.inf, 1.0, 2.0])})
    assert acc.summary()["cosine"] == pytest.approx(1.0) and "mismatches" not in acc.summary()


# 6. Unused inputs stay in the interface ---------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_unused_input_kept_in_the_artifacts_interface(backend, tmp_path):
    m = model([oh.make_node("Relu", ["x"], ["y"])], [vi("x", T.FLOAT, [1, 4]), vi("unused", T.FLOAT, [1, 2])],
              [vi("y", T.FLOAT, [1, 4])])
    s = [{"x": np.array([[-1, 0, 1, 2]], np.float32), "unused": np.zeros((1, 2), np.float32)}]
    art, out = compile_and_run(m, backend, s, tmp_path)
    assert [i["name"] for i in art.manifest["inputs"]] == ["x", "unused"]
    np.testing.assert_array_equal(out[0]["y"], [[0, 0, 1, 2]])


# 7. Zero-size dims, error lines ---------------------------------------------------------------------------------

def test_zero_size_dims_are_sizes_not_symbols():
    from edgec.core.backend import TensorSpec
    from edgec.core.model_io import concrete_shape

    assert concrete_shape(TensorSpec("x", "float32", (0, 3, "n"))) == (0, 3, 1)
    if _have("tvm"):
        from edgec.backends.tvm.build import static_shapes

        m = model([oh.make_node("Identity", ["x"], ["y"])], [vi("x", T.FLOAT, [2, 0, 3])], [vi("y", T.FLOAT, [2, 0, 3])])
        assert static_shapes(m, 1) == {"x": [2, 0, 3]}


def test_openvino_reason_keeps_the_line_that_says_why():
    from edgec.backends.openvino.convert import reason

    e = RuntimeError("Exception from src/inference/src/cpp/core.cpp:112:\n"
                     "Exception from src/frontends/onnx/frontend/src/frontend.cpp:1:\n"
                     "Check 'x' failed at src/core/shape_inference.cpp:9:\n"
                     "While validating node 'Reshape_3': Requested output shape [5] is incompatible with input\n")
    r = reason(e)
    assert "Reshape_3" in r and "incompatible" in r and "Exception from" not in r


def test_runtime_refusal_is_one_line_naming_the_op(tmp_path):
    # onnxruntime has no int16 Max kernel: the compile fails in one line naming Max and its opset
    m = model([oh.make_node("Max", ["a", "b"], ["y"])], [vi("a", T.INT16, [2]), vi("b", T.INT16, [2])],
              [vi("y", T.INT16, [2])], opset=13)
    s = [{"a": np.array([1, 2], np.int16), "b": np.array([2, 1], np.int16)}]
    with pytest.raises(EdgecError) as ei:
        edgec.compile(m, backend="onnxruntime", output=tmp_path / "o", validation=s)
    msg = str(ei.value)
    assert "\n" not in msg and "Max" in msg and len(msg) < 400
    assert not (tmp_path / "o").exists()


# 8. Data files: each sample a full set of input tensors ---------------------------------------------------------------

def test_per_sample_npz_batch_scalar_and_different_first_dims(tmp_path):
    m = model([oh.make_node("Mul", ["x", "s"], ["y"]), oh.make_node("ReduceSum", ["t"], ["u"], keepdims=0)],
              [vi("x", T.FLOAT, ["n", 3]), vi("s", T.FLOAT, []), vi("t", T.FLOAT, [5, 2])],
              [vi("y", T.FLOAT, ["n", 3]), vi("u", T.FLOAT, [])], opset=17)
    rng = np.random.default_rng(0)
    arrays = {}
    for i, n in enumerate((4, 2)):  # batch 4, then batch 2; a scalar; an input with another first dim
        arrays[f"{i}/x"] = rng.standard_normal((n, 3)).astype(np.float32)
        arrays[f"{i}/s"] = np.array(1.5 + i, np.float32)
        arrays[f"{i}/t"] = rng.standard_normal((5, 2)).astype(np.float32)
    np.savez(tmp_path / "val.npz", **arrays)
    art = edgec.compile(m, backend="onnxruntime", output=tmp_path / "o", validation=str(tmp_path / "val.npz"))
    v = art.manifest["validation"]
    assert v["passed"] and v["samples"] == 2 and v["input_shapes"] == {"x": [4, 3], "s": [], "t": [5, 2]}


def test_per_sample_npz_is_checked_against_the_model(tmp_path):
    m = model([oh.make_node("Relu", ["x"], ["y"])], [vi("x", T.FLOAT, [2, 3])], [vi("y", T.FLOAT, [2, 3])])
    np.savez(tmp_path / "bad.npz", **{"0/x": np.zeros((3, 3), np.float32)})
    with pytest.raises(InputError, match="sample 0 of input 'x' has shape \\[3, 3\\]"):
        edgec.compile(m, backend="onnxruntime", output=tmp_path / "o", validation=str(tmp_path / "bad.npz"))
    np.savez(tmp_path / "mixed.npz", **{"0/x": np.zeros((2, 3), np.float32), "x": np.zeros((1, 2, 3), np.float32)})
    with pytest.raises(InputError, match="mixes per-sample keys"):
        edgec.compile(m, backend="onnxruntime", output=tmp_path / "o", validation=str(tmp_path / "mixed.npz"))


# 9. Stale module: recompiling into the same folder in one process --------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_recompiled_artifact_in_the_same_folder_is_the_new_model(backend, tmp_path):
    x = np.array([[-1.0, 2.0]], np.float32)
    outs = []
    for op in ("Relu", "Neg"):
        m = model([oh.make_node(op, ["x"], ["y"])], [vi("x", T.FLOAT, [1, 2])], [vi("y", T.FLOAT, [1, 2])])
        art = edgec.compile(m, backend=backend, output=tmp_path / "same", force=True, threads=1)
        r = edgec.load(art.path, threads=1)
        outs.append(r.run({"x": x})["y"])
        r.close()
    np.testing.assert_array_equal(outs[0], [[0, 2]])
    np.testing.assert_array_equal(outs[1], [[1, -2]])


# Dynamic shapes: --input-shape, realistic validation ----------------------------------------------------------------

def dynamic_width_cnn():
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.2, "w")
    return model([oh.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), oh.make_node("Relu", ["c"], ["y"])],
                 [vi("x", T.FLOAT, [1, 3, 16, "width"])], [vi("y", T.FLOAT, [1, 4, 16, "width"])], [w])


@pytest.mark.parametrize("backend", BACKENDS_TVM_SLOW)
def test_input_shape_compiles_a_dynamic_width_model_and_records_it(backend, tmp_path):
    art = edgec.compile(dynamic_width_cnn(), backend=backend, output=tmp_path / "o", input_shapes="x=1x3x16x40",
                        threads=1)
    m = art.manifest
    assert m["input_shapes"] == {"x": [1, 3, 16, 40]}
    assert m["validation"]["input_shapes"] == {"x": [1, 3, 16, 40]} and m["validation"]["passed"]


def test_random_validation_at_a_made_up_dim_is_not_a_pass(tmp_path):
    with pytest.raises(ValidationFailed, match="degenerate shape.*x dim 3 \\(width\\).*--input-shape"):
        edgec.compile(dynamic_width_cnn(), backend="onnxruntime", output=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_input_shape_errors_name_the_input(tmp_path):
    with pytest.raises(InputError, match="'images', which is not a model input \\(inputs: x\\)"):
        edgec.compile(dynamic_width_cnn(), output=tmp_path / "o", input_shapes="images=1x3x16x16")
    with pytest.raises(InputError, match="dim 2 is fixed to 16 by the model, not 32"):
        edgec.compile(dynamic_width_cnn(), output=tmp_path / "o", input_shapes={"x": [1, 3, 32, 32]})


# INT8 for opset 11/12 and for models with integer inputs --------------------------------------------------------------

@pytest.mark.parametrize("opset", [11, 12])
@pytest.mark.parametrize("backend", BACKENDS_TVM_SLOW)
def test_int8_opset_11_12(backend, opset, tmp_path):
    from conftest import build_tiny_cnn

    rng = np.random.default_rng(0)
    calib = [{"input": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(8)]
    art = edgec.compile(build_tiny_cnn(opset=opset), backend=backend, precision="int8", calibration=calib,
                        output=tmp_path / "o", threads=1)
    note = art.manifest["quantization"]["opset"]
    assert note["from"] == opset and note["to"] == 13 and note["per_channel"]
    assert art.manifest["validation"]["passed"]


def test_int8_per_tensor_when_the_opset_cannot_be_raised():
    from edgec.core.backend import QuantFlavour
    from edgec.core.quantization.opset import prepare

    # ai.onnx.ml's LinearRegressor is fine, but an op with no 12->13 adapter stands for the general case:
    # simulate a failing converter by an opset the converter rejects (domain-less custom op).
    m = model([oh.make_node("Relu", ["x"], ["y"])], [vi("x", T.FLOAT, [1, 2])], [vi("y", T.FLOAT, [1, 2])], opset=11)
    m.graph.node.append(oh.make_node("Custom", ["y"], ["z"], domain="my.ops"))
    m.opset_import.append(oh.make_opsetid("my.ops", 1))
    m.graph.output[0].name = "z"
    _, flavour, rep = prepare(m, QuantFlavour(per_channel=True))
    assert rep["opset"]["per_channel"] is False and not flavour.per_channel
    assert "per-tensor" in rep["opset"]["note"]


@pytest.mark.parametrize("backend", BACKENDS_TVM_SLOW)
def test_int8_with_an_int64_input_quantizes_the_float_part(backend, tmp_path):
    rng = np.random.default_rng(0)
    emb = numpy_helper.from_array(rng.standard_normal((50, 8)).astype(np.float32), "emb")
    w = numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "w")
    m = model([oh.make_node("Gather", ["emb", "ids"], ["e"]), oh.make_node("MatMul", ["e", "w"], ["y"])],
              [vi("ids", T.INT64, [1, 6])], [vi("y", T.FLOAT, [1, 6, 4])], [emb, w], opset=13)
    calib = [{"ids": rng.integers(0, 50, (1, 6)).astype(np.int64)} for _ in range(8)]
    art = edgec.compile(m, backend=backend, precision="int8", calibration=calib, output=tmp_path / "o", threads=1)
    assert art.manifest["validation"]["passed"]
    assert art.manifest["inputs"][0]["dtype"] == "int64"


# The ONNX node cases themselves, a sample per backend (slow) ---------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "tvm"])
def test_node_case_sample_through_every_backend(backend, tmp_path):
    if backend != "onnxruntime" and not _have(backend):
        pytest.skip(f"{backend} not installed")
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_conformance.py"), "--backend", backend,
                           "--limit", "40", "--seed", "3", "--jobs", "2", "--json", str(out)],
                          capture_output=True, text=True, timeout=3000)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    res = json.loads(out.read_text())
    assert not [r for r in res if "crash" in r], "a case crashed or hung"
    internal = [r for r in res if not r.get("edgec", True) and r["edgec_stage"].startswith("internal")]
    assert not internal, internal[:3]
    lost = [r["case"] for r in res if r.get("raw") and not r.get("edgec")]
    raw = sum(1 for r in res if r.get("raw"))
    assert len(lost) <= max(1, raw // 50), (lost, proc.stdout[-3000:])
