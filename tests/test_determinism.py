"""Byte-identical rebuilds: the same model, data and options compiled twice give the same files.

One line per (backend, precision) in BUILDS: a new backend adds its line. TVM's lines run in the slow
target (11-33 s each since issue 17's lowering fixes, minutes before, on a loaded 2-core machine). The two
builds of a line run at once. Each build is its own `edgec compile`
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
    # The two builds run at once (own caches, own outputs): the same coverage in half the wall time on 2 cores.
    procs = [subprocess.Popen([sys.executable, "-m", "edgec.core.cli", "compile", str(model), "-b", backend, "-p",
                               precision, "-o", str(tmp_path / f"out{i}"), "--json", *extra],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "EDGEC_CACHE_DIR": str(tmp_path / f"cache{i}")}) for i in range(2)]
    tables = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=1200)
        except subprocess.TimeoutExpired:
            p.kill()
            raise
        assert p.returncode == 0, err[-2000:]
        tables.append(json.loads(out)["files"])
    assert tables[0] == tables[1], f"{backend} {precision} rebuilt differently: {tables}"
    for name in tables[0]:
        assert (tmp_path / "out0" / name).read_bytes() == (tmp_path / "out1" / name).read_bytes()
