"""The emulated arm64 board (scripts/arm64_board.sh): an rpi4 artifact validated on aarch64 code.

Slow (minutes: qemu-user emulates every instruction) and needs the board running:
    scripts/arm64_board.sh setup && scripts/arm64_board.sh start
    python -m pytest tests/test_tvm_board.py -m slow -q
"""
from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import shared_path

pytest.importorskip("tvm", reason="TVM backend needs: pip install 'edgec[tvm]'")

import edgec  # noqa: E402
from edgec.backends.tvm.runner import DEFAULT_BOARD, listening  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _board():
    if shutil.which("aarch64-linux-gnu-gcc") is None:
        pytest.skip("apt-get install gcc-aarch64-linux-gnu")
    if not listening(*DEFAULT_BOARD):
        pytest.skip("emulated board not running: scripts/arm64_board.sh setup && scripts/arm64_board.sh start")


def test_tiny_cnn_rpi4_validates_on_the_emulated_board(tiny_cnn_path, tmp_path):
    art = edgec.compile(tiny_cnn_path, backend="tvm", output=tmp_path / "rpi", options={"target": "rpi4"})
    info = art.manifest["backend_info"]
    assert info["library_machine"] == "aarch64" and info["validation_ran_on"].startswith("emulated board")
    assert art.manifest["validation"]["passed"] and art.manifest["validation"]["cosine"] > 0.99999
    if shutil.which("file"):
        assert "ARM aarch64" in subprocess.run(["file", str(art.path / "module.so")], capture_output=True, text=True).stdout


def test_efficientnet_lite0_rpi4_on_the_emulated_board(tmp_path):
    model = shared_path("models", "efficientnet_lite0.onnx")
    data = shared_path("data", "imagenet_eval500_jpeg.npz")
    art = edgec.compile(model, backend="tvm", precision="fp32", validation=data, preprocess="efficientnet-lite",
                        val_samples=4, output=tmp_path / "effnet", options={"target": "rpi4"})
    v = art.manifest["validation"]
    assert v["samples"] == 4 and v["cosine"] >= 0.9999
    assert art.manifest["backend_info"]["library_machine"] == "aarch64"
