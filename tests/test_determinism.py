"""Byte-identical rebuilds: the same model, data and options compiled twice give the same files.

One line per (backend, precision) in DEFAULT or SLOW_BUILDS: a new backend adds its line. TVM's lines run
in the slow target (11-33 s each since issue 17's lowering fixes, minutes before, on a loaded 2-core machine).

The two builds of a line are separate processes, as a user runs them, each with its own calibration and
optimizer cache, so the second is a full rebuild, not a cache hit. (OpenVINO numbers the nodes it creates
with a process-wide counter, so two compiles inside one Python process differ in those generated layer
names, e.g. Reshape_15 vs Reshape_8364, though not in weights or structure.) The default lines share their
two processes: each runs every line's `edgec compile` in the same order, so any process-wide state a
build leaves (that counter) is the same in both, while everything a fresh process draws anew (hash seed,
addresses, thread start-up) differs. That keeps two full rebuilds per line at two interpreter start-ups
(~2 s of imports each on the 2-core CI box) instead of eight; the processes run at once.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import bad_inputs_lib as B

DEFAULT = [
    ("onnxruntime", "fp32", {}),
    ("onnxruntime", "int8", {}),
    ("openvino", "fp32", {}),
    ("openvino", "int8", {}),
]
SLOW_BUILDS = [
    ("tvm", "fp32", {"schedule": "rules"}),
    ("tvm", "int8", {"schedule": "rules"}),
]

# One process: the CLI's main() once per build, each build with its own cache directory.
_DRIVER = """
import json, os, sys
from edgec.core.cli import main
for cache, argv in json.loads(sys.argv[1]):
    os.environ["EDGEC_CACHE_DIR"] = cache
    code = main(argv)
    if code:
        sys.exit(f"exit {code}: edgec {' '.join(argv)}")
"""


def _tag(backend, precision, options) -> str:
    return "-".join([backend, precision, *(f"{k}={v}" for k, v in sorted(options.items()))])


def _rebuild_twice(builds, tmp_path) -> None:
    """Run `builds` in each of two fresh processes at once; build b's outputs land in tmp_path/<tag>/out{0,1}."""
    model = B.tiny(tmp_path)
    calib = B.data(tmp_path, "calib.npz", n=16)
    jobs = [[], []]
    for backend, precision, options in builds:
        d = tmp_path / _tag(backend, precision, options)
        extra = ["--calib", str(calib)] if precision == "int8" else []
        for k, v in options.items():
            extra += ["-O", f"{k}={v}"]
        for i in range(2):
            jobs[i].append([str(d / f"cache{i}"), ["compile", str(model), "-b", backend, "-p", precision,
                                                   "-o", str(d / f"out{i}"), *extra]])
    procs = [subprocess.Popen([sys.executable, "-c", _DRIVER, json.dumps(j)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, "EDGEC_PROGRESS": "0"})
             for j in jobs]
    for p in procs:
        try:
            _, err = p.communicate(timeout=1200)
        except subprocess.TimeoutExpired:
            p.kill()
            raise
        assert p.returncode == 0, err[-2000:]


def _compare(root, backend, precision, options) -> str | None:
    """None when the two builds of a line have the same files, byte for byte; else what differs."""
    d = root / _tag(backend, precision, options)
    tables = [json.loads((d / f"out{i}" / "manifest.json").read_text())["files"] for i in range(2)]
    if not tables[0]:
        return f"{backend} {precision}: the manifest lists no files"
    if tables[0] != tables[1]:
        return f"{backend} {precision} rebuilt differently: {tables}"
    differ = [n for n in tables[0] if (d / "out0" / n).read_bytes() != (d / "out1" / n).read_bytes()]
    return f"{backend} {precision}: {differ} differ" if differ else None


def test_default_rebuilds_are_byte_identical(tmp_path):
    """Every default line whose backend is installed, in one test: the lines share their two processes (and
    a module-scoped fixture would not do: pytest-xdist 3.8's loadgroup does not group under pytest 9.2,
    pytest-dev/pytest-xdist#1386, so each worker would build them all again)."""
    from edgec.core.registry import get_backend

    lines = [b for b in DEFAULT if get_backend(b[0]).available().ok]
    assert any(b[0] == "onnxruntime" for b in lines), "onnxruntime is a hard dependency"
    _rebuild_twice(lines, tmp_path)
    failures = [f for f in (_compare(tmp_path, *b) for b in lines) if f]
    assert not failures, "\n".join(failures)


@pytest.mark.slow
@pytest.mark.parametrize("backend,precision,options", SLOW_BUILDS)
def test_rebuild_is_byte_identical(backend, precision, options, tmp_path):
    from edgec.core.registry import get_backend

    av = get_backend(backend).available()
    if not av.ok:
        pytest.skip(f"{backend} not available here: {av.reason}")
    _rebuild_twice([(backend, precision, options)], tmp_path)
    failure = _compare(tmp_path, backend, precision, options)
    assert failure is None, failure
