"""OpenVINO backend on tiny models built here, run on the real OpenVINO runtime (CPU)."""
from __future__ import annotations

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


def test_core_calibrator_leaves_int8_to_core(backend, tmp_path):
    ctx = LoweringContext(model=tiny_cnn(), source_model=tiny_cnn(), precision="int8", out_dir=tmp_path,
                          options=backend.validate_options({}))
    assert backend.calibrate(ctx) is None


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


def test_compile_fp16_keeps_fp32_io_and_halves_weights(tiny_files, tmp_path):
    import edgec

    model_path, _, val = tiny_files
    art = edgec.compile(model_path, backend="openvino", precision="fp16", validation=val, output=tmp_path / "art")
    assert art.manifest["validation"]["passed"]
    assert art.manifest["backend_info"]["weights"] == "fp16"
    runner = edgec.load(art.path)
    assert runner.inputs[0].dtype == "float32" and runner.outputs[0].dtype == "float32"


def test_cli_missing_device_exits_2_naming_devices(tiny_files, tmp_path):
    import subprocess
    import sys

    model_path, _, _ = tiny_files
    proc = subprocess.run([sys.executable, "-m", "edgec.core.cli", "compile", str(model_path), "--backend", "openvino",
                           "--device", "XPU9", "-o", str(tmp_path / "art")], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "XPU9" in proc.stderr and "CPU" in proc.stderr
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
