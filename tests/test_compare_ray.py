"""`edgec compare --executor ray`: the executor interface, Ray clusters on this machine, faults.

Default run: the executor plumbing without Ray (flags, errors, timing groups); a Ray cluster takes
15-20 s to start on a loaded 2-core host and each cell runs in a fresh worker process, so every test
that starts one is `slow`. They skip with the reason when Ray is not installed (pip install 'edgec[ray]').
"""
from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

import edgec
from edgec.core.backend import LatencyStats
from edgec.core.compare.cell import TimingGroup
from edgec.core.compare.executor import LocalExecutor, open_executor
from edgec.core.compare.sweep import _Cell, _apply_timing, _mark_pareto, _rows
from edgec.core.errors import InputError

REPO = Path(__file__).resolve().parent.parent
BUNDLED = REPO / "examples" / "fashion_mnist"
# One Ray cluster at a time on this host: the module's tests stay on one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group("ray")
FAST = dict(runs=3, warmup=1, threads=1, memory=False)
SMALL = dict(calibration=BUNDLED / "calib.npz", validation=BUNDLED / "val.npz", preprocess="unit",
             calib_samples=32, val_samples=64)
# Row fields that must not depend on where a cell ran (latencies and hosts do, by design).
SAME = ("backend", "precision", "status", "error", "reference", "top1_accuracy", "top1_agreement", "cosine",
        "validation_samples", "validated_on", "size_bytes")


def _have_ray() -> str | None:
    try:
        import ray  # noqa: F401
    except ImportError:
        return "Ray is not installed (pip install 'edgec[ray]')"
    return None


needs_ray = pytest.mark.skipif(_have_ray() is not None, reason=_have_ray() or "")


# --- without Ray ----------------------------------------------------------------------------------

def test_executor_choice_errors(monkeypatch):
    ex, owned = open_executor("local")
    assert isinstance(ex, LocalExecutor) and owned
    mine = LocalExecutor()
    assert open_executor(mine) == (mine, False)
    with pytest.raises(InputError, match="--ray-address needs --executor ray"):
        open_executor("local", "auto")
    with pytest.raises(InputError, match="unknown executor 'dask'"):
        open_executor("dask")
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as on a host without it
    with pytest.raises(InputError, match=r"pip install 'edgec\[ray\]'"):
        open_executor("ray")


def test_cli_executor_flags(tmp_path, run_cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    model = str(BUNDLED / "model.onnx")
    code, _out, err = run_cli("compare", model, "-b", "onnxruntime", "-p", "fp32", "-o", str(tmp_path / "r"),
                              "--executor", "ray")
    assert code == 2 and "pip install 'edgec[ray]'" in err and len(err.strip().splitlines()) == 1
    code, _out, err = run_cli("compare", model, "-b", "onnxruntime", "-p", "fp32", "-o", str(tmp_path / "r"),
                              "--ray-address", "auto")
    assert code == 2 and "--ray-address needs --executor ray" in err
    code, _out, err = run_cli("compare", model, "-o", str(tmp_path / "r"), "--executor", "spark")
    assert code == 2 and "invalid choice" in err


def _lat(ms: float) -> LatencyStats:
    return LatencyStats(3, 1, 1, ms, ms, ms, ms)


def test_timing_groups_never_mix_hosts():
    """Rows take their latency from the first group that timed them; speedups divide only numbers from
    one node, and the Pareto front only compares cells timed where the reference was."""
    cells = [_Cell("onnxruntime", "fp32", reference=True), _Cell("openvino", "int8"), _Cell("gpuonly", "fp16")]
    for c in cells:
        c.status = "ok"
    cpu = TimingGroup("x86 EPYC, 2 CPUs", "hostA/1", {
        "onnxruntime-fp32": {"latency": _lat(2.0), "error": None, "memory": None},
        "openvino-int8": {"latency": _lat(1.0), "error": None, "memory": None}})
    gpu = TimingGroup("x86 Xeon, 8 CPUs, 1 GPUs", "hostB/2", {
        "onnxruntime-fp32": {"latency": _lat(8.0), "error": None, "memory": None},
        "openvino-int8": {"latency": _lat(0.5), "error": None, "memory": None},
        "gpuonly-fp16": {"latency": _lat(0.1), "error": None, "memory": None}})
    _apply_timing(cells, [cpu, gpu])
    rows = _rows(cells)
    by = {(r["backend"], r["precision"]): r for r in rows}
    assert by["onnxruntime", "fp32"]["timed_on"] == "x86 EPYC, 2 CPUs @ hostA/1"
    assert by["openvino", "int8"]["latency_ms_median"] == 1.0 and by["openvino", "int8"]["speedup_vs_reference"] == 2.0
    # Timed only on the GPU node: its speedup is over the reference timed on that node (8.0 / 0.1), ...
    assert by["gpuonly", "fp16"]["timed_on"] == "x86 Xeon, 8 CPUs, 1 GPUs @ hostB/2"
    assert by["gpuonly", "fp16"]["speedup_vs_reference"] == pytest.approx(80.0)
    for r in rows:
        r["top1_accuracy"] = 0.9
    _mark_pareto(rows)
    # ... and it is not ranked against the CPU node's latencies.
    assert not by["gpuonly", "fp16"]["pareto"] and by["openvino", "int8"]["pareto"]


def test_local_rows_record_where(tmp_path, tiny_cnn_path, tiny_data):
    rep = edgec.compare(tiny_cnn_path, ["onnxruntime"], "fp32", output=tmp_path / "r", calibration=tiny_data,
                        validation=tiny_data, **FAST)
    row = rep.rows[0]
    assert row["status"] == "ok" and row["compiled_on"] and row["timed_on"]
    assert rep.meta["executor"]["name"] == "local"
    side = json.loads((tmp_path / "r" / "artifacts" / "onnxruntime-fp32.cell.json").read_text())
    assert side["compiled_on"] == row["compiled_on"]


def test_cell_key_reads_toolchains_as_a_fresh_process_does(monkeypatch, tmp_path):
    """A driver that has compiled (OpenVINO and TVM imported, TVM's LLVM version remembered) keys a cell as a
    fresh process does: the key's toolchain comes from installed metadata, while the manifest's record still
    reads the loaded library. (A key holding the loaded OpenVINO's build string made a Ray re-run rebuild
    the cells a fresh `edgec compare` process had cached.)"""
    import types

    from edgec.core import cache as disk_cache
    from edgec.core import probe
    from edgec.core.compare import cache
    from edgec.core.registry import get_backend

    names = [b for b, mod in (("onnxruntime", "onnxruntime"), ("openvino", "openvino"), ("tvm", "tvm"))
             if probe.installed(mod)]
    if "openvino" not in names:
        pytest.skip("OpenVINO is not installed (pip install 'edgec[openvino]')")
    monkeypatch.setenv("EDGEC_CACHE_DIR", str(tmp_path / "cache"))  # no LLVM version remembered yet
    before = {b: cache.toolchain_key(b) for b in names}
    build = f"{before['openvino']['openvino']}-99999-this-process-build"
    loaded = types.ModuleType("openvino")
    loaded.get_version = lambda: build
    monkeypatch.setitem(sys.modules, "openvino", loaded)  # as after an in-process OpenVINO compile
    assert get_backend("openvino").toolchain()["openvino"] == build  # what the manifest records
    lib = probe.module_file("tvm", "lib/libtvm_compiler.so") if "tvm" in names else None
    if lib is not None:  # as after any process on this host compiled with TVM
        disk_cache.remember("probe", disk_cache.file_key(lib), lambda: "99")
        assert "llvm" in get_backend("tvm").toolchain()
    assert {b: cache.toolchain_key(b) for b in names} == before


class _OtherProcessExecutor(LocalExecutor):
    """Cells compiled in one fresh (spawned) process under another node's label: what a Ray worker is to
    the driver, without Ray. Timing stays in this process (LocalExecutor.time)."""

    name = "other-process"
    label = "worker-host/0badc0de"

    def __init__(self):
        self.compiled: list[str] = []

    def compile(self, jobs):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from edgec.core.compare.cell import run_cell

        if not jobs:
            return
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            for job in jobs:
                self.compiled.append(job.name)
                yield pool.submit(run_cell, job, self.label).result()

    def describe(self) -> dict:
        return {"name": self.name}


def test_each_executor_reuses_the_others_cells(tmp_path):
    """Reuse depends on the content-hash key and an intact artifact only: a cell compiled by a fresh
    `edgec compare` process is reused by a driver that has imported the toolchains since and compiles
    elsewhere, and a cell compiled in another process (another node's label, OpenVINO layer names of a
    fresh process) is reused by the local executor."""
    import subprocess

    pytest.importorskip("openvino")
    import openvino  # noqa: F401  # this driver's state differs from the CLI process's at key time

    model, val = BUNDLED / "model.onnx", BUNDLED / "val.npz"
    kw = dict(preprocess="unit", val_samples=32, runs=3, warmup=1, min_seconds=0, threads=1, memory=False,
              write=False)

    def rows(rep):
        return [(r["backend"], r["precision"], r["status"], r["reused"], r["compiled_on"]) for r in rep.rows]

    # A fresh process compiles first (`edgec compare`'s state at key time: no toolchain imported yet).
    code = (f"import edgec, json; r = edgec.compare({str(model)!r}, 'onnxruntime,openvino', 'fp32', "
            f"output={str(tmp_path / 'fresh')!r}, validation={str(val)!r}, **{kw!r}); "
            "print(json.dumps([c['status'] for c in r.rows]))")
    fresh = subprocess.run([sys.executable, "-c", code], env={**os.environ, "EDGEC_PROGRESS": "0"},
                           capture_output=True, text=True, timeout=600)
    assert fresh.returncode == 0 and json.loads(fresh.stdout) == ["ok", "ok"], fresh.stderr[-2000:]
    other = _OtherProcessExecutor()
    resumed = edgec.compare(model, "onnxruntime,openvino", "fp32", output=tmp_path / "fresh", executor=other,
                            validation=val, **kw)
    assert other.compiled == [] and all(r[2] == "ok" and r[3] for r in rows(resumed)), rows(resumed)

    built = edgec.compare(model, "onnxruntime,openvino", "fp32", output=tmp_path / "other", executor=other,
                          validation=val, **kw)
    assert other.compiled == ["onnxruntime-fp32", "openvino-fp32"]
    assert [r[2:] for r in rows(built)] == [("ok", False, other.label)] * 2, rows(built)
    again = edgec.compare(model, "onnxruntime,openvino", "fp32", output=tmp_path / "other", validation=val, **kw)
    assert [r[2:] for r in rows(again)] == [("ok", True, other.label)] * 2, rows(again)
    assert again.meta["executor"]["name"] == "local"


# --- Ray clusters on this machine (slow) ----------------------------------------------------------

@pytest.fixture(scope="module")
def two_nodes():
    """Two raylets on 127.0.0.1, one CPU and 3 GiB each, EDGEC_CACHE_DIR (Ray's files with it) in a short
    temp dir; stopped and removed at teardown."""
    if _have_ray():
        pytest.skip(_have_ray())
    import shutil

    from edgec.core.compare.ray_executor import local_cluster

    root = tempfile.mkdtemp(prefix="edgec-ray-")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEC_CACHE_DIR", root)
        try:
            with local_cluster(nodes=2, cpus_per_node=1, memory_per_node=3 << 30,
                               object_store_memory=80 << 20) as cluster:
                yield cluster
        finally:
            shutil.rmtree(root, ignore_errors=True)


def _ov_xml(path: Path) -> str:
    """OpenVINO numbers the layers it generates with a process-wide counter (Reshape_15 in a fresh process,
    Reshape_8364 after other compiles in it: see tests/test_determinism.py), so compiles name them by what
    their process built before (the local executor's one process, a Ray worker's earlier cells of the
    backend); the rest of the IR and every weight byte (model.bin, hashed exactly) must match."""
    import hashlib
    import re
    return "normalized:" + hashlib.sha256(re.sub(rb"(?<=[A-Za-z])_\d+", b"_#", path.read_bytes())).hexdigest()


def _hashes(report) -> dict:
    out = {}
    for r in report.rows:
        if r["status"] == "ok":
            d = Path(r["artifact"])
            m = json.loads((d / "manifest.json").read_text())
            out[r["backend"], r["precision"]] = {
                k: _ov_xml(d / k) if r["backend"] == "openvino" and k.endswith(".xml")
                # The QNN context binary also depends on what its process built before (measured: 105 of
                # 176,128 bytes of the bundled int8 differ after the fp16 cell; two fresh `edgec compile`
                # processes give identical bytes), so it is compared by size; the Q/DQ model it was built
                # from, exactly.
                else f"size:{v['size']}" if r["backend"] == "qnn" and k.endswith("_ctx_qnn.bin") else v["sha256"]
                for k, v in m["files"].items()}
    return out


def _same(row: dict) -> dict:
    # OpenVINO's IR size moves with the generated layer names' lengths (see _ov_xml); its weights do not.
    return {k: row[k] for k in SAME if not (k == "size_bytes" and row["backend"] == "openvino")}


def _diff(a: dict, b: dict) -> list:
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b), key=str) if a.get(k) != b.get(k)]


@pytest.mark.slow
@needs_ray
def test_two_node_sweep_matches_local(tmp_path, two_nodes):
    """Every backend x precision of the bundled model on a two-node cluster: the same rows and artifact
    hashes as the local executor; each executor then reuses the other's results (one cell cache)."""
    from edgec.core.compare.ray_executor import RayExecutor

    model = BUNDLED / "model.onnx"
    local = edgec.compare(model, None, "fp32,fp16,int8", output=tmp_path / "local", **SMALL, **FAST)
    with RayExecutor() as ex:
        ray_rep = edgec.compare(model, None, "fp32,fp16,int8", output=tmp_path / "ray", **SMALL, **FAST, executor=ex)
        nodes = {n["node"] for n in ex.describe()["nodes"]}
        started = ex.started()
    assert len(nodes) == 2
    backends_of: dict = {}  # (node, worker pid) -> the backends whose cells it ran
    for name, attempts in started.items():
        for where in attempts:
            backends_of.setdefault(tuple(where), set()).add(name.rsplit("-", 1)[0])
    assert all(len(b) == 1 for b in backends_of.values()), backends_of  # a worker serves one backend only
    assert len(backends_of) < sum(map(len, started.values())), started  # and workers are reused
    ok = [r for r in local.rows if r["status"] == "ok"]
    assert {r["backend"] for r in ok} >= {"onnxruntime", "openvino", "tflite"}, local.rows
    assert [(r["backend"], r["precision"]) for r in ray_rep.rows] == [(r["backend"], r["precision"]) for r in local.rows]
    row_diffs = [(r["backend"], r["precision"], _diff(_same(r), _same(q))) for r, q in zip(ray_rep.rows, local.rows)
                 if _same(r) != _same(q)]
    assert not row_diffs and not _diff(_hashes(ray_rep), _hashes(local)), (row_diffs, _diff(_hashes(ray_rep), _hashes(local)))
    compiled_on = {r["compiled_on"] for r in ray_rep.rows if r["status"] == "ok"}
    assert compiled_on <= nodes and len(compiled_on) == 2, compiled_on  # both nodes compiled cells
    timed_on = {r["timed_on"] for r in ray_rep.rows if r["status"] == "ok"}
    assert len(timed_on) == 1 and timed_on.pop().split(" @ ")[1] in nodes  # one node type: one timing node
    assert ray_rep.meta["executor"]["name"] == "ray" and len(ray_rep.meta["benchmark"]["groups"]) == 1

    # A local re-run reuses the cluster's artifacts; a cluster re-run resumes from the local ones.
    again = edgec.compare(model, None, "fp32,fp16,int8", output=tmp_path / "ray", **SMALL, **FAST)
    assert all(r["reused"] for r in again.rows if r["status"] == "ok"), [
        (r["backend"], r["precision"], r["status"], r["reused"]) for r in again.rows]
    with RayExecutor() as ex:
        resumed = edgec.compare(model, None, "fp32,fp16,int8", output=tmp_path / "local", **SMALL, **FAST,
                                executor=ex)
    assert all(r["reused"] for r in resumed.rows if r["status"] == "ok"), [
        (r["backend"], r["precision"], r["status"], r["reused"]) for r in resumed.rows]
    assert _hashes(again) == _hashes(resumed) == _hashes(local)


@pytest.mark.slow
@needs_ray
def test_worker_killed_mid_cell_is_retried_once(tmp_path, two_nodes):
    """SIGKILL the worker of the first cell that starts: Ray retries it in a fresh worker, the sweep
    completes every cell exactly once, and nothing half-written is left."""
    from edgec.core.compare.ray_executor import RayExecutor

    killed: list = []
    model = BUNDLED / "model.onnx"
    with RayExecutor() as ex:
        def killer():
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not killed:
                for name, attempts in ex.started().items():
                    node, pid = attempts[0]
                    time.sleep(0.5)  # inside the compile (a cell takes seconds: imports, calibration, validation)
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        continue
                    killed.append(name)
                    return
                time.sleep(0.1)

        t = threading.Thread(target=killer, daemon=True)
        t.start()
        rep = edgec.compare(model, ["onnxruntime", "openvino"], "fp32,int8", output=tmp_path / "r", **SMALL, **FAST,
                            executor=ex)
        t.join(5)
        started = ex.started()
    assert killed, "no cell was started"
    name = killed[0]
    names = [f"{r['backend']}-{r['precision']}" for r in rep.rows]
    assert sorted(names) == sorted(set(names)) and len(names) == 4  # every cell once
    assert all(r["status"] == "ok" for r in rep.rows), [(r["backend"], r["error"]) for r in rep.rows]
    assert len(started[name]) == 2 and started[name][0][1] != started[name][1][1]  # retried in a new worker
    assert rep.meta["executor"]["retried"] == {name: 2}
    assert all(len(v) == 1 for k, v in started.items() if k != name)
    art = tmp_path / "r" / "artifacts"
    assert sorted(p.name for p in art.iterdir()) == sorted([*names, *(n + ".cell.json" for n in names)])


@pytest.mark.slow
@needs_ray
def test_failing_cell_is_an_error_row_not_a_retry(tmp_path, two_nodes):
    """A cell failing for its own reasons (unreadable calibration data) is an error row after one attempt."""
    from edgec.core.compare.ray_executor import RayExecutor

    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an npz")
    with RayExecutor() as ex:
        rep = edgec.compare(BUNDLED / "model.onnx", ["onnxruntime"], "fp32,int8", output=tmp_path / "r",
                            calibration=bad, validation=BUNDLED / "val.npz", preprocess="unit", val_samples=32,
                            **FAST, executor=ex)
        started = ex.started()
    row = rep.row("onnxruntime", "int8")
    assert row["status"] == "error" and "bad.npz" in row["error"]
    assert len(started["onnxruntime-int8"]) == 1 and rep.meta["executor"]["retried"] == {}
    assert all(len(v) == 1 for v in started.values())


@needs_ray
def test_unreachable_address_is_one_line_error(tmp_path, run_cli):
    code, _out, err = run_cli("compare", BUNDLED / "model.onnx", "-b", "onnxruntime", "-p", "fp32",
                              "-o", tmp_path / "r", "--executor", "ray", "--ray-address", "127.0.0.1:1")
    assert code == 2 and "cannot connect to the Ray cluster at --ray-address 127.0.0.1:1" in err


def test_one_bar_counts_done_running_failed(monkeypatch, capsys):
    from edgec.core.compare.cell import CellBar, CellOutcome

    monkeypatch.setenv("EDGEC_PROGRESS", "1")
    bar = CellBar(3)
    bar.set_running(2)
    bar.finished(CellOutcome("a-fp32", "ok", node="n1"))
    bar.set_running(1)
    bar.finished(CellOutcome("b-int8", "error", error="boom", node="n2"))
    bar.close()
    err = capsys.readouterr().err
    for state in ("done 0, running 2, failed 0", "done 1, running 2, failed 0", "done 1, running 1, failed 1"):
        assert state in err
    assert "compare: b-int8 on n2: error: boom" in err


@pytest.mark.slow
@needs_ray
def test_private_cluster_cli_loopback_and_no_stray_files(tmp_path):
    """`edgec compare --executor ray` with no address, in a fresh process whose HOME and TMPDIR are empty
    temp dirs: loopback only, and Ray adds no file outside EDGEC_CACHE_DIR and -o to what the same
    compare writes with the local executor (matplotlib's font cache and onnxruntime's telemetry id there
    are the local run's, not Ray's)."""
    import shutil
    import subprocess

    def run(executor: str):
        home, tmp = tmp_path / executor / "home", tmp_path / executor / "tmp"
        home.mkdir(parents=True)
        tmp.mkdir()
        cache = Path(tempfile.mkdtemp(prefix="edgec-rc-"))
        env = {**os.environ, "HOME": str(home), "TMPDIR": str(tmp), "EDGEC_CACHE_DIR": str(cache),
               "EDGEC_PROGRESS": "0"}
        env.pop("RAY_ADDRESS", None)
        try:
            proc = subprocess.run([sys.executable, "-m", "edgec.core.cli", "compare", str(BUNDLED / "model.onnx"),
                                   "-b", "onnxruntime", "-p", "fp32", "--val", str(BUNDLED / "val.npz"),
                                   "--preprocess", "unit", "--val-samples", "32", "--runs", "3", "--warmup", "1",
                                   "-o", str(tmp_path / executor / "r"), "--executor", executor, "--json"],
                                  env=env, capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, proc.stderr[-2000:]
            written = {str(p.relative_to(d.parent)) for d in (home, tmp) for p in d.rglob("*")}
            return json.loads(proc.stdout), written, (cache / "ray").is_dir()
        finally:
            shutil.rmtree(cache, ignore_errors=True)

    rep, written, ray_dir = run("ray")
    assert rep["executor"]["cluster"] == "private, 127.0.0.1 only"
    assert [n["address"] for n in rep["executor"]["nodes"]] == ["127.0.0.1"]
    assert rep["cells"][0]["status"] == "ok" and rep["cells"][0]["timed_on"] and ray_dir
    _rep, written_local, _ = run("local")
    assert written <= written_local, sorted(written - written_local)
