"""Qualcomm backends. `qnn`: context binaries built and run on onnxruntime-qnn's HTP simulator (x86-64
libQnnHtp.so) on tiny models; proof that our sessions run on QNN and that a CPU-only one is caught;
options, profiles and bad input. `snpe`: SDK detection, raw files / input lists, command lines; the SDK
itself is not installable here, so its tools are only ever run as stand-ins that fail (the error path)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import build_tiny_cnn, build_two_input, shared_path

pytest.importorskip("onnxruntime_qnn", reason="onnxruntime-qnn not installed: pip install 'edgec[qnn]'")

import edgec  # noqa: E402
from edgec.backends.snpe import htp, raw_inputs, sdk, targets  # noqa: E402
from edgec.backends.snpe.snpe_backend import SnpeBackend  # noqa: E402
from edgec.core.backend import TensorSpec  # noqa: E402
from edgec.core.errors import BackendError, InputError, UnsupportedError  # noqa: E402

ENV = {**os.environ, "EDGEC_PROGRESS": "0"}


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "edgec.core.cli", *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("qnn_data")
    rng = np.random.default_rng(0)
    model = d / "tiny.onnx"
    onnx.save(build_tiny_cnn(), str(model))
    np.savez(d / "calib.npz", input=rng.standard_normal((16, 3, 16, 16)).astype(np.float32))
    np.savez(d / "val.npz", input=rng.standard_normal((8, 3, 16, 16)).astype(np.float32))
    return d


@pytest.fixture(scope="module")
def int8_art(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("qnn_art") / "int8"
    art = edgec.compile(data / "tiny.onnx", backend="qnn", precision="int8", calibration=data / "calib.npz",
                        validation=data / "val.npz", output=out, options={"cpu_fallback": False})
    return art


def _reference(path, feeds):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


# ------------------------------------------------------------------ qnn on the simulator

def test_int8_context_binary_runs_everything_on_htp(int8_art, data):
    m = int8_art.manifest
    files = sorted(p.name for p in int8_art.path.iterdir())
    assert files == ["manifest.json", "model_ctx.onnx", "model_ctx_qnn.bin", "model_qdq.onnx"]
    info = m["backend_info"]
    assert info["cpu_nodes"] == [] and info["htp_node_count"] > 10 and info["htp_partitions"] == 1
    assert any("(Conv)" in n for n in info["htp_nodes"]) and any("(QuantizeLinear)" in n for n in info["htp_nodes"])
    assert info["htp_arch"] == 73 and info["soc_model"] == 43 and info["target"] == "snapdragon-8gen2"
    assert info["layers"]["session_cpu_nodes"] == [] and info["layers"]["session_htp_nodes"][0].endswith("(EPContext)")
    assert m["validation"]["passed"] and m["validation"]["cosine"] > 0.99 and m["validation"]["top1_agreement"] >= 0.75
    assert m["toolchain"]["onnxruntime-qnn"] and m["quantization"]["flavour"]["placement"] == "qnn"
    ctx = onnx.load(str(int8_art.path / "model_ctx.onnx"))
    assert [n.op_type for n in ctx.graph.node] == ["EPContext"]
    attrs = {a.name: a for a in ctx.graph.node[0].attribute}
    assert attrs["embed_mode"].i == 0 and attrs["ep_cache_context"].s == b"model_ctx_qnn.bin"


def test_reloaded_artifact_runs_on_htp_and_matches_fp32(int8_art, data):
    x = np.load(data / "val.npz")["input"][:1]
    runner = edgec.load(int8_art.path)
    try:
        assert runner.placement["cpu_nodes"] == [] and runner.placement["htp_nodes"]
        y = runner.run({"input": x})["logits"]
    finally:
        runner.close()
    ref = _reference(data / "tiny.onnx", {"input": x})
    cos = float((y * ref).sum() / np.linalg.norm(y) / np.linalg.norm(ref))
    assert y.shape == (1, 10) and cos > 0.99


def test_benchmark_json_is_clean_and_simulator_latency_is_not_ranked(int8_art, data, tmp_path):
    """onnxruntime-qnn prints a native banner on fd 1: `--json` must still be one JSON document. The HTP
    simulator's latency is labelled emulated and gets no ratio against a host artifact."""
    host = edgec.compile(data / "tiny.onnx", backend="onnxruntime", output=tmp_path / "ort", val_samples=2).path
    r = _cli("benchmark", host, int8_art.path, "-n", "6", "--warmup", "1", "--no-memory", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    ort_row, qnn_row = rep["artifacts"]
    assert ort_row["where"] == "host" and ort_row["vs_first"]["ranked"]
    assert qnn_row["emulated"] and "simulator" in qnn_row["where"]
    assert qnn_row["vs_first"]["ranked"] is False and "latency_ratio" not in qnn_row["vs_first"]


def test_a_cpu_only_session_is_detected(int8_art):
    """providers=['QNNExecutionProvider'] without plugin registration runs the Q/DQ model on the CPU EP
    without a word; our check must refuse it, and our own session must show QNN nodes."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    wrong = ort.InferenceSession(str(int8_art.path / "model_qdq.onnx"), so,
                                 providers=["QNNExecutionProvider", "CPUExecutionProvider"])
    assert wrong.get_providers() == ["CPUExecutionProvider"]
    with pytest.raises(BackendError, match="no node ran on QNN HTP"):
        htp.check_on_htp(wrong, "wrong session")
    right = htp.open_session(int8_art.path / "model_qdq.onnx", htp.HtpConfig(htp_arch=73, cpu_fallback=False))
    p = htp.check_on_htp(right, "right session", cpu_fallback=False)
    assert p["cpu_nodes"] == [] and len(p["htp_nodes"]) > 10
    # A session built without the assignment record proves nothing either way.
    plain = ort.InferenceSession(str(int8_art.path / "model_qdq.onnx"), providers=["CPUExecutionProvider"])
    with pytest.raises(BackendError, match="recorded no graph assignment"):
        htp.placement(plain)


def test_intermediates_come_from_cut_htp_graphs(int8_art, data):
    """edgec debug on qnn: each tensor from its own HTP graph (the Q/DQ model cut there), close to the same
    Q/DQ model on the CPU EP, and the outputs from the artifact's context binary itself."""
    import onnxruntime as ort

    from edgec.core.registry import get_backend

    be = get_backend("qnn")
    runner = be.intermediates(int8_art.path, int8_art.manifest, ["r1", "res", "gap", "input"])
    try:
        assert set(runner.exposed) == {"input", "r1", "res", "gap"} and "HTP graph" in runner.note  # input: as quantized
        feeds = {"input": np.load(data / "val.npz")["input"][:1]}
        got = runner.run(feeds)
        qm = onnx.load(str(int8_art.path / "model_qdq.onnx"))
        for t, r in runner.exposed.items():
            qm.graph.output.append(helper.make_tensor_value_info(r, TensorProto.FLOAT, None))
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        emu = ort.InferenceSession(qm.SerializeToString(), so, providers=["CPUExecutionProvider"])
        ref = dict(zip([o.name for o in emu.get_outputs()], emu.run(None, feeds)))
        for t, r in runner.exposed.items():
            a, b = got[t].ravel(), ref[r].ravel()
            assert a.shape == b.shape and float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) > 0.995, t
        assert np.allclose(got["logits"], runner.main.run(feeds)["logits"])
    finally:
        runner.close()


def test_rebuild_is_byte_identical_where_qnn_allows(int8_art, data, tmp_path):
    """The Q/DQ model and the context .onnx are byte-identical across builds; QNN's binary is not (it
    writes a few build-specific bytes), so the binaries are compared by what they compute: bit for bit."""
    art2 = edgec.compile(data / "tiny.onnx", backend="qnn", precision="int8", calibration=data / "calib.npz",
                         validation=data / "val.npz", output=tmp_path / "again", options={"cpu_fallback": False})
    for f in ("model_qdq.onnx", "model_ctx.onnx"):
        assert (int8_art.path / f).read_bytes() == (art2.path / f).read_bytes(), f
    x = np.load(data / "val.npz")["input"][:2]
    outs = []
    for p in (int8_art.path, art2.path):
        r = edgec.load(p)
        outs.append([r.run({"input": x[i:i + 1]})["logits"] for i in range(2)])
        r.close()
    assert all(np.array_equal(a, b) for a, b in zip(*outs))


def _sigmoid_matmul_model():
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["c"], ["s"]),
             helper.make_node("Mul", ["c", "s"], ["swish"]),
             helper.make_node("GlobalAveragePool", ["swish"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("MatMul", ["f", "wm"], ["y"])]
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3, "w"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "b"),
             numpy_helper.from_array(rng.standard_normal((8, 5)).astype(np.float32), "wm")]
    g = helper.make_graph(nodes, "swish_mm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _q_params(model, tensor):
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == tensor)
    return inits[q.input[1]], inits[q.input[2]]


@pytest.mark.parametrize("activations", ["u8", "u16"])
def test_qnn_rules_sigmoid_grid_and_per_tensor_matmul(activations, tmp_path):
    m = _sigmoid_matmul_model()
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "c.npz", x=rng.standard_normal((12, 3, 8, 8)).astype(np.float32))
    art = edgec.compile(m, backend="qnn", precision="int8", calibration=tmp_path / "c.npz", output=tmp_path / "a",
                        options={"activations": activations, "cpu_fallback": False})
    assert art.manifest["backend_info"]["cpu_nodes"] == []
    assert art.manifest["validation"]["cosine"] > 0.99
    q = onnx.load(str(art.path / "model_qdq.onnx"))
    scale, zp = _q_params(q, "s")
    if activations == "u16":
        assert zp.dtype == np.uint16 and float(scale) == 2.0 ** -16 and int(zp) == 0
        assert art.manifest["backend_info"]["precision_on_htp"].startswith("a16w8")
    else:
        assert zp.dtype == np.uint8 and abs(float(scale) - 1 / 255) < 1e-9
    # MatMul weights per tensor (HTP has no per-channel MatMul); Conv weights per channel.
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    dq = {n.output[0]: n for n in q.graph.node if n.op_type == "DequantizeLinear"}
    mm = next(n for n in q.graph.node if n.op_type == "MatMul")
    conv = next(n for n in q.graph.node if n.op_type == "Conv")
    assert inits[dq[mm.input[1]].input[1]].size == 1
    assert inits[dq[conv.input[1]].input[1]].size == 8 and inits[dq[conv.input[1]].input[0]].dtype == np.int8


def _conv_head_model():
    """SqueezeNet's ending: a 1x1 classifier Conv, then GlobalAveragePool -> Flatten as the logits."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Conv", ["r", "w2", "b2"], ["cls"]),
             helper.make_node("GlobalAveragePool", ["cls"], ["g"]),
             helper.make_node("Flatten", ["g"], ["y"])]
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3, "w"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "b"),
             numpy_helper.from_array(rng.standard_normal((10, 8, 1, 1)).astype(np.float32) * 0.3, "w2"),
             numpy_helper.from_array(rng.standard_normal(10).astype(np.float32) * 0.1, "b2")]
    g = helper.make_graph(nodes, "conv_head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_unweighted_tail_stays_float_on_fp16_targets(tmp_path):
    from edgec.backends.snpe.qnn_backend import flavour_for
    from edgec.core.quantization import quantize

    m = _conv_head_model()
    rng = np.random.default_rng(4)
    np.savez(tmp_path / "c.npz", x=rng.standard_normal((12, 3, 8, 8)).astype(np.float32))
    art = edgec.compile(m, backend="qnn", precision="int8", calibration=tmp_path / "c.npz", output=tmp_path / "a",
                        options={"cpu_fallback": False})
    assert art.manifest["backend_info"]["cpu_nodes"] == [] and art.manifest["validation"]["cosine"] > 0.99
    assert art.manifest["quantization"]["flavour"]["float_outputs"] is True
    q = onnx.load(str(art.path / "model_qdq.onnx"))
    quantized = {n.input[0] for n in q.graph.node if n.op_type == "QuantizeLinear"}
    assert "cls" in quantized and "r" in quantized  # the classifier Conv stays an integer kernel
    assert "g" not in quantized and not any(t.startswith("y") for t in quantized)  # pooled logits: fp16 on HTP
    # v68 (snapdragon-888) has no fp16: there the tail keeps its Q/DQ.
    from edgec.core.data import ArrayDataset

    calib = ArrayDataset({"x": rng.standard_normal((12, 3, 8, 8)).astype(np.float32)})
    q68 = quantize(m, "int8", flavour=flavour_for("u8", "s8", fp16=False), calibration=calib,
                   progress=False).model
    assert "g" in {n.input[0] for n in q68.graph.node if n.op_type == "QuantizeLinear"}


def test_fp16_runs_on_htp_and_v68_refuses(data, tmp_path):
    art = edgec.compile(data / "tiny.onnx", backend="qnn", precision="fp16", validation=data / "val.npz",
                        output=tmp_path / "fp16", options={"target": "snapdragon-8gen3", "cpu_fallback": False})
    info = art.manifest["backend_info"]
    assert info["htp_arch"] == 75 and info["soc_model"] == 57 and info["cpu_nodes"] == []
    assert info["provider_options"]["enable_htp_fp16_precision"] == "1"
    assert art.manifest["validation"]["cosine"] > 0.999
    r = _cli("compile", data / "tiny.onnx", "--backend", "qnn", "--precision", "fp16", "--target", "snapdragon-888",
             "-o", tmp_path / "v68")
    assert r.returncode == 2 and "no fp16 arithmetic" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "v68").exists()


def test_htp_arch_changes_the_binary_and_embed_mode(data, tmp_path):
    built = {}
    for target in ("snapdragon-8gen2", "snapdragon-8elite"):
        art = edgec.compile(data / "tiny.onnx", backend="qnn", precision="fp16", output=tmp_path / target,
                            options={"target": target, "embed_context": target == "snapdragon-8elite"})
        built[target] = art
    assert built["snapdragon-8elite"].manifest["backend_info"]["htp_arch"] == 79
    assert sorted(p.name for p in built["snapdragon-8elite"].path.iterdir()) == ["manifest.json", "model_ctx.onnx",
                                                                                  "model_fp32.onnx"]
    ctx = onnx.load(str(built["snapdragon-8elite"].path / "model_ctx.onnx"))
    attrs = {a.name: a for a in ctx.graph.node[0].attribute}
    assert attrs["embed_mode"].i == 1 and len(attrs["ep_cache_context"].s) > 10_000
    v73 = (built["snapdragon-8gen2"].path / "model_ctx_qnn.bin").read_bytes()
    assert v73 != attrs["ep_cache_context"].s
    x = np.random.default_rng(3).standard_normal((1, 3, 16, 16)).astype(np.float32)
    for art in built.values():
        r = edgec.load(art.path)
        y = r.run({"input": x})["logits"]
        r.close()
        assert np.allclose(y, _reference(data / "tiny.onnx", {"input": x}), atol=0.05)


def _erf_model():
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Erf", ["r"], ["y"])]
    g = helper.make_graph(nodes, "erf", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_cpu_fallback_is_recorded_or_refused_in_one_line(tmp_path):
    m = _erf_model()  # HTP takes the Relu; Erf in fp16 falls back to the CPU EP
    art = edgec.compile(m, backend="qnn", precision="fp16", output=tmp_path / "ok", optimize=False)
    info = art.manifest["backend_info"]
    assert info["cpu_nodes"] == ["Erf_1 (Erf)"] and info["htp_nodes"] == ["Relu_0 (Relu)"]
    assert info["layers"]["session_cpu_nodes"] == ["Erf_1 (Erf)"]
    onnx.save(m, str(tmp_path / "erf.onnx"))
    r = _cli("compile", tmp_path / "erf.onnx", "--backend", "qnn", "--precision", "fp16", "--no-optimize",
             "-O", "cpu_fallback=false", "-o", tmp_path / "refused")
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Erf" in r.stderr and "cpu_fallback" in r.stderr
    assert not (tmp_path / "refused").exists()


@pytest.mark.parametrize("args,needle", [
    (["--precision", "int8", "--target", "snapdragon-9000"], "unknown qnn target 'snapdragon-9000'"),
    (["--precision", "int8", "--target", "rpi4"], "has no Hexagon NPU"),
    (["--precision", "int8", "-O", "activations=u4"], "activations='u4' is not one of u8, u16"),
    (["--precision", "int8", "-O", "htp_arch=70"], "htp_arch=70 is not an HTP architecture"),
    (["--precision", "fp32"], "fp32"),
    (["--precision", "int8", "-O", "calibrator=ort", "--min-agreement", "99"], "need the core calibrator"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(data, tmp_path, capfd, args, needle):
    # In this process (a fresh one per case was ~3 s of imports each): capfd reads file descriptors 1 and 2,
    # so a line the QNN libraries wrote natively would count against the one line too.
    from edgec.core.cli import main

    out = tmp_path / "never"
    extra = ["--calib", data / "calib.npz", "--val", data / "val.npz"] if "int8" in args else []
    code = main([str(a) for a in ("compile", data / "tiny.onnx", "--backend", "qnn", *args, *extra, "-o", out)])
    err = capfd.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and needle in err, err
    assert not out.exists() and not list(tmp_path.glob(".never*"))


def test_symbolic_non_batch_dim_is_refused(tmp_path):
    m = build_two_input()  # inputs [N, 4]: the batch is fixed to 1, fine
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "K"
    with pytest.raises(UnsupportedError, match="symbolic dim 1"):
        from edgec.backends.snpe.shapes import static_batch

        static_batch(m)


def test_profiles_name_htp_arch_and_soc():
    assert {"snapdragon-8gen2", "snapdragon-8gen3", "snapdragon-8elite"} <= set(targets.snapdragon_profiles())
    t = targets.resolve("snapdragon-8gen3")
    assert (t.htp_arch, t.soc_model, t.fp16) == (75, 57, True)
    assert targets.resolve("snapdragon-888").fp16 is False
    assert targets.resolve("custom", htp_arch="v81").htp_arch == 81
    assert targets.resolve("snapdragon-8gen2", soc_model=36).soc_model == 36


def test_ort_recipe_calibrator_runs_on_htp(data, tmp_path):
    art = edgec.compile(data / "tiny.onnx", backend="qnn", precision="int8", calibration=data / "calib.npz",
                        validation=data / "val.npz", output=tmp_path / "recipe",
                        options={"calibrator": "ort", "cpu_fallback": False})
    q = art.manifest["quantization"]
    assert q["calibrator"] == "onnxruntime.quantization.execution_providers.qnn" and q["recipe"]["weight_type"] == "QUInt8"
    assert art.manifest["backend_info"]["cpu_nodes"] == [] and art.manifest["validation"]["cosine"] > 0.98


@pytest.mark.slow
def test_efficientnet_lite0_int8_on_the_simulator(tmp_path):
    model = shared_path("models", "efficientnet_lite0.onnx")
    calib = shared_path("data", "imagenet_calib500_jpeg.npz")
    art = edgec.compile(model, backend="qnn", precision="int8", calibration=calib, validation=calib,
                        preprocess="efficientnet-lite", calib_samples=64, val_samples=32, output=tmp_path / "eff",
                        options={"cpu_fallback": False, "weight_rounding": "nearest"})
    assert art.manifest["backend_info"]["cpu_nodes"] == []
    assert art.manifest["validation"]["top1_agreement"] >= 0.9


# ------------------------------------------------------------------ snpe up to the SDK boundary

def test_raw_files_and_input_list_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    specs = [TensorSpec("image:0", "float32", (1, 3, 4, 5)), TensorSpec("meta", "float32", (1, 7))]
    samples = [{"image:0": rng.standard_normal((1, 3, 4, 5)).astype(np.float32),
                "meta": rng.standard_normal((1, 7)).astype(np.float32)} for _ in range(3)]
    lst, n = raw_inputs.write_input_list(samples, specs, tmp_path / "raw", "nhwc", outputs=["logits"])
    lines = lst.read_text().splitlines()
    assert n == 3 and lines[0] == "#logits" and len(lines) == 4
    first = dict(tok.split(":=") for tok in lines[1].split())
    assert set(first) == {"image:0", "meta"} and all(Path(p).is_absolute() for p in first.values())
    # The file holds the NHWC bytes, float32, no header: what the SDK's converters expect by default.
    on_disk = np.fromfile(first["image:0"], np.float32)
    assert np.array_equal(on_disk, np.transpose(samples[0]["image:0"], (0, 2, 3, 1)).ravel())
    outs, back = raw_inputs.read_input_list(lst, specs, "nhwc")
    assert outs == ["logits"] and len(back) == 3
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(samples, back) for k in a)
    lst2, _ = raw_inputs.write_input_list(samples, specs[:1], tmp_path / "nchw", "nchw")
    _, back2 = raw_inputs.read_input_list(lst2, specs[:1], "nchw")
    assert np.array_equal(np.fromfile(tmp_path / "nchw" / "000000_image_0.raw", np.float32), samples[0]["image:0"].ravel())
    assert np.array_equal(back2[1]["image:0"], samples[1]["image:0"])
    # snpe-net-run's Result_<i>/<name>.raw layout back into arrays.
    res = [{"logits": rng.standard_normal((1, 10)).astype(np.float32)} for _ in range(2)]
    raw_inputs.write_results(res, tmp_path / "out")
    got = raw_inputs.read_results(tmp_path / "out", [TensorSpec("logits", "float32", (1, 10))], 2)
    assert all(np.array_equal(a["logits"], b["logits"]) for a, b in zip(res, got))


def test_raw_files_wrong_size_and_unknown_input_are_one_line_errors(tmp_path):
    spec = TensorSpec("x", "float32", (1, 3, 2, 2))
    np.zeros(5, np.float32).tofile(tmp_path / "bad.raw")
    (tmp_path / "list.txt").write_text(f"x:={tmp_path / 'bad.raw'}\n")
    with pytest.raises(InputError, match="5 float32 values, but 'x' needs 12"):
        raw_inputs.read_input_list(tmp_path / "list.txt", [spec])
    (tmp_path / "list2.txt").write_text(f"y:={tmp_path / 'bad.raw'}\n")
    with pytest.raises(InputError, match="input 'y' is not a model input"):
        raw_inputs.read_input_list(tmp_path / "list2.txt", [spec])


def _sdk_tree(root: Path, kind: str, failing: bool = False) -> Path:
    """An SDK folder laid out as Qualcomm ships it; the tools are executables that report an error (the
    real tools are not installable here, so only the path finding and the failure path run for real)."""
    bin_dir = root / "bin" / sdk.HOST
    bin_dir.mkdir(parents=True)
    (root / "lib" / "python").mkdir(parents=True)
    names = {**sdk.TOOLS[kind], **sdk.COMMON}.values()
    for n in names:
        p = bin_dir / n
        p.write_text("#!/bin/sh\necho \"[ERROR] $0: cannot open network: not a real SDK\" >&2\nexit 3\n")
        p.chmod(0o755)
    return root


def test_sdk_detection_env_path_and_absence(tmp_path):
    found, why = sdk.detect({"PATH": str(tmp_path)})
    assert found is None and "QAIRT_SDK_ROOT and SNPE_ROOT are unset" in why
    found, why = sdk.detect({"SNPE_ROOT": str(tmp_path / "nowhere"), "PATH": ""})
    assert found is None and "SNPE_ROOT=" in why and "has no" in why
    root = _sdk_tree(tmp_path / "qairt" / "2.31.0.250130", "qairt")
    found, _ = sdk.detect({"QAIRT_SDK_ROOT": str(root), "PATH": ""})
    assert found.kind == "qairt" and found.version == "2.31.0.250130" and found.tools["convert"].endswith("qairt-converter")
    env = found.env()
    assert env["PYTHONPATH"].startswith(str(root / "lib" / "python")) and str(root / "lib" / sdk.HOST) in env["LD_LIBRARY_PATH"]
    snpe_root = _sdk_tree(tmp_path / "snpe", "snpe")
    found, _ = sdk.detect({"PATH": str(snpe_root / "bin" / sdk.HOST)})
    assert found.kind == "snpe" and found.root == snpe_root and found.tools["run"].endswith("snpe-net-run")


def test_snpe_command_lines_from_options(tmp_path):
    be = SnpeBackend()
    w, out = tmp_path / "w", tmp_path / "o"
    q = sdk.Sdk(tmp_path, "qairt", {r: f"/sdk/bin/{n}" for r, n in {**sdk.TOOLS["qairt"], **sdk.COMMON}.items()})
    opts = be.validate_options({"activations": "u16", "target": "snapdragon-8gen3", "quantizer": "enhanced"})
    cmds = be.commands(q, opts, w, out, {"input": (1, 3, 224, 224)}, "int8")
    assert [c[0] for c in cmds] == ["convert", "quantize", "graph-prepare", "info"]
    assert cmds[0][1] == ["/sdk/bin/qairt-converter", "--input_network", str(w / "model.onnx"), "--output_path",
                          str(w / "fp32.dlc"), "--source_model_input_shape", "input", "1,3,224,224"]
    qz = cmds[1][1]
    assert qz[:7] == ["/sdk/bin/qairt-quantizer", "--input_dlc", str(w / "fp32.dlc"), "--input_list",
                      str(w / "calib" / "input_list.txt"), "--output_dlc", str(w / "quantized.dlc")]
    assert qz[qz.index("--act_bitwidth") + 1] == "16" and qz[qz.index("--weights_bitwidth") + 1] == "8"
    assert "--use_per_channel_quantization" in qz and "enhanced" in qz
    assert cmds[2][1][-2:] == ["--htp_socs", "sm8650"] and cmds[2][1][-3] == str(out / "model.dlc")
    assert cmds[3][1][:3] == ["/sdk/bin/snpe-dlc-info", "--input_dlc", str(out / "model.dlc")]
    s = sdk.Sdk(tmp_path, "snpe", {r: f"/s/{n}" for r, n in {**sdk.TOOLS["snpe"], **sdk.COMMON}.items()})
    cmds = be.commands(s, be.validate_options({"per_channel": "false"}), w, out, {"x": (1, 8)}, "fp32")
    assert [c[0] for c in cmds] == ["convert", "info"]
    assert cmds[0][1] == ["/s/snpe-onnx-to-dlc", "--input_network", str(w / "model.onnx"), "--output_path",
                          str(out / "model.dlc"), "--input_dim", "x", "1,8"]
    cmds = be.commands(s, be.validate_options({"per_channel": "false"}), w, out, {"x": (1, 8)}, "int8")
    assert "--axis_quant" not in cmds[1][1] and cmds[1][1][0] == "/s/snpe-dlc-quantize"
    assert sdk.net_run_cmd(s, out / "model.dlc", w / "l.txt", w / "r") == [
        "/s/snpe-net-run", "--container", str(out / "model.dlc"), "--input_list", str(w / "l.txt"), "--output_dir", str(w / "r")]


def test_snpe_without_sdk_is_unavailable_with_a_hint(data, tmp_path):
    env = {k: v for k, v in ENV.items() if k not in sdk.ENV_VARS}
    r = subprocess.run([sys.executable, "-m", "edgec.core.cli", "compile", str(data / "tiny.onnx"), "--backend", "snpe",
                        "--precision", "fp32", "-o", str(tmp_path / "never")], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "SNPE/QAIRT SDK not found" in r.stderr and "QAIRT_SDK_ROOT" in r.stderr
    assert not (tmp_path / "never").exists()
    av = subprocess.run([sys.executable, "-m", "edgec.core.cli", "backends", "--json"], capture_output=True, text=True,
                        env=env, timeout=300)
    row = next(b for b in json.loads(av.stdout) if b["name"] == "snpe")
    assert row["available"] is False and "qpm.qualcomm.com" in json.dumps(row)


def test_snpe_tool_failure_is_one_line_and_leaves_nothing(data, tmp_path):
    root = _sdk_tree(tmp_path / "sdk", "qairt")
    env = {**{k: v for k, v in ENV.items() if k not in sdk.ENV_VARS}, "QAIRT_SDK_ROOT": str(root)}
    r = subprocess.run([sys.executable, "-m", "edgec.core.cli", "compile", str(data / "tiny.onnx"), "--backend", "snpe",
                        "--precision", "int8", "--calib", str(data / "calib.npz"), "-o", str(tmp_path / "never")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and "snpe convert: qairt-converter exited 3" in line and "not a real SDK" in line
    assert not (tmp_path / "never").exists()
