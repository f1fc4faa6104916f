"""Tampered artifacts are refused before anything loads them; `--no-verify` loads them anyway.

The onnxruntime and OpenVINO cases (weights changed, bytes appended, truncated, deleted) are rows of
tests/test_bad_inputs.py; here: `--no-verify` really bypasses the check, and (slow: a TVM build takes
minutes here) a TVM `module.so` with bytes appended, native code that must never be dlopened unverified.
"""
from __future__ import annotations

import pytest

import bad_inputs_lib as B


def _art(tmp_path, backend, options=None):
    import edgec
    model = B.tiny(tmp_path)
    return edgec.compile(model, backend=backend, output=tmp_path / "art", options=options).path


def test_no_verify_loads_a_changed_artifact(tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("EDGEC_CACHE_DIR", str(tmp_path / "cache"))
    art = _art(tmp_path, "onnxruntime")
    data = B.data(tmp_path)
    import onnx
    m = onnx.load(str(art / "model.onnx"))
    m.producer_name = "edited after compile"  # a benign change: the model still runs
    onnx.save(m, str(art / "model.onnx"))
    code, _, err = run_cli("run", art, "--input", data)
    assert code == 2 and "model.onnx" in err and "--no-verify" in err
    code, out, err = run_cli("run", art, "--input", data, "--no-verify", "--json")
    assert code == 0, err
    code, out, err = run_cli("validate", art, "--data", data, "--no-verify", "--json")
    assert code == 0, err


@pytest.mark.slow
def test_tvm_module_so_with_bytes_appended_is_refused(tmp_path, run_cli, monkeypatch):
    pytest.importorskip("tvm")
    monkeypatch.setenv("EDGEC_CACHE_DIR", str(tmp_path / "cache"))
    art = _art(tmp_path, "tvm", {"schedule": "naive"})
    data = B.data(tmp_path)
    so = art / "module.so"
    with open(so, "ab") as f:
        f.write(b"\xcc" * 64)
    for verb in (["run", art, "--input", data], ["validate", art, "--data", data]):
        code, _, err = run_cli(*verb)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2 and len(lines) == 1 and "module.so" in lines[0] and "grown" in lines[0], err
