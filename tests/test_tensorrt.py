"""TensorRT backend: real engine builds (TensorRT-RTX's ahead-of-time builder runs without a GPU) on tiny
models made here; engine-running tests need a GPU and skip without one."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh
import pytest

from edgec.core.errors import BackendError, InputError, UnsupportedError
from edgec.core.registry import get_backend

tc_mod = pytest.importorskip("edgec.backends.tensorrt.toolchain")
if "tensorrt-rtx" not in tc_mod.installed():
    pytest.skip("TensorRT-RTX not installed: pip install 'edgec[tensorrt]'", allow_module_level=True)

from edgec.backends.tensorrt import config, network, qdq_check, targets, toolchain  # noqa: E402

GPU = toolchain.gpu()
needs_gpu = pytest.mark.skipif(not GPU.present, reason=GPU.reason)  # "no GPU (...)"
# One compute capability, ahead of time (RTX is what the extra installs; standard TensorRT could only build
# for the GPU in the machine).
SM89 = {"target": "rtx-4090", "toolchain": "tensorrt-rtx"}


def tiny(batch=1, seed=1) -> onnx.ModelProto:
    """Conv-Relu, Conv-Relu, residual Add, Conv (stride 2), GAP, Gemm on 3x16x16."""
    rng = np.random.default_rng(seed)
    f = lambda *s, k=0.3: (rng.standard_normal(s) * k).astype(np.float32)  # noqa: E731
    inits = [onh.from_array(a, n) for n, a in [
        ("w1", f(8, 3, 3, 3)), ("b1", f(8, k=0.1)), ("w2", f(8, 8, 3, 3, k=0.2)), ("b2", f(8, k=0.1)),
        ("w3", f(16, 8, 3, 3, k=0.2)), ("b3", f(16, k=0.1)), ("wf", f(10, 16)), ("bf", f(10, k=0.1))]]
    nodes = [
        oh.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        oh.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        oh.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        oh.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        oh.make_node("Add", ["r1", "r2"], ["res"], name="add"),
        oh.make_node("Conv", ["res", "w3", "b3"], ["c3"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv3"),
        oh.make_node("Relu", ["c3"], ["r3"], name="relu3"),
        oh.make_node("GlobalAveragePool", ["r3"], ["g"], name="gap"),
        oh.make_node("Flatten", ["g"], ["flat"], name="flatten"),
        oh.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], transB=1, name="fc"),
    ]
    graph = oh.make_graph(nodes, "tiny", [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [batch, 3, 16, 16])],
                          [oh.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [batch, 10])], inits)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def backend():
    return get_backend("tensorrt")


@pytest.fixture()
def files(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((48, 3, 16, 16), dtype=np.float32)
    p = tmp_path / "tiny.onnx"
    onnx.save(tiny(), p)
    np.savez(tmp_path / "calib.npz", x=x[:32])
    np.savez(tmp_path / "val.npz", x=x[32:])
    return p, tmp_path / "calib.npz", tmp_path / "val.npz"


def compile_(path, out, precision="fp32", **kw):
    import edgec

    kw.setdefault("options", SM89)
    return edgec.compile(path, backend="tensorrt", precision=precision, output=out, **kw)


# ---------------------------------------------------------------- registration, availability

def test_plugin_module_does_not_import_tensorrt():
    code = ("import sys; import edgec.backends.tensorrt.plugin as p; p.edgec_backends; "
            "print(any(m.startswith('tensorrt') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_availability_says_build_only_without_a_gpu(backend):
    av = backend.available()
    assert av.ok
    assert av.can_run == GPU.present
    if not GPU.present:
        assert "build-only" in av.reason and "no GPU" in av.reason


def test_auto_toolchain_prefers_standard_tensorrt(monkeypatch):
    """auto picks standard TensorRT when it imports, else RTX; a missing explicit toolchain is one line."""
    rtx = toolchain._import("tensorrt-rtx")
    monkeypatch.setattr(toolchain, "_import", lambda name: rtx if name == "tensorrt-rtx" else None)
    assert toolchain.resolve("auto").name == "tensorrt-rtx"
    with pytest.raises(BackendError, match=r"toolchain=tensorrt is not installed .*pypi.nvidia.com"):
        toolchain.resolve("tensorrt")
    fake_std = (sys.modules["numpy"], "tensorrt")  # any module: only the choice is under test
    monkeypatch.setattr(toolchain, "_import", lambda name: fake_std if name == "tensorrt" else rtx)
    assert toolchain.resolve("auto").name == "tensorrt"
    assert toolchain.resolve("tensorrt-rtx").name == "tensorrt-rtx"


# ---------------------------------------------------------------- targets and options

def test_gpu_profiles_name_compute_capabilities():
    tc = toolchain.resolve("tensorrt-rtx")
    no_gpu = toolchain.Gpu(False, "no GPU (test)")
    assert targets.resolve("rtx-4090", tc, no_gpu).compute_capabilities == ["SM89"]
    assert targets.resolve("rtx-3090", tc, no_gpu).compute_capabilities == ["SM86"]
    assert targets.resolve("sm86,sm120", tc, no_gpu).compute_capabilities == ["SM86", "SM120"]
    auto = targets.resolve("auto", tc, no_gpu)
    assert "SM89" in auto.compute_capabilities and "SM75" not in auto.compute_capabilities
    with pytest.raises(UnsupportedError, match="needs tensorrt, not tensorrt-rtx.*JetPack"):
        targets.resolve("jetson-orin", tc, no_gpu)
    with pytest.raises(UnsupportedError, match="cannot build for SM90"):
        targets.resolve("sm90", tc, no_gpu)
    with pytest.raises(InputError, match="no GPU \\(tensorrt\\) section"):
        targets.resolve("rpi4", tc, no_gpu)
    assert "rtx-4090" in targets.gpu_profiles() and "jetson-orin" in targets.gpu_profiles()


def test_tvm_refuses_a_gpu_profile():
    pytest.importorskip("tvm")
    from edgec.backends.tvm import targets as tvm_targets

    with pytest.raises(InputError, match="GPU target"):
        tvm_targets.resolve("rtx-4090")


@pytest.mark.parametrize("options, error, match", [
    ({"toolchain": "tensorrt9"}, InputError, "toolchain='tensorrt9' is not one of"),
    ({"opt_level": 9}, InputError, "opt_level=9 must be 0..5"),
    ({"workspace": "lots"}, InputError, "workspace='lots' is not an integer"),
    ({"shapes": "x=1x3"}, InputError, "name:1x3x224x224"),
    ({"shapes": "x:1x3x16x16", "min_shapes": "x:1x3x16x16"}, InputError, "not both"),
    ({"log": "loud"}, InputError, "log='loud' is not one of"),
    ({"target": "sm90"}, UnsupportedError, "SM90"),
    ({"target": "gtx-480"}, InputError, r"unknown GPU target 'gtx-480' \(GPU profiles: jetson-orin, rtx-3090"),
    ({"dla_core": 0, "toolchain": "tensorrt-rtx"}, UnsupportedError, "no DLA"),
    ({"colour": "red"}, InputError, "has no option 'colour'"),
])
def test_bad_options_are_one_line_errors(backend, options, error, match):
    with pytest.raises(error, match=match) as e:
        backend.validate_options(options)
    assert "\n" not in str(e.value)


def test_profile_shapes():
    dyn = {"x": (-1, 3, 16, 16)}
    assert config.profile_shapes({"shapes": "x:2x3x16x16"}, dyn) == {"x": ((2, 3, 16, 16),) * 3}
    got = config.profile_shapes({"min_shapes": "x:1x3x16x16", "opt_shapes": "x:4x3x16x16",
                                 "max_shapes": "x:8x3x16x16"}, dyn)
    assert got == {"x": ((1, 3, 16, 16), (4, 3, 16, 16), (8, 3, 16, 16))}
    with pytest.raises(InputError, match=r"input 'x' has dynamic shape \?x3x16x16.*-O shapes=x:1x3x16x16"):
        config.profile_shapes({}, dyn)
    with pytest.raises(InputError, match="no opt_shapes"):
        config.profile_shapes({"min_shapes": "x:1x3x16x16", "max_shapes": "x:8x3x16x16"}, dyn)
    with pytest.raises(InputError, match="does not fit"):
        config.profile_shapes({"shapes": "x:1x4x16x16"}, dyn)
    with pytest.raises(InputError, match="min <= opt <= max"):
        config.profile_shapes({"min_shapes": "x:8x3x16x16", "opt_shapes": "x:4x3x16x16",
                               "max_shapes": "x:8x3x16x16"}, dyn)
    with pytest.raises(InputError, match="'y', which is not an input"):
        config.profile_shapes({"shapes": "x:1x3x16x16,y:1x2"}, dyn)
    static = {"x": (-1, 3, 16, 16), "s": (1, 4)}
    assert config.profile_shapes({"shapes": "x:2x3x16x16,s:1x4"}, static) == {"x": ((2, 3, 16, 16),) * 3}
    with pytest.raises(InputError, match="input 's' is static 1x4"):
        config.profile_shapes({"shapes": "x:2x3x16x16,s:2x4"}, static)


def test_timing_cache_lives_in_edgecs_cache(monkeypatch, tmp_path):
    """Standard TensorRT keys its timing cache by version and GPU under $EDGEC_CACHE_DIR/tensorrt; RTX has none."""
    from edgec.backends.tensorrt import build

    monkeypatch.setenv("EDGEC_CACHE_DIR", str(tmp_path))
    std = toolchain.Toolchain("tensorrt", type("M", (), {"__version__": "10.13.0"}), "tensorrt")
    gpu = toolchain.Gpu(True, "", "RTX 4090", "SM89")
    assert build._timing_cache_path({"timing_cache": "auto"}, std, gpu) == \
        tmp_path / "tensorrt" / "timing-tensorrt-10.13.0-SM89.cache"
    assert build._timing_cache_path({"timing_cache": False}, std, gpu) is None
    assert build._timing_cache_path({"timing_cache": str(tmp_path / "t.cache")}, std, gpu) == tmp_path / "t.cache"
    assert build._timing_cache_path({"timing_cache": True}, toolchain.resolve("tensorrt-rtx"), gpu) is None


# ---------------------------------------------------------------- engines built here

def test_fp32_engine_and_manifest(files, tmp_path):
    path, _, val = files
    art = compile_(path, tmp_path / "art", validation=val)
    m = art.manifest
    names = sorted(p.name for p in art.path.iterdir())
    assert names == ["manifest.json", "model.onnx", "model.plan", "trt_meta.json"]
    assert (art.path / "model.plan").stat().st_size > 10_000
    info = m["backend_info"]
    assert info["toolchain"]["name"] in ("tensorrt", "tensorrt-rtx") and info["target"]["compute_capabilities"] == ["SM89"]
    assert [(r["name"], r["precision"]) for r in info["layers"] if r["type"] == "CONVOLUTION"] == \
        [("conv1", "FP32"), ("conv2", "FP32"), ("conv3", "FP32")]
    assert info["layer_summary"]["int8_convolutions"] == 0
    weights = sum(int(np.prod(t.dims)) for t in tiny().graph.initializer) * 4
    assert weights <= info["engine_memory_bytes"]["weights"] < 2 * weights  # the builder's report, FP32 weights
    assert m["validation"]["passed"] and m["validation"]["cosine"] > 0.99999
    runtime = m["validation"]["runtime"]
    assert ("engine on" in runtime) if GPU.present else runtime.startswith("onnxruntime") and "not run" in runtime
    # The ONNX in the artifact is the one the engine was built from: here the optimized FP32 model.
    onnx.checker.check_model(onnx.load(art.path / "model.onnx"))


def test_fp16_builds_a_strongly_typed_half_network(files, tmp_path):
    path, _, val = files
    art = compile_(path, tmp_path / "art", "fp16", validation=val)
    info = art.manifest["backend_info"]
    assert info["layer_summary"]["compute_layers_by_precision"] == {"FP16": 4}
    half = sum(int(np.prod(t.dims)) for t in tiny().graph.initializer) * 2
    assert half <= info["engine_memory_bytes"]["weights"] < 1.5 * half  # the builder stored FP16 weights
    built_from = onnx.load(art.path / "model.onnx")
    assert built_from.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # fp32 I/O kept
    assert art.manifest["validation"]["passed"]


def test_int8_engine_has_int8_convolutions_and_float_bias(files, tmp_path):
    path, calib, val = files
    art = compile_(path, tmp_path / "art", "int8", calibration=calib, validation=val)
    info = art.manifest["backend_info"]
    convs = {r["name"]: r["precision"] for r in info["layers"] if r["type"] == "CONVOLUTION"}
    assert convs and set(convs.values()) == {"INT8"}, convs
    assert info["layer_summary"]["int8_convolutions"] == 3
    assert info["layer_summary"]["compute_layers_by_precision"] == {"INT8": 4}  # the Gemm too
    built_from = onnx.load(art.path / "model.onnx")
    inits = {t.name: t.data_type for t in built_from.graph.initializer}
    dq_inputs = [inits.get(n.input[0]) for n in built_from.graph.node if n.op_type == "DequantizeLinear"]
    assert onnx.TensorProto.INT32 not in dq_inputs  # biases stay float: the flavour's float_bias
    zps = [onh.to_array(t) for t in built_from.graph.initializer if t.name.endswith("zero_point")]
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps)  # symmetric s8
    assert art.manifest["quantization"]["flavour"]["float_bias"] is True
    assert art.manifest["validation"]["passed"], art.manifest["validation"]


def test_int8_accuracy_repair_works_for_this_flavour(files, tmp_path):
    path, calib, val = files
    art = compile_(path, tmp_path / "art", "int8", calibration=calib, validation=val, min_agreement=100.0)
    md = art.manifest["quantization"]["max_drop"]
    assert md["min_agreement"] == 100.0 and "final_agreement" in md
    assert art.manifest["validation"]["passed"]
    # Whatever the repair floated, the engine's network still parses and builds (no stray int32 DQ).
    qdq_check.check(onnx.load(art.path / "model.onnx"))


def test_builder_options_reach_the_builder(files, tmp_path):
    path, _, _ = files
    art = compile_(path, tmp_path / "art", options={**SM89, "opt_level": "0", "workspace": "64", "target": "sm86,sm89"})
    info = art.manifest["backend_info"]
    assert info["builder_optimization_level"] == 0 and info["workspace_mib"] == 64
    assert info["target"]["compute_capabilities"] == ["SM86", "SM89"]
    assert art.manifest["options"]["opt_level"] == 0


def test_dynamic_batch_needs_a_profile(tmp_path):
    p = tmp_path / "dyn.onnx"
    onnx.save(tiny(batch="N"), p)
    with pytest.raises(InputError, match=r"input 'x' has dynamic shape \?x3x16x16.*-O shapes=x:1x3x16x16"):
        compile_(p, tmp_path / "none")
    assert not (tmp_path / "none").exists()
    art = compile_(p, tmp_path / "art", options={**SM89, "min_shapes": "x:1x3x16x16", "opt_shapes": "x:4x3x16x16",
                                                 "max_shapes": "x:8x3x16x16"})
    prof = art.manifest["backend_info"]["optimization_profile"]
    assert prof == {"x": {"min": [1, 3, 16, 16], "opt": [4, 3, 16, 16], "max": [8, 3, 16, 16]}}
    assert art.manifest["backend_info"]["network_inputs"] == {"x": [-1, 3, 16, 16]}


def test_dynamic_batch_without_profile_fails_before_calibration(tmp_path, monkeypatch):
    from edgec.core import quantization

    p = tmp_path / "dyn.onnx"
    onnx.save(tiny(batch="N"), p)
    np.savez(tmp_path / "c.npz", x=np.zeros((4, 3, 16, 16), np.float32))
    monkeypatch.setattr(quantization, "quantize", lambda *a, **k: pytest.fail("calibration ran"))
    with pytest.raises(InputError, match="dynamic shape"):
        compile_(p, tmp_path / "art", "int8", calibration=tmp_path / "c.npz")


def test_rebuild_is_byte_identical(files, tmp_path):
    """TensorRT-RTX's ahead-of-time build is deterministic (measured: same sha256 across builds and processes,
    EfficientNet-Lite0 too), so an engine can be checked against its recorded hash. Standard TensorRT times
    kernels on the GPU, so its engines need not be; not asserted for it."""
    path, _, _ = files
    a = compile_(path, tmp_path / "a")
    b = compile_(path, tmp_path / "b")
    ha, hb = (hashlib.sha256((x.path / "model.plan").read_bytes()).hexdigest() for x in (a, b))
    assert ha == hb
    assert json.loads((a.path / "trt_meta.json").read_text())["plan_sha256"] == ha


def test_verbose_log_goes_to_the_artifact_not_stdout(files, tmp_path, capfd):
    path, _, _ = files
    art = compile_(path, tmp_path / "art", options={**SM89, "log": "verbose"})
    log = (art.path / "trt_build.log").read_text()
    assert "[VERBOSE]" in log and "[INFO]" in log
    out, err = capfd.readouterr()
    assert "VERBOSE" not in out + err and "TensorRT" not in out
    info = art.manifest["backend_info"]
    assert info["engine_layers"] and info["engine_layers"][0].startswith("Layer(")


# ---------------------------------------------------------------- models TensorRT would reject

def _qdq_conv(zp_dtype=np.int8, int32_bias=False) -> onnx.ModelProto:
    """A hand-made Q/DQ conv: activations with a `zp_dtype` zero point; bias int32 + DQ when `int32_bias`."""
    rng = np.random.default_rng(0)
    w = np.clip(np.round(rng.standard_normal((4, 3, 3, 3)) * 40), -127, 127).astype(np.int8)
    zp = zp_dtype(128) if zp_dtype is np.uint8 else zp_dtype(0)
    inits = [onh.from_array(np.array(0.02, np.float32), "xs"), onh.from_array(np.array(zp, zp_dtype), "xzp"),
             onh.from_array(w, "wq"), onh.from_array(np.full(4, 0.01, np.float32), "ws"),
             onh.from_array(np.zeros(4, np.int8), "wzp")]
    nodes = [oh.make_node("QuantizeLinear", ["x", "xs", "xzp"], ["xq"], name="x_q"),
             oh.make_node("DequantizeLinear", ["xq", "xs", "xzp"], ["xd"], name="x_dq"),
             oh.make_node("DequantizeLinear", ["wq", "ws", "wzp"], ["wd"], name="w_dq", axis=0)]
    conv_in = ["xd", "wd"]
    if int32_bias:
        inits += [onh.from_array(np.arange(4, dtype=np.int32) * 50, "bq"),
                  onh.from_array(np.full(4, 0.0002, np.float32), "bs")]
        nodes.append(oh.make_node("DequantizeLinear", ["bq", "bs"], ["bd"], name="bias_dq", axis=0))
        conv_in.append("bd")
    nodes.append(oh.make_node("Conv", conv_in, ["y"], name="conv", pads=[1, 1, 1, 1]))
    g = oh.make_graph(nodes, "qdq", [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
                      [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _trt_parses(model) -> bool:
    tc = toolchain.resolve("auto")
    lg = network.make_logger(tc.module)
    b = tc.module.Builder(lg)
    net = b.create_network(network._flags(tc.module))
    with lg.capture_stdio():
        return tc.module.OnnxParser(net, lg).parse(model.SerializeToString())


@pytest.mark.parametrize("kind, match", [
    ("uint8", r"QuantizeLinear 'x_q': zero point type uint8"),
    ("int32_bias", r"DequantizeLinear 'bias_dq': its input 'bq' is int32"),
])
def test_rejected_qdq_never_reaches_the_builder(kind, match, tmp_path, monkeypatch):
    model = _qdq_conv(np.uint8) if kind == "uint8" else _qdq_conv(int32_bias=True)
    assert not _trt_parses(model), "TensorRT accepts this model now: the check is stricter than TensorRT"
    assert _trt_parses(_qdq_conv())  # the same model, symmetric s8 and float bias, is accepted
    p = tmp_path / f"{kind}.onnx"
    onnx.save(model, p)
    monkeypatch.setattr(network, "parse", lambda *a, **k: pytest.fail("the builder got a model TensorRT rejects"))
    with pytest.raises(UnsupportedError, match=match) as e:
        compile_(p, tmp_path / "art", optimize=False)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "art").exists()


def test_unsupported_op_is_one_line_naming_the_node(tmp_path, run_cli):
    nodes = [oh.make_node("Relu", ["x"], ["r"], name="relu"), oh.make_node("Det", ["r"], ["d"], name="the_det"),
             oh.make_node("Unsqueeze", ["d", "ax"], ["y"], name="unsq")]
    g = oh.make_graph(nodes, "det", [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3, 3])],
                      [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 1])],
                      [onh.from_array(np.array([1], np.int64), "ax")])
    m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)])
    m.ir_version = 8
    p = tmp_path / "det.onnx"
    onnx.save(m, p)
    code, out, err = run_cli("compile", p, "--backend", "tensorrt", "--target", "rtx-4090", "-O", "toolchain=tensorrt-rtx",
                             "-o", tmp_path / "art")
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "node 'the_det' (op Det)" in lines[0], err
    assert "TensorRT has no implementation" in lines[0]
    assert not (tmp_path / "art").exists()


# ---------------------------------------------------------------- bad input through the CLI

@pytest.mark.parametrize("args, match", [
    (["-O", "target=sm90"], "SM90"),
    (["-O", "toolchain=tensorrt"], "toolchain=tensorrt is not installed"),
    (["-O", "shapes=x"], "name:1x3x224x224"),
    (["--precision", "int8"], "needs calibration data"),
])
def test_cli_bad_input_exits_2_with_one_line(files, tmp_path, run_cli, args, match):
    if "toolchain=tensorrt" in args and "tensorrt" in toolchain.installed():
        pytest.skip("standard TensorRT is installed here")
    path, _, _ = files
    code, out, err = run_cli("compile", path, "--backend", "tensorrt", "-o", tmp_path / "art", *args)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and match in lines[0], err
    assert not (tmp_path / "art").exists()


def test_corrupt_model_exits_2(tmp_path, run_cli):
    p = tmp_path / "bad.onnx"
    p.write_bytes(b"not an onnx model")
    code, _, err = run_cli("compile", p, "--backend", "tensorrt", "-o", tmp_path / "art")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "art").exists()


def test_validate_refuses_without_gpu_and_says_why(files, tmp_path, run_cli):
    if GPU.present:
        pytest.skip("a GPU is here: edgec validate runs the engine (test_engine_runs_on_gpu)")
    path, _, val = files
    art = compile_(path, tmp_path / "art")
    code, _, err = run_cli("validate", art.path, "--data", val)
    assert code == 2 and "can build here but not run" in err and "no GPU" in err


# ---------------------------------------------------------------- on a GPU

def test_engine_runner_without_gpu_fails_in_one_line(files, tmp_path):
    """The boundary: the GPU runner's first call (deserializing the engine) fails cleanly without a GPU."""
    if GPU.present:
        pytest.skip("a GPU is here: the engine loads (test_engine_runs_on_gpu_and_matches_onnxruntime)")
    from edgec.backends.tensorrt.runner import EngineRunner

    path, _, _ = files
    art = compile_(path, tmp_path / "art")
    tc = toolchain.resolve("tensorrt-rtx")
    with pytest.raises(BackendError, match=r"could not load .*model.plan") as e:
        EngineRunner(tc.module, art.path / "model.plan", [], [], network.make_logger(tc.module))
    assert "\n" not in str(e.value)


@needs_gpu
def test_engine_runs_on_gpu_and_matches_onnxruntime(files, tmp_path):
    import edgec
    import onnxruntime as ort

    path, _, val = files
    art = compile_(path, tmp_path / "art", options={"target": "auto"}, validation=val)
    assert "engine on" in art.manifest["validation"]["runtime"]
    assert (art.path / "engine_inspector.json").is_file()
    x = np.load(val)["x"][:1]
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    runner = edgec.load(art.path)
    try:
        np.testing.assert_allclose(runner.run({"x": x})["logits"], ref, rtol=1e-2, atol=1e-3)
    finally:
        runner.close()


@needs_gpu
def test_dynamic_profile_engine_runs_every_batch_in_range(tmp_path):
    import edgec

    p = tmp_path / "dyn.onnx"
    onnx.save(tiny(batch="N"), p)
    art = compile_(p, tmp_path / "art", options={"target": "auto", "min_shapes": "x:1x3x16x16",
                                                 "opt_shapes": "x:2x3x16x16", "max_shapes": "x:4x3x16x16"})
    runner = edgec.load(art.path)
    try:
        for n in (1, 3, 4):
            assert runner.run({"x": np.zeros((n, 3, 16, 16), np.float32)})["logits"].shape == (n, 10)
        with pytest.raises(InputError, match="outside the engine's optimization profile"):
            runner.run({"x": np.zeros((5, 3, 16, 16), np.float32)})
    finally:
        runner.close()


# ---------------------------------------------------------------- the shared models (slow)

@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_every_shared_model_builds(precision, tmp_path):
    from conftest import shared_path

    models = sorted(shared_path("models").glob("*.onnx"))
    for m in models:
        dims = [d.dim_value or 1 for d in onnx.load(m, load_external_data=False).graph.input[0].type.tensor_type.shape.dim]
        name = onnx.load(m, load_external_data=False).graph.input[0].name
        opts = {**SM89, "shapes": f"{name}:{'x'.join(map(str, dims))}"}  # batch 1 where the model leaves it open
        art = compile_(m, tmp_path / f"{m.stem}-{precision}", precision, options=opts)
        info = art.manifest["backend_info"]
        assert info["build_seconds"] > 0 and info["layer_summary"]["compute_layers_by_precision"] == \
            {precision.upper(): info["layer_summary"]["compute_layers_by_precision"].get(precision.upper())}
        assert art.manifest["validation"]["passed"], (m.name, art.manifest["validation"])
