"""OpenVINO backend on the shared real models (slow: ImageNet-size models, real images)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest

ov = pytest.importorskip("openvino", reason="openvino not installed: pip install 'edgec[openvino]'")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MODELS, DATA = SHARED / "models", SHARED / "data"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (MODELS / "efficientnet_lite0.onnx").exists(), reason=f"shared models not found at {MODELS}"),
]
os.environ.setdefault("EDGEC_PROGRESS", "0")


def dataset(pack: str, model: str, preprocess: str, n: int):
    from edgec.core.data import open_dataset
    from edgec.core.model_io import input_specs

    return open_dataset(DATA / pack, input_specs(onnx.load(MODELS / model)), preprocess).take(n)


def ort_logits(model_path: Path, ds) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, s.feeds)[0] for s in ds])


def runner_logits(runner, ds) -> np.ndarray:
    name = runner.outputs[0].name
    return np.concatenate([runner.run(s.feeds)[name] for s in ds])


def cosine(a, b) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_efficientnet_fp32_and_fp16(tmp_path):
    import edgec

    model = MODELS / "efficientnet_lite0.onnx"
    ev = dataset("imagenet_eval500_jpeg.npz", model.name, "efficientnet-lite", 40)
    ref = ort_logits(model, ev)
    for precision, min_cos, min_agree in (("fp32", 0.99999, 1.0), ("fp16", 0.999, 0.95)):
        art = edgec.compile(model, backend="openvino", precision=precision, validation=ev,
                            output=tmp_path / precision)
        assert art.manifest["validation"]["passed"], art.manifest["validation"]
        got = runner_logits(edgec.load(art.path, threads=2), ev)
        assert cosine(got, ref) > min_cos
        assert (got.argmax(1) == ref.argmax(1)).mean() >= min_agree


def test_efficientnet_int8_nncf_runs_int8(tmp_path):
    import edgec

    model = MODELS / "efficientnet_lite0.onnx"
    cal = dataset("imagenet_calib500_jpeg.npz", model.name, "efficientnet-lite", 100)
    ev = dataset("imagenet_eval500_jpeg.npz", model.name, "efficientnet-lite", 100)
    art = edgec.compile(model, backend="openvino", precision="int8", calibration=cal, validation=ev,
                        output=tmp_path / "art", options={"calibrator": "nncf"})
    layers = art.manifest["backend_info"]["layers"]
    assert layers["int8_compute_fraction"] == 1.0, layers
    got = runner_logits(edgec.load(art.path, threads=2), ev)
    ref = ort_logits(model, ev)
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.95


def test_qdq_model_runs_int8_and_matches_onnxruntime_on_the_same_graph(tmp_path):
    """Whatever Q/DQ model the core hands over, OpenVINO must execute that graph (not a different one)
    in INT8 kernels; compared with onnxruntime running the identical Q/DQ graph."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from edgec.core.backend import LoweringContext
    from edgec.core.registry import get_backend

    model = MODELS / "squeezenet1_1.onnx"
    cal = list(dataset("imagenet_calib500_jpeg.npz", model.name, "squeezenet-bgr", 50))
    ev = dataset("imagenet_eval500_jpeg.npz", model.name, "squeezenet-bgr", 50)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(cal)

        def get_next(self):
            s = next(self.it, None)
            return None if s is None else s.feeds

    qdq = tmp_path / "qdq.onnx"
    quantize_static(str(model), str(qdq), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    be = get_backend("openvino")
    opts = be.validate_options({})
    ctx = LoweringContext(model=onnx.load(qdq), source_model=onnx.load(model), precision="int8",
                          out_dir=tmp_path / "art", options=opts)
    ctx.out_dir.mkdir()
    be.lower(ctx)
    from edgec.core.model_io import input_specs, output_specs

    m = onnx.load(model)
    manifest = {"precision": "int8", "options": opts, "inputs": [s.to_json() for s in input_specs(m)],
                "outputs": [s.to_json() for s in output_specs(m)]}
    runner = be.load(ctx.out_dir, manifest, threads=2)
    layers = be.layer_info(runner)
    assert layers["int8_compute_fraction"] >= 0.95, layers
    got = runner_logits(runner, ev)
    assert cosine(got, ort_logits(qdq, ev)) > 0.995
    assert (got.argmax(1) == ort_logits(model, ev).argmax(1)).mean() >= 0.9


def test_mobilenetv2_backbone_dynamic_batch(tmp_path):
    import edgec

    model = MODELS / "mobilenetv2_backbone.onnx"
    ev = dataset("imagenet_eval500_jpeg.npz", model.name, "imagenet", 4)
    x = np.concatenate([s.feeds["input"] if "input" in s.feeds else next(iter(s.feeds.values())) for s in ev])
    name = onnx.load(model).graph.input[0].name
    art = edgec.compile(model, backend="openvino", precision="fp32", output=tmp_path / "art",
                        options={"dynamic_batch": True})
    runner = edgec.load(art.path)
    assert runner.inputs[0].shape[0] == "?"
    out = runner.run({name: x})[runner.outputs[0].name]
    assert out.shape == (4, 1280)
    import onnxruntime as ort

    ref = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {name: x})[0]
    assert cosine(out, ref) > 0.99999



def test_efficientnet_int8_default_gptq_lowers_error_at_int8_speed(tmp_path):
    """Issue #5 on the real model: the default INT8 path (core Q/DQ with GPTQ-rounded weights) keeps every
    compute layer in an I8 kernel (the Q/DQ layout that runs as fast as NNCF's) and has a clearly lower
    logit error on imagenet_eval500 than round-to-nearest. Agreement is checked against a floor below
    the 99 % target, not at it: ~13 of these 500 images are near-ties in FP32 (top-2 logit gap < 0.1)
    and flip either way with any perturbation (the README's "noise floor")."""
    import edgec

    model = MODELS / "efficientnet_lite0.onnx"
    cal = dataset("imagenet_calib500_jpeg.npz", model.name, "efficientnet-lite", 500)
    ev = dataset("imagenet_eval500_jpeg.npz", model.name, "efficientnet-lite", 500)
    ref = ort_logits(model, ev)
    nmse, agreement = {}, {}
    for rounding in ("gptq", "nearest"):
        art = edgec.compile(model, backend="openvino", precision="int8", calibration=cal, validation=ev.take(50),
                            output=tmp_path / rounding, options={"weight_rounding": rounding})
        m = art.manifest
        assert ("weight_rounding" in m["quantization"]) == (rounding == "gptq")
        assert m["backend_info"]["layers"]["int8_compute_fraction"] == 1.0, m["backend_info"]["layers"]
        got = runner_logits(edgec.load(art.path, threads=2), ev)
        nmse[rounding] = float(np.mean((got - ref) ** 2) / np.mean(ref ** 2))
        agreement[rounding] = float((got.argmax(1) == ref.argmax(1)).mean())
    assert nmse["gptq"] < 0.9 * nmse["nearest"], nmse
    assert agreement["gptq"] >= 0.985, agreement
