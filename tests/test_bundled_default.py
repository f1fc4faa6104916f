"""The README's main job, on the bundled model: it must keep working exactly as documented."""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import onnx

from conftest import EXAMPLES, REPO

FM = EXAMPLES / "fashion_mnist"


def test_bundled_files_present_and_valid():
    onnx.checker.check_model(str(FM / "model.onnx"))
    import numpy as np
    with np.load(FM / "val.npz") as z:
        assert z["images"].shape == (1000, 28, 28) and z["labels"].shape == (1000,)
    with np.load(FM / "calib.npz") as z:
        assert z["images"].shape[0] == 256


def _readme_main_command() -> list[str]:
    """The `edgec compile ...` part of the README's first command (the venv set-up is CI's job)."""
    text = (REPO / "README.md").read_text()
    line = next(line for line in text.splitlines() if "edgec compile examples/fashion_mnist" in line)
    args = shlex.split(line[line.index("edgec compile"):])
    assert args[:2] == ["edgec", "compile"]
    return args[2:]


def test_readme_main_job(tmp_path):
    args = _readme_main_command()
    out_idx = args.index("-o") + 1
    args[out_idx] = str(tmp_path / "fm_int8")
    proc = subprocess.run([sys.executable, "-m", "edgec.core.cli", "compile", *args, "--json"], cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    m = json.loads(proc.stdout)
    v = m["validation"]
    assert m["precision"] == "int8" and v["samples"] == 1000 and v["passed"]
    # INT8 stays within half a point of FP32 on the held-out images, and really is INT8.
    assert v["top1_accuracy"] >= v["reference_top1_accuracy"] - 0.005, v
    assert v["reference_top1_accuracy"] > 0.88
    assert m["quantization"]["placement"]["int8"] > 0
    assert re.fullmatch(r"[0-9a-f]{64}", m["calibration"]["data_sha256"])
