"""Byte-identical rebuilds: the same model, data and options compiled twice give the same files.

One line per (backend, precision) in BUILDS: a new backend adds its line. TVM's builds take minutes
each on a loaded 2-core machine, so they run in the slow target. Each build is its own `edgec compile`
process with its own calibration cache, so the second is a full rebuild, not a cache hit. (Separate
processes as a user runs them: OpenVINO numbers the nodes it creates with a process-wide counter, so
two compiles inside one Python process differ in those generated layer names, e.g. Reshape_15 vs
Reshape_8364, though not in weights or structure.)
"""
from __future__ import annotations

import pytest

import bad_inputs_lib as B

SLOW = pytest.mark.slow
BUILDS = [
    ("onnxruntime", "fp32", {}),
    ("onnxruntime", "int8", {}),
    ("openvino", "fp32", {}),
    ("openvino", "int8", {}),
    pytest.param("tvm", "fp32", {"schedule": "rules"}, marks=SLOW),
    pytest.param("tvm", "int8", {"schedule": "rules"}, marks=SLOW),
]


@pytest.mark.parametrize("backend,precision,options", BUILDS)
def test_rebuild_is_byte_identical(backend, precision, options, tmp_path):
    import json
    import os
    import subprocess
    import sys

    from edgec.core.registry import get_backend

    av = get_backend(backend).available()
    if not av.ok:
        pytest.skip(f"{backend} not available here: {av.reason}")
    model = B.tiny(tmp_path)
    extra = ["--calib", str(B.data(tmp_path, "calib.npz", n=16))] if precision == "int8" else []
    for k, v in options.items():
        extra += ["-O", f"{k}={v}"]
    tables = []
    for i in range(2):
        env = {**os.environ, "EDGEC_CACHE_DIR": str(tmp_path / f"cache{i}")}
        out = tmp_path / f"out{i}"
        r = subprocess.run([sys.executable, "-m", "edgec.core.cli", "compile", str(model), "-b", backend, "-p", precision,
                            "-o", str(out), "--json", *extra], capture_output=True, text=True, env=env, timeout=1200)
        assert r.returncode == 0, r.stderr[-2000:]
        tables.append(json.loads(r.stdout)["files"])
    assert tables[0] == tables[1], f"{backend} {precision} rebuilt differently: {tables}"
    for name in tables[0]:
        assert (tmp_path / "out0" / name).read_bytes() == (tmp_path / "out1" / name).read_bytes()
