"""OpenVINO backend on tiny models built here, run on the real OpenVINO runtime (CPU)."""
from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh
import pytest

ov = pytest.importorskip("openvino", reason="openvino not installed: pip install 'edgec[openvino]'")

from edgec.core.backend import LoweringContext  # noqa: E402
from edgec.core.data import ArrayDataset  # noqa: E402
from edgec.core.errors import BackendError, InputError, UnsupportedError  # noqa: E402
from edgec.core.registry import get_backend  # noqa: E402

RNG = np.random.default_rng(0)


def tiny_cnn(batch="N") -> onnx.ModelProto:
    """Conv-ReLU-Conv-ReLU-GAP-Gemm on 3x16x16 with a symbolic batch: enough to exercise INT8 fusion."""
    rng = np.random.default_rng(1)
    inits = [
        onh.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "w1"),
        onh.from_array((rng.standard_normal(8) * 0.1).astype(np.float32), "b1"),
        onh.from_array((rng.standard_normal((16, 8, 3, 3)) * 0.2).astype(np.float32), "w2"),
        onh.from_array((rng.standard_normal(16) * 0.1).astype(np.float32), "b2"),
        onh.from_array((rng.standard_normal((16, 10)) * 0.3).astype(np.float32), "wf"),
        onh.from_array((rng.standard_normal(10) * 0.1).astype(np.float32), "bf"),
    ]
    nodes = [
        oh.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        oh.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        oh.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv2"),
        oh.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        oh.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
        oh.make_node("Flatten", ["g"], ["f"], name="flatten"),
        oh.make_node("Gemm", ["f", "wf", "bf"], ["logits"], name="fc"),
    ]
    graph = oh.make_graph(nodes, "tiny", [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [batch, 3, 16, 16])],
                          [oh.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [batch, 10])], inits)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def ort_run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def qdq_model(model: onnx.ModelProto, calib: np.ndarray, tmp_path: Path) -> onnx.ModelProto:
    """A stand-in for the core's Q/DQ model: onnxruntime static QDQ, per-channel, u8 activations / s8 weights."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"x": x[None]}

    src, dst = tmp_path / "fp32.onnx", tmp_path / "qdq.onnx"
    onnx.save(model, src)
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return onnx.load(dst)


def cosine(a, b) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


MANIFEST_IO = {"inputs": [{"name": "x", "dtype": "float32", "shape": ["N", 3, 16, 16]}],
               "outputs": [{"name": "logits", "dtype": "float32", "shape": ["N", 10]}]}


def build(backend, model, precision, out_dir, options=None, source=None, **ctx_kw):
    """Compile the way the core does: calibrate (may replace the model), lower, then load from the manifest."""
    opts = backend.validate_options(options or {})
    ctx = LoweringContext(model=model, source_model=source if source is not None else model, precision=precision,
                          out_dir=out_dir, options=opts, **ctx_kw)
    own = backend.calibrate(ctx)
    if own is not None:
        ctx.model = own
    files = backend.lower(ctx)
    manifest = {"precision": precision, "options": opts, **MANIFEST_IO}
    return ctx, files, manifest


@pytest.fixture(scope="module")
def backend():
    return get_backend("openvino")


@pytest.fixture(scope="module")
def images():
    return RNG.random((32, 3, 16, 16), dtype=np.float32)


def test_registered_through_entry_point(backend):
    from edgec.backends.openvino.backend import OpenVINOBackend

    assert isinstance(backend, OpenVINOBackend)
    assert backend.available().ok
    assert backend.toolchain()["openvino"] == ov.get_version()
    assert backend.requirements.precisions == ("fp32", "fp16", "int8")


def test_fp32_matches_onnxruntime(backend, images, tmp_path):
    model = tiny_cnn()
    ctx, files, manifest = build(backend, model, "fp32", tmp_path)
    assert files == ["model.xml", "model.bin"] and all((tmp_path / f).stat().st_size > 0 for f in files)
    assert ctx.info["device"] == "CPU" and ctx.info["inference_precision"] == "f32"
    runner = backend.load(tmp_path, manifest, threads=1)
    assert [s.name for s in runner.inputs] == ["x"] and runner.inputs[0].shape == (1, 3, 16, 16)
    for x in images[:4]:
        got = runner.run({"x": x[None]})["logits"]
        np.testing.assert_allclose(got, ort_run(model, x[None]), rtol=1e-4, atol=1e-5)
    info = backend.layer_info(runner)
    assert info["compiled_properties"]["inference_precision_hint"] == "f32"
    assert info["compute_layers_by_precision"].get("I8", 0) == 0
    assert info["int8_compute_fraction"] == 0.0
    json.dumps(info)  # lands in the manifest


def test_dynamic_batch_serves_any_batch(backend, images, tmp_path):
    model = tiny_cnn()
    _, _, manifest = build(backend, model, "fp32", tmp_path, {"dynamic_batch": "true"})
    runner = backend.load(tmp_path, manifest)
    assert runner.inputs[0].shape == ("?", 3, 16, 16)
    got = runner.run({"x": images[:5]})["logits"]
    assert got.shape == (5, 10)
    np.testing.assert_allclose(got, ort_run(model, images[:5]), rtol=1e-4, atol=1e-5)


def test_static_batch_size_option(backend, images, tmp_path):
    _, _, manifest = build(backend, tiny_cnn(), "fp32", tmp_path, {"batch": 4})
    runner = backend.load(tmp_path, manifest)
    assert runner.inputs[0].shape == (4, 3, 16, 16)
    assert runner.run({"x": images[:4]})["logits"].shape == (4, 10)


def test_fp16_compresses_weights_and_uses_half_kernels(backend, images, tmp_path):
    model = tiny_cnn()
    build(backend, model, "fp32", tmp_path / "fp32")
    ctx, _, manifest = build(backend, model, "fp16", tmp_path / "fp16")
    ratio = (tmp_path / "fp16" / "model.bin").stat().st_size / (tmp_path / "fp32" / "model.bin").stat().st_size
    assert 0.45 < ratio < 0.6, ratio
    assert ctx.info["weights"] == "fp16"
    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    expected = "bf16" if "BF16" in caps else ("f16" if "FP16" in caps else "f32")
    assert ctx.info["inference_precision"] == expected
    runner = backend.load(tmp_path / "fp16", manifest, threads=1)
    info = backend.layer_info(runner)
    assert info["compiled_properties"]["inference_precision_hint"] == expected
    if expected == "bf16":
        assert info["compute_layers_by_precision"].get("BF16", 0) >= 3
    x = images[:8]
    got = np.concatenate([runner.run({"x": xi[None]})["logits"] for xi in x])
    assert cosine(got, ort_run(model, x)) > 0.999


def test_fp16_weights_only_with_f32_kernels(backend, images, tmp_path):
    model = tiny_cnn()
    ctx, _, manifest = build(backend, model, "fp16", tmp_path, {"inference_precision": "fp32"})
    assert ctx.info["inference_precision"] == "f32"
    runner = backend.load(tmp_path, manifest)
    assert backend.layer_info(runner)["compiled_properties"]["inference_precision_hint"] == "f32"
    got = runner.run({"x": images[:1]})["logits"]
    # Only the fp16 rounding of weights remains: close, but not bit-exact.
    np.testing.assert_allclose(got, ort_run(model, images[:1]), rtol=5e-3, atol=5e-3)


def test_int8_qdq_runs_int8_kernels(backend, images, tmp_path):
    fp32 = tiny_cnn()
    qdq = qdq_model(fp32, images[:16], tmp_path)
    ctx, _, manifest = build(backend, qdq, "int8", tmp_path / "art", source=fp32)
    assert ctx.info["int8_source"] == "core Q/DQ -> FakeQuantize"
    runner = backend.load(tmp_path / "art", manifest, threads=1)
    info = backend.layer_info(runner)
    # Both convolutions and the classifier run in INT8 kernels, none fell back to FP32.
    assert info["compute_layers_by_precision"] == {"I8": 3}, info
    assert info["int8_compute_fraction"] == 1.0 and info["compute_layers_not_int8"] == []
    x = images[16:]
    got = np.concatenate([runner.run({"x": xi[None]})["logits"] for xi in x])
    assert cosine(got, ort_run(fp32, x)) > 0.99
    # OpenVINO's INT8 kernels agree with onnxruntime running the same Q/DQ graph.
    assert cosine(got, ort_run(qdq, x)) > 0.999


def test_nncf_calibrator(backend, images, tmp_path):
    fp32 = tiny_cnn()
    calib = ArrayDataset({"x": images[:16]})
    ctx, _, manifest = build(backend, fp32, "int8", tmp_path, {"calibrator": "nncf"}, calibration=calib)
    assert ctx.info["int8_source"] == "nncf"
    assert ctx.info["calibration"]["fake_quantize_nodes"] >= 3
    assert ctx.info["calibration"]["subset_size"] == 16
    runner = backend.load(tmp_path, manifest)
    info = backend.layer_info(runner)
    assert info["compute_layers_by_precision"].get("I8", 0) >= 2, info
    x = images[16:]
    got = np.concatenate([runner.run({"x": xi[None]})["logits"] for xi in x])
    assert cosine(got, ort_run(fp32, x)) > 0.99


def test_nncf_accuracy_control_needs_labels(backend, images, tmp_path):
    fp32 = tiny_cnn()
    with pytest.raises(InputError, match="labelled validation"):
        build(backend, fp32, "int8", tmp_path, {"calibrator": "nncf"}, calibration=ArrayDataset({"x": images[:8]}),
              validation=ArrayDataset({"x": images[8:16]}), max_drop=1.0)


def test_nncf_accuracy_control(backend, images, tmp_path):
    fp32 = tiny_cnn()
    labels = ort_run(fp32, images).argmax(1)
    ctx, _, manifest = build(backend, fp32, "int8", tmp_path, {"calibrator": "nncf"},
                             calibration=ArrayDataset({"x": images[:16]}),
                             validation=ArrayDataset({"x": images}, labels), max_drop=5.0)
    report = ctx.info["calibration"]
    assert report["max_drop_top1_points"] == 5.0 and report["validation_samples"] == 32
    runner = backend.load(tmp_path, manifest)
    preds = np.array([runner.run({"x": xi[None]})["logits"].argmax() for xi in images])
    assert (preds == labels).mean() >= 0.95 - 1e-9  # within the 5-point budget of FP32 (100 % on its own labels)


def test_core_calibrator_without_data_leaves_the_model_alone(backend, tmp_path):
    """No --calib: nothing to calibrate with, so a Q/DQ model made elsewhere passes through (and the
    compile flow's core path raises its "int8 needs calibration data" error for an FP32 one)."""
    ctx = LoweringContext(model=tiny_cnn(), source_model=tiny_cnn(), precision="int8", out_dir=tmp_path,
                          options=backend.validate_options({}))
    assert backend.calibrate(ctx) is None


def stem_cnn() -> onnx.ModelProto:
    """The shape of EfficientNet-Lite's stem: a 3x3 conv with large (BN-folded) weights on an 8-bit
    exact input, ReLU6, then a small head. Weight rounding, not activations, dominates its error."""
    rng = np.random.default_rng(2)
    inits = [
        onh.from_array((rng.standard_normal((16, 3, 3, 3)) * 3.0).astype(np.float32), "w1"),
        onh.from_array((rng.standard_normal(16) * 0.5).astype(np.float32), "b1"),
        onh.from_array(np.float32(0.0), "lo"), onh.from_array(np.float32(6.0), "hi"),
        onh.from_array((rng.standard_normal((16, 16, 1, 1)) * 0.3).astype(np.float32), "w2"),
        onh.from_array((rng.standard_normal(16) * 0.1).astype(np.float32), "b2"),
        onh.from_array((rng.standard_normal((16, 10)) * 0.3).astype(np.float32), "wf"),
        onh.from_array((rng.standard_normal(10) * 0.1).astype(np.float32), "bf"),
    ]
    nodes = [
        oh.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2], name="stem"),
        oh.make_node("Clip", ["c1", "lo", "hi"], ["r1"], name="relu6"),
        oh.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="project"),
        oh.make_node("GlobalAveragePool", ["c2"], ["g"], name="gap"),
        oh.make_node("Flatten", ["g"], ["f"], name="flatten"),
        oh.make_node("Gemm", ["f", "wf", "bf"], ["logits"], name="fc"),
    ]
    graph = oh.make_graph(nodes, "stem", [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 16, 16])],
                          [oh.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 10])], inits)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def smooth_images(n: int, seed: int) -> np.ndarray:
    """Photo-like inputs: neighbouring pixels correlated (4x4 noise upsampled, plus fine texture), on
    the (k - 127) / 128 grid: GPTQ trades rounding error between correlated inputs."""
    rng = np.random.default_rng(seed)
    low = rng.random((n, 3, 4, 4))
    big = np.repeat(np.repeat(low, 4, axis=2), 4, axis=3) + 0.3 * rng.random((n, 3, 16, 16))
    k = np.round(np.clip(big / 1.3, 0, 1) * 255)
    return ((k - 127) / 128).astype(np.float32)


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: onh.to_array(t) for t in model.graph.initializer}


def test_core_int8_default_rounds_weights_for_output_error(backend, images, tmp_path):
    """calibrator=core asks the core for GPTQ weight rounding by default: the same Q/DQ grid (scales,
    zero points, so the same kernels and speed) with other integers, and a lower output error than
    round-to-nearest on images it was not calibrated on."""
    fp32 = stem_cnn()
    calib = ArrayDataset({"x": smooth_images(32, 0)})
    x = smooth_images(32, 1)
    ref = ort_run(fp32, x)
    models, errors = {}, {}
    for rounding in ("gptq", "nearest"):
        opts = {} if rounding == "gptq" else {"weight_rounding": "nearest"}
        ctx, _, manifest = build(backend, fp32, "int8", tmp_path / rounding, opts, calibration=calib)
        report = ctx.info["calibration"]
        assert ("weight_rounding" in report) == (rounding == "gptq"), report
        assert ctx.info["int8_source"] == "core Q/DQ -> FakeQuantize"
        models[rounding] = _initializers(ctx.model)
        runner = backend.load(tmp_path / rounding, manifest, threads=1)
        assert backend.layer_info(runner)["compute_layers_by_precision"] == {"I8": 3}
        got = np.concatenate([runner.run({"x": xi[None]})["logits"] for xi in x])
        errors[rounding] = float(np.mean((got - ref) ** 2) / np.mean(ref ** 2))
    g, n = models["gptq"], models["nearest"]
    grid = [k for k in g if k.endswith(("_scale", "_zero_point"))]
    assert grid and sorted(grid) == sorted(k for k in n if k.endswith(("_scale", "_zero_point")))
    for k in grid:
        np.testing.assert_array_equal(g[k], n[k])
    weights = [k for k in g if k.endswith("_quantized") and g[k].dtype == np.int8]
    assert any(not np.array_equal(g[k], n[k]) for k in weights)
    assert errors["gptq"] < errors["nearest"], errors


def test_missing_device_names_the_ones_present(backend, tmp_path):
    with pytest.raises(BackendError, match=r"'XPU9' is not present.*available: .*CPU"):
        build(backend, tiny_cnn(), "fp32", tmp_path, {"device": "XPU9"})
    with pytest.raises(BackendError, match="not present"):
        build(backend, tiny_cnn(), "fp32", tmp_path, {"device": "AUTO:XPU9"})


def test_load_time_options_are_checked(backend, tmp_path):
    _, _, manifest = build(backend, tiny_cnn(), "fp32", tmp_path)
    with pytest.raises(BackendError, match="'XPU9' is not present"):
        backend.load(tmp_path, manifest, device="XPU9")
    with pytest.raises(InputError, match="has no option 'turbo'"):
        backend.load(tmp_path, manifest, turbo=True)


def test_missing_device_fails_before_nncf_calibration(backend, images, tmp_path, monkeypatch):
    from edgec.backends.openvino import nncf_calibrate

    monkeypatch.setattr(nncf_calibrate, "quantize", lambda *a, **k: pytest.fail("calibrated for a missing device"))
    ctx = LoweringContext(model=tiny_cnn(), source_model=tiny_cnn(), precision="int8", out_dir=tmp_path,
                          options=backend.validate_options({"calibrator": "nncf", "device": "XPU9"}),
                          calibration=ArrayDataset({"x": images[:4]}))
    with pytest.raises(BackendError, match="XPU9"):
        backend.calibrate(ctx)


def test_auto_device_and_throughput_hint(backend, images, tmp_path):
    ctx, _, manifest = build(backend, tiny_cnn(), "fp32", tmp_path, {"device": "auto", "hint": "throughput"})
    assert ctx.info["device"] == "AUTO" and ctx.info["performance_hint"] == "THROUGHPUT"
    runner = backend.load(tmp_path, manifest)
    assert runner.run({"x": images[:1]})["logits"].shape == (1, 10)
    assert backend.layer_info(runner)["compiled_properties"]["performance_hint"] == "THROUGHPUT"


@pytest.mark.parametrize("options, match", [
    ({"hint": "fastest"}, "hint='fastest' is not one of"),
    ({"dynamic_batch": "maybe"}, "not a boolean"),
    ({"calibrator": "magic"}, "calibrator='magic'"),
    ({"weight_rounding": "adaround"}, "weight_rounding='adaround'"),
    ({"inference_precision": "int4"}, "inference_precision='int4'"),
    ({"batch": 0}, "batch=0 must be >= 1"),
    ({"threads": 2}, "has no option 'threads'"),
])
def test_bad_options_are_one_line_input_errors(backend, options, match):
    with pytest.raises(InputError, match=match) as e:
        backend.validate_options(options)
    assert "\n" not in str(e.value)


def test_bf16_only_where_the_cpu_has_it(backend, images, tmp_path):
    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "BF16" in caps:
        _, _, manifest = build(backend, tiny_cnn(), "fp32", tmp_path, {"inference_precision": "bf16"})
        runner = backend.load(tmp_path, manifest)
        assert backend.layer_info(runner)["compiled_properties"]["inference_precision_hint"] == "bf16"
    else:
        with pytest.raises(BackendError, match="has no bf16 kernels"):
            build(backend, tiny_cnn(), "fp32", tmp_path, {"inference_precision": "bf16"})


def test_unsupported_op_is_named(backend, tmp_path):
    graph = oh.make_graph([oh.make_node("Relu", ["x"], ["t"]), oh.make_node("Frobnicate", ["t"], ["y"], domain="com.example")],
                          "g", [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
                          [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid("com.example", 1)])
    with pytest.raises(UnsupportedError, match="Frobnicate") as e:
        build(backend, model, "fp32", tmp_path)
    assert "\n" not in str(e.value)


def test_benchmark_statistics(backend, images, tmp_path):
    _, _, manifest = build(backend, tiny_cnn(), "fp32", tmp_path)
    runner = backend.load(tmp_path, manifest, threads=1)
    stats = runner.benchmark({"x": images[:1]}, runs=20, warmup=3)
    assert stats.runs == 20 and stats.threads == 1
    assert 0 < stats.min_ms <= stats.median_ms <= stats.p90_ms
    assert runner.time_once({"x": images[:1]}) > 0
    assert backend.layer_info(runner)["compiled_properties"]["inference_num_threads"] == "1"


def test_missing_input_is_an_input_error(backend, tmp_path):
    _, _, manifest = build(backend, tiny_cnn(), "fp32", tmp_path)
    runner = backend.load(tmp_path, manifest)
    with pytest.raises(InputError, match="missing input 'x'"):
        runner.run({"y": np.zeros((1, 3, 16, 16), np.float32)})


def test_plugin_module_does_not_import_openvino():
    import subprocess
    import sys

    code = ("import sys; import edgec.backends.openvino.plugin as p; p.edgec_backends; "
            "print('openvino' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


# ---------------------------------------------------------------- end to end through edgec.compile / the CLI
@pytest.fixture()
def tiny_files(tmp_path, images):
    model_path = tmp_path / "tiny.onnx"
    onnx.save(tiny_cnn(), model_path)
    labels = ort_run(tiny_cnn(), images).argmax(1)
    np.savez(tmp_path / "calib.npz", x=images[:16])
    np.savez(tmp_path / "val.npz", x=images[16:], labels=labels[16:])
    return model_path, tmp_path / "calib.npz", tmp_path / "val.npz"


def test_compile_fp32_manifest_records_openvino(tiny_files, tmp_path):
    import edgec

    model_path, _, val = tiny_files
    art = edgec.compile(model_path, backend="openvino", precision="fp32", validation=val, output=tmp_path / "art",
                        options={"hint": "latency"})
    m = art.manifest
    assert sorted(p.name for p in art.path.iterdir()) == ["manifest.json", "model.bin", "model.xml"]
    assert m["toolchain"]["openvino"] == ov.get_version()
    assert m["validation"]["passed"] and m["validation"]["cosine"] > 0.9999
    info = m["backend_info"]
    assert info["device"] == "CPU" and info["performance_hint"] == "LATENCY" and info["inference_precision"] == "f32"
    assert info["layers"]["compute_layers_by_precision"] == {"FP32": 3}
    # The artifact loads again from disk through the public API, with the same numbers.
    runner = edgec.load(art.path, threads=1)
    np.testing.assert_allclose(runner.run({"x": np.load(val)["x"][:1]})["logits"],
                               ort_run(tiny_cnn(), np.load(val)["x"][:1]), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("calibrator", ["core", "nncf"])
def test_compile_int8_runs_int8_kernels(tiny_files, tmp_path, calibrator):
    import edgec

    model_path, calib, val = tiny_files
    art = edgec.compile(model_path, backend="openvino", precision="int8", calibration=calib, validation=val,
                        output=tmp_path / "art", options={"calibrator": calibrator})
    m = art.manifest
    assert m["validation"]["passed"], m["validation"]
    layers = m["backend_info"]["layers"]
    assert layers["compute_layers_by_precision"].get("I8", 0) >= 2, layers
    expected_source = "nncf" if calibrator == "nncf" else "core Q/DQ -> FakeQuantize"
    assert m["backend_info"]["int8_source"] == expected_source
    if calibrator == "nncf":
        assert m["quantization"]["calibrator"].startswith("nncf") and m["quantization"]["fake_quantize_nodes"] >= 3



def test_min_agreement_goes_to_the_openvino_repair_or_is_refused(tiny_files, tmp_path):
    """--min-agreement is never dropped silently: calibrator=core hands it to this backend's repair (the
    demand lands in the manifest), calibrator=nncf refuses it in one line before any calibration."""
    import edgec
    from edgec.core.errors import InputError

    model_path, calib, val = tiny_files
    art = edgec.compile(model_path, backend="openvino", precision="int8", calibration=calib, validation=val,
                        output=tmp_path / "art", min_agreement=100.0)
    md = art.manifest["quantization"]["max_drop"]
    assert md["min_agreement"] == 100.0 and md["scored_on"] == "openvino CPU"
    assert md["met_estimate"] == (md["final_estimate"]["agreement_bound"] >= 100.0)
    assert md["met"] == (md["measured"]["agreement"] >= 100.0)
    assert art.manifest["validation"]["passed"]
    with pytest.raises(InputError, match="min-agreement"):
        edgec.compile(model_path, backend="openvino", precision="int8", calibration=calib, validation=val,
                      output=tmp_path / "nncf", options={"calibrator": "nncf"}, min_agreement=99.0)
    assert not (tmp_path / "nncf").exists()

def test_compile_fp16_keeps_fp32_io_and_halves_weights(tiny_files, tmp_path):
    import edgec

    model_path, _, val = tiny_files
    art = edgec.compile(model_path, backend="openvino", precision="fp16", validation=val, output=tmp_path / "art")
    assert art.manifest["validation"]["passed"]
    assert art.manifest["backend_info"]["weights"] == "fp16"
    runner = edgec.load(art.path)
    assert runner.inputs[0].dtype == "float32" and runner.outputs[0].dtype == "float32"


def test_cli_missing_device_exits_2_naming_devices(tiny_files, tmp_path, run_cli):
    model_path, _, _ = tiny_files
    code, _, err = run_cli("compile", model_path, "--backend", "openvino", "--device", "XPU9", "-o", tmp_path / "art")
    assert code == 2, err
    assert "XPU9" in err and "CPU" in err
    assert not (tmp_path / "art").exists()


def test_cli_json_stdout_stays_clean_with_nncf(tiny_files, tmp_path):
    """NNCF draws progress bars on stdout; `--json` must still print only the manifest there."""
    import subprocess
    import sys

    model_path, calib, _ = tiny_files
    proc = subprocess.run([sys.executable, "-m", "edgec.core.cli", "compile", str(model_path), "--backend", "openvino",
                           "--precision", "int8", "--calib", str(calib), "-O", "calibrator=nncf", "--json",
                           "-o", str(tmp_path / "art")], capture_output=True, text=True,
                          env={**os.environ, "EDGEC_PROGRESS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = json.loads(proc.stdout)
    assert manifest["backend_info"]["int8_source"] == "nncf"
    assert manifest["backend_info"]["layers"]["compute_layers_by_precision"].get("I8", 0) >= 2


def test_latency_aware_ranking_prefers_cheap_layers():
    from edgec.backends.openvino.repair import rank

    sens = [{"node": "stem", "nmse": 4e-3}, {"node": "late_dw", "nmse": 1e-3}, {"node": "head", "nmse": 5e-4}]
    ranked = rank(sens, {"stem": 200.0, "late_dw": 10.0, "head": 500.0})
    # 1e-3 / 10 us beats 4e-3 / 200 us: the cheap late layer is tried before the sensitive stem.
    assert [r["node"] for r in ranked] == ["late_dw", "stem", "head"]
    assert ranked[0]["cost_us"] == 10.0


def test_latency_costs_come_from_openvino_profiling(images):
    from edgec.backends.openvino.repair import latency_costs

    fp32 = tiny_cnn()
    calib = images[:16]
    from edgec.core.quantization import quantize

    qm = quantize(fp32, "int8", flavour=_ov_flavour(),
                  calibration=ArrayDataset({"x": calib}), cache_dir=False, progress=False).model
    costs = latency_costs(fp32, qm, {"x": images[:1]}, {"conv1": ["conv1", "c1"], "conv2": ["conv2", "c2"],
                                                        "fc": ["fc", "logits"]})
    assert costs["int8_total_us"] > 0 and costs["fp32_total_us"] > 0
    assert set(costs["us"]) == {"conv1", "conv2", "fc"} and all(c > 0 for c in costs["us"].values())


def test_max_drop_keeps_layers_openvino_then_runs_in_fp32(backend, tmp_path, monkeypatch):
    """--max-drop with calibrator=core: candidates in gain-per-microsecond order, scored on OpenVINO, and
    the layers it keeps really execute in FP32 kernels in the compiled model while the rest stay I8.
    The per-layer costs are pinned here (profiling a 3-layer model is all noise, and with 3 layers the
    repair tries only the first candidate); test_latency_costs_* covers the profiling."""
    from edgec.backends.openvino import repair

    costs = {"stem": 50.0, "project": 20.0, "fc": 1.0}
    monkeypatch.setattr(repair, "latency_costs", lambda *a, **k: {"us": costs, "int8_total_us": 100.0,
                                                                   "fp32_total_us": 200.0})
    fp32 = stem_cnn()
    val = smooth_images(200, 3)
    labels = ort_run(fp32, val).argmax(1)
    ctx, _, manifest = build(backend, fp32, "int8", tmp_path, calibration=ArrayDataset({"x": smooth_images(32, 0)}),
                             validation=ArrayDataset({"x": val}, labels), max_drop=0.0)
    md = ctx.info["calibration"]["max_drop"]
    assert md["scored_on"] == "openvino CPU" and md["metric"] == "top1" and md["validation_samples"] == 200
    # INT8 puts this model's near-tied images at risk (a smooth drop bound well above 0, whatever the raw
    # count on these 200 images says), and keeping a layer lowers that bound (seeds fixed).
    assert md["initial_estimate"]["drop_bound"] > 0.5 and md["initial_drop"] == md["steps"][0]["drop"]
    assert md["final_estimate"]["drop_bound"] < md["initial_estimate"]["drop_bound"]
    assert md["steps"][1]["layer"] == "fc"  # the cheapest layer with any sensitivity is tried first
    accepted = [s["layer"] for s in md["steps"][1:] if s["accepted"]]
    assert md["kept_fp32"] == accepted and accepted
    assert all(s["cost_us"] > 0 for s in md["steps"][1:])
    final = [md["steps"][0]] + [s for s in md["steps"][1:] if s["accepted"]]
    assert final[-1]["nmse"] < final[0]["nmse"]  # the layers it kept lowered the output error too
    # Judged on the core's smooth bound: each kept layer lowered it, and `met` is the bound vs the budget.
    assert all(b["drop_bound"] < a["drop_bound"] for a, b in itertools.pairwise(final))
    assert md["final_estimate"]["drop_bound"] == final[-1]["drop_bound"]
    assert md["met"] == (md["final_estimate"]["drop_bound"] <= 0.0) and md["confidence_z"] > 0
    assert md["latency_vs_all_int8"] > 0
    assert md["estimated_latency_vs_all_int8"] == round(1 + sum(costs[k] for k in accepted) / 100.0, 3)
    info = backend.layer_info(backend.load(tmp_path, manifest, threads=1))
    assert info["compute_layers_by_precision"] == {"FP32": len(accepted), "I8": 3 - len(accepted)}, info
    outputs = {n.name: n.output[0] for n in fp32.graph.node}
    for name in accepted:  # the runtime graph names a layer after the node or (Gemm) its output
        assert any(name in n or outputs[name] in n for n in info["compute_layers_not_int8"]), (name, info)


def _ov_flavour():
    """The flavour the backend's calibrate() asks for on this host (7-bit weights on x86 without VNNI)."""
    be = get_backend("openvino")
    return be.quant_flavour(be.validate_options({}))


def test_max_drop_builds_the_core_int8_models(backend, tmp_path, monkeypatch):
    """The repair takes calibration, GPTQ table and bias deltas from the core's prepare_int8: with nothing
    kept its model is byte for byte quantize()'s, and with layers kept it is quantize(keep_fp32=kept)'s.
    (A copy of the sequence that drifted from the core would fail here.)"""
    from edgec.backends.openvino import repair
    from edgec.core.quantization import quantize

    monkeypatch.setattr(repair, "latency_costs", lambda *a, **k: {"us": {"stem": 50.0, "project": 20.0, "fc": 1.0},
                                                                   "int8_total_us": 100.0, "fp32_total_us": 200.0})
    fp32 = stem_cnn()
    calib = ArrayDataset({"x": smooth_images(32, 0)})
    val = smooth_images(200, 3)
    labels = ort_run(fp32, val).argmax(1)
    for budget, what in ((100.0, "met at once"), (0.0, "keeps a layer")):
        ctx = LoweringContext(model=fp32, source_model=fp32, precision="int8", out_dir=tmp_path,
                              options=backend.validate_options({}), calibration=calib,
                              validation=ArrayDataset({"x": val}, labels), max_drop=budget, calib_method="auto")
        q, report = repair.max_drop(ctx, _ov_flavour(), "gptq", budget)
        kept = report["max_drop"]["kept_fp32"]
        assert bool(kept) == (budget == 0.0), (what, report["max_drop"])
        core = quantize(fp32, "int8", flavour=_ov_flavour(), calibration=calib, weight_rounding=True,
                        keep_fp32=kept, progress=False)
        assert q.SerializeToString() == core.model.SerializeToString(), what
        # The counts of rounded and corrected layers differ once layers are kept (the core leaves
        # excluded layers out of both), the models do not.
        for key in ("calibration", "flavour") + (("weight_rounding", "bias_correction") if not kept else ()):
            # the parts cache makes the second computation a hit; what was computed must be the same
            assert _sans_cache(report[key]) == _sans_cache(core.report[key]), key


@pytest.mark.parametrize("demand", ["max_drop", "min_agreement"])
def test_max_drop_accepts_on_the_smooth_bound_not_on_flips(backend, tmp_path, monkeypatch, demand):
    """A candidate that flips fewer validation images but has a worse bound is refused; one that lowers the
    bound is kept, and the loop stops once the bound meets the demand (drop_bound <= max_drop or
    agreement_bound >= min_agreement), whatever the raw counts say. The scores are scripted so that raw
    counts and bounds disagree; the rest (calibration, sensitivity, models) runs for real."""
    from edgec.backends.openvino import repair

    monkeypatch.setattr(repair, "MAX_FRACTION", 1.0)
    monkeypatch.setattr(repair, "latency_costs", lambda *a, **k: {"us": {"stem": 50.0, "project": 20.0, "fc": 1.0},
                                                                   "int8_total_us": 100.0, "fp32_total_us": 200.0})
    monkeypatch.setattr(repair, "latency_ratio", lambda *a, **k: 1.0)

    def row(drop, bound, per=None):  # agreement mirrors the drop, as on unlabelled data
        per = np.full(40, bound - 0.2) if per is None else np.asarray(per, float)
        return {"drop": drop, "nmse": 1e-3, "agreement": 100 - drop, "est_agreement": 100 - bound + 0.2,
                "agreement_bound": 100 - bound, "est_drop": bound - 0.2, "drop_bound": bound, "per_image": per}

    noisy = 1.3 + np.where(np.arange(40) % 2, 4.0, -4.0)  # 0.5 below all-INT8's 1.8 on average, +-4 per image
    script = iter([row(3.0, 2.0),   # all INT8: bound 2.0 misses the demand
                   row(1.0, 2.5),   # fewer flips, worse bound: refused
                   row(3.0, 1.0, noisy),  # bound meets the demand, but the paired gain (0.5 +- 0.64) is
                   # not resolved on 40 images: refused
                   row(3.0, 1.0),   # same flips, better bound that meets the demand, same gain on every image: kept, stop
                   row(0.0, 0.0)])  # never reached
    monkeypatch.setattr(repair.OVScorer, "assess", lambda self, model: next(script))
    fp32 = stem_cnn()
    ctx = LoweringContext(model=fp32, source_model=fp32, precision="int8", out_dir=tmp_path,
                          options=backend.validate_options({}), calibration=ArrayDataset({"x": smooth_images(32, 0)}),
                          validation=ArrayDataset({"x": smooth_images(40, 3)}))
    budget, agreement = (1.2, None) if demand == "max_drop" else (None, 98.8)
    _, report = repair.max_drop(ctx, _ov_flavour(), "gptq", budget, min_agreement=agreement)
    md = report["max_drop"]
    assert [s["accepted"] for s in md["steps"]] == [True, False, False, True]
    assert md["steps"][2]["gain"] == pytest.approx(0.5, abs=0.01) and md["steps"][2]["gain_se"] > 0.5
    assert md["kept_fp32"] == [md["steps"][3]["layer"]] and md["met"]
    assert md["final_drop"] == 3.0 and md["final_estimate"]["drop_bound"] == 1.0
    assert md["steps"][1]["drop"] == 1.0  # the raw count stays in the report
    assert md["budget"] == budget and md["min_agreement"] == agreement


def test_weight_range_follows_the_host_for_the_cpu_device(monkeypatch):
    from edgec.core import host

    be = get_backend("openvino")
    monkeypatch.setattr(host.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(host, "cpu_flags", lambda: frozenset({"avx2"}))
    assert be.quant_flavour(be.validate_options({})).reduce_range is True
    assert be.quant_flavour(be.validate_options({"device": "GPU"})).reduce_range is False
    assert be.quant_flavour(be.validate_options({"weight_range": "full"})).reduce_range is False
    monkeypatch.setattr(host, "cpu_flags", lambda: frozenset({"avx2", "avx512_vnni"}))
    assert be.quant_flavour(be.validate_options({})).reduce_range is False
    assert be.quant_flavour(be.validate_options({"weight_range": "reduced"})).reduce_range is True


def _sans_cache(entry):
    return {k: v for k, v in entry.items() if not k.endswith("cache")} if isinstance(entry, dict) else entry
