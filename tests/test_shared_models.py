"""The foundation's acceptance checks on the real models in ../shared (slow: full ImageNet eval split)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import shared_path

pytestmark = pytest.mark.slow


def test_efficientnet_fp16_500_images(tmp_path):
    model = shared_path("models", "efficientnet_lite0.onnx")
    val = shared_path("data", "imagenet_eval500_jpeg.npz")
    out = tmp_path / "eff_fp16"
    proc = subprocess.run([sys.executable, "-m", "edgec.core.cli", "compile", str(model), "--backend", "onnxruntime",
                           "--precision", "fp16", "--val", str(val), "--preprocess", "efficientnet-lite",
                           "-o", str(out), "--json"], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr
    m = json.loads(proc.stdout)
    v = m["validation"]
    assert v["samples"] == 500 and v["top1_agreement"] >= 0.995 and v["cosine"] >= 0.999
    assert abs(v["top1_accuracy"] - v["reference_top1_accuracy"]) <= 0.01
    run = subprocess.run([sys.executable, "-m", "edgec.core.cli", "run", str(out), "--input", str(val),
                          "--samples", "16", "--json"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["outputs"]["logits"]["shape"] == [16, 1000]


def test_squeezenet_bgr_preprocess_accuracy(tmp_path):
    """The BGR/Caffe spec from MODELS.md must give SqueezeNet a sane ImageNet accuracy on real images."""
    import edgec

    art = edgec.compile(shared_path("models", "squeezenet1_1.onnx"), validation=shared_path("data", "imagenet_eval500_jpeg.npz"),
                        preprocess="squeezenet-bgr", val_samples=200, output=tmp_path / "sq")
    assert art.manifest["validation"]["reference_top1_accuracy"] > 0.5
