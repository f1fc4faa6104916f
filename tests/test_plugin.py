"""A third-party backend, pip-installed from tests/plugin_pkg, appears and compiles through entry points.

The package is installed into a private --target directory (the running venv is not touched) and edgec is
run in a subprocess with that directory on PYTHONPATH, which is exactly how entry points reach a fresh
process.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN_SRC = Path(__file__).resolve().parent / "plugin_pkg"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    target = tmp_path_factory.mktemp("plugin_site")
    build = tmp_path_factory.mktemp("plugin_build")
    # Copy the source so setuptools' build/ and *.egg-info never land in the repo.
    import shutil
    src = build / "plugin_pkg"
    shutil.copytree(PLUGIN_SRC, src)
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                           "--no-index", "--quiet", "--target", str(target), str(src)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]),
               EDGEC_PROGRESS="0")
    return env


def _edgec(env, *args):
    return subprocess.run([sys.executable, "-m", "edgec.core.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def test_plugin_listed(plugin_env):
    proc = _edgec(plugin_env, "backends", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert {"onnxruntime", "onnx-reference"} <= set(rows)
    assert rows["onnx-reference"]["available"] and rows["onnx-reference"]["plugin"] == "edgec_example_plugin.plugin"


def test_plugin_compiles_and_runs(plugin_env, tmp_path, tiny_cnn_path, tiny_data):
    out = tmp_path / "art"
    proc = _edgec(plugin_env, "compile", tiny_cnn_path, "--backend", "onnx-reference", "--val", tiny_data,
                  "-o", out, "--json")
    assert proc.returncode == 0, proc.stderr
    m = json.loads(proc.stdout)
    assert m["backend"] == "onnx-reference" and m["validation"]["passed"] and m["validation"]["samples"] == 32
    assert m["toolchain"] == {"onnx.reference": m["toolchain"]["onnx.reference"]}
    proc = _edgec(plugin_env, "run", out, "--input", tiny_data, "--samples", "3", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["samples"] == 3


def test_plugin_precision_contract(plugin_env, tmp_path, tiny_cnn_path):
    proc = _edgec(plugin_env, "compile", tiny_cnn_path, "--backend", "onnx-reference", "--precision", "int8",
                  "-o", tmp_path / "x")
    assert proc.returncode == 2 and "does not support precision 'int8' (supported: fp32)" in proc.stderr


def test_plugin_preset_hook(plugin_env):
    code = "from edgec.core.preprocess import Preprocess; from edgec.core.registry import preprocess_presets;" \
           "print(Preprocess.parse('example-half', preprocess_presets()).scale)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=plugin_env)
    assert proc.returncode == 0 and proc.stdout.strip() == "0.5", proc.stderr


def test_without_plugin_it_is_unknown(tmp_path, tiny_cnn_path, run_cli):
    # The test process never has the private plugin directory on its path, so no fresh process is needed.
    code, _, err = run_cli("compile", tiny_cnn_path, "--backend", "onnx-reference", "-o", tmp_path / "x")
    assert code == 2 and "unknown backend 'onnx-reference'" in err, err
