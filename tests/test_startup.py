"""`edgec backends` and `edgec --help` import no toolchain (issue 17): toolchains are found with
importlib.util.find_spec and versioned from their metadata; the heavy import waits for a compile.

Checked through `python -X importtime` in a fresh process (which modules ran), never by timing."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("tvm", "openvino", "nncf", "tensorflow", "torch", "onnx", "onnxruntime", "tensorrt_rtx_bindings",
         "ai_edge_litert", "scipy")


def _imported(*argv: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    entry = "import sys; from edgec.core.cli import main; sys.exit(main(sys.argv[1:]))"  # the console script
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", entry, *argv],
                          capture_output=True, text=True, timeout=300)
    mods = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    return proc, mods


@pytest.mark.parametrize("argv", [("backends",), ("backends", "--json"), ("--help",), ("compile", "--help")])
def test_cheap_commands_import_no_toolchain(argv):
    proc, mods = _imported(*argv)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert mods, "no -X importtime lines: the check would pass vacuously"
    assert "edgec.core.cli" in mods
    heavy = sorted(m for m in mods if m.split(".")[0] in HEAVY)
    assert not heavy, f"`edgec {' '.join(argv)}` imported {heavy[:8]}"


def test_backends_listing_still_reports_versions():
    from edgec.core.registry import get_backend

    proc, mods = _imported("backends", "--json")
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["onnxruntime"]["available"] and rows["onnxruntime"]["toolchain"]["onnx"]
    for name, module in (("openvino", "openvino"), ("tvm", "tvm")):
        be = get_backend(name)
        if be.available().ok:
            v = rows[name]["toolchain"][name]
            assert v and v != "?", rows[name]
            assert module not in mods


def test_import_edgec_is_lazy():
    code = ("import sys, edgec; assert 'onnx' not in sys.modules, 'import edgec imported onnx'; "
            "f = edgec.compile; assert 'edgec.core.compiler' in sys.modules; print(f.__module__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "edgec.core.compiler"


def test_tvm_broken_install_fails_at_compile_not_listing(monkeypatch):
    """A tvm that fails to import is listed (found), and a compile's option check says what is wrong."""
    from edgec.backends.tvm import backend as tvm_backend
    from edgec.core.errors import BackendError

    if not tvm_backend.TvmBackend().available().ok:
        pytest.skip("tvm not installed")

    def broken():
        raise BackendError("backend 'tvm': apache-tvm fails to import: boom; fix: pip install 'edgec[tvm]'")

    monkeypatch.setattr(tvm_backend, "_import_tvm", broken)
    with pytest.raises(BackendError, match="fails to import"):
        tvm_backend.TvmBackend().validate_options({})
