"""`edgec compare` / `edgec.compare`: report schema and files, error rows, resume, CLI, Pareto and timing."""
from __future__ import annotations

import json

import numpy as np
import pytest

import edgec
from edgec.backends.onnxruntime.backend import OnnxRuntimeBackend
from edgec.core import compiler, registry
from edgec.core.backend import Availability, Requirements, Runner
from edgec.core.compare import ROW_KEYS, STATUSES
from edgec.core.compare.bench import interleaved
from edgec.core.compare.sweep import _mark_pareto

# Timing and memory are covered in test_compare_fixes/test_benchmark; here each cell is timed briefly and
# its peak RSS (a child process per cell) is skipped.
FAST = dict(runs=5, warmup=1, threads=1, min_seconds=0, memory=False)


@pytest.fixture
def compile_calls(monkeypatch):
    """Counts (backend, precision) of every real compile the sweep makes."""
    calls = []
    real = compiler.compile

    def counting(model, backend="onnxruntime", precision="fp32", **kw):
        calls.append((backend, precision))
        return real(model, backend, precision, **kw)

    monkeypatch.setattr(compiler, "compile", counting)
    return calls


def test_report_schema_and_files(tmp_path, tiny_cnn_path, tiny_data):
    out = tmp_path / "rep"
    rep = edgec.compare(tiny_cnn_path, ["onnxruntime"], "fp32,fp16,int8", output=out, calibration=tiny_data,
                        validation=tiny_data, **FAST)
    assert {p.name for p in out.iterdir()} >= {"report.json", "report.md", "pareto.png", "index.html", "artifacts"}
    data = json.loads((out / "report.json").read_text())
    assert data["reference"] == {"backend": "onnxruntime", "precision": "fp32", "added": False}
    assert data["benchmark"]["threads"] == 1 and data["benchmark"]["runs"] == 5
    assert [(r["backend"], r["precision"]) for r in data["cells"]] == [("onnxruntime", p) for p in ("fp32", "fp16", "int8")]
    for r in data["cells"]:
        assert tuple(r) == ROW_KEYS
        assert r["status"] == "ok", r["error"]
        assert r["error"] is None and not r["reused"]
        # Labels in tiny_data: accuracy is measured, and all cells see the same 32 validation samples.
        assert 0 <= r["top1_accuracy"] <= 1 and r["validation_samples"] == 32
        assert r["cosine"] >= 0.99 and r["top1_agreement"] >= 0.9
        assert 0 < r["latency_ms_median"] <= r["latency_ms_p90"]
        assert r["speedup_vs_reference"] == pytest.approx(data["cells"][0]["latency_ms_median"] / r["latency_ms_median"])
        assert r["size_bytes"] > 0 and r["compile_seconds"] > 0
        assert (tmp_path / "rep" / "artifacts" / f"onnxruntime-{r['precision']}" / "manifest.json").exists()
        assert r["artifact"] == str((out / "artifacts" / f"onnxruntime-{r['precision']}").resolve())
    ref = data["cells"][0]
    assert ref["reference"] and ref["speedup_vs_reference"] == 1.0
    assert data["accuracy_metric"] == "top1_accuracy" and any(r["pareto"] for r in data["cells"])
    # The returned object is the same report.
    assert rep.to_json()["cells"] == data["cells"] and rep.row("onnxruntime", "int8")["status"] == "ok"
    md = (out / "report.md").read_text()
    assert md.count("| onnxruntime") == 3 and "speedup" in md
    page = (out / "index.html").read_text()
    assert 'src="pareto.png"' in page and page.count("<tr class=") == 3
    from PIL import Image
    with Image.open(out / "pareto.png") as im:
        assert im.format == "PNG" and im.size[0] >= 600


def test_unavailable_and_unsupported_rows(tmp_path, tiny_cnn_path, tiny_data, monkeypatch):
    class Fp32Only(OnnxRuntimeBackend):
        name = "fp32only"
        requirements = Requirements(precisions=("fp32",))

    class Ghost(OnnxRuntimeBackend):
        name = "ghost"

        def available(self):
            return Availability(False, "Python module 'ghostrt' is not installed", "pip install ghostrt")

    found = {"onnxruntime": OnnxRuntimeBackend(), "fp32only": Fp32Only(), "ghost": Ghost()}
    monkeypatch.setattr(registry, "_backends", lambda: dict(found))
    rep = edgec.compare(tiny_cnn_path, "fp32only,ghost,nosuch", "fp32,fp16", output=tmp_path / "rep",
                        validation=tiny_data, **FAST)
    rows = {(r["backend"], r["precision"]): r for r in rep.rows}
    # onnxruntime fp32 was not asked for: it is added first as the reference, and the report says so.
    assert rep.rows[0]["backend"] == "onnxruntime" and rep.rows[0]["reference"]
    assert rep.meta["reference"]["added"] and any("added as the speedup reference" in n for n in rep.meta["notes"])
    assert rows[("fp32only", "fp32")]["status"] == "ok"
    assert rows[("fp32only", "fp32")]["speedup_vs_reference"] > 0
    un = rows[("fp32only", "fp16")]
    assert un["status"] == "unsupported" and "does not support precision 'fp16'" in un["error"]
    for p in ("fp32", "fp16"):
        g = rows[("ghost", p)]
        assert g["status"] == "unavailable" and "ghostrt" in g["error"] and "pip install ghostrt" in g["error"]
        assert rows[("nosuch", p)]["status"] == "unavailable" and "unknown backend 'nosuch'" in rows[("nosuch", p)]["error"]
    for r in rep.rows:
        assert r["status"] in STATUSES
        if r["status"] != "ok":
            assert r["latency_ms_median"] is None and r["artifact"] is None and not r["pareto"]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "ghost fp16: unavailable" in md and "fp32only fp16: unsupported" in md
    # The HTML page lists them with their reasons as well.
    assert "ghostrt" in (tmp_path / "rep" / "index.html").read_text()


def test_failing_compile_is_a_row_and_the_sweep_goes_on(tmp_path, tiny_cnn_path, tiny_data, compile_calls, monkeypatch):
    counting = compiler.compile

    def flaky(model, backend="onnxruntime", precision="fp32", **kw):
        if precision == "fp16":
            raise RuntimeError("converter exploded\nlong traceback text")
        return counting(model, backend, precision, **kw)

    monkeypatch.setattr(compiler, "compile", flaky)
    # int8 without --calib fails inside compile with the compiler's own one-line InputError.
    rep = edgec.compare(tiny_cnn_path, ["onnxruntime"], ["fp32", "fp16", "int8"], output=tmp_path / "rep",
                        validation=tiny_data, **FAST)
    by = {r["precision"]: r for r in rep.rows}
    assert by["fp16"]["status"] == "error" and by["fp16"]["error"] == "RuntimeError: converter exploded"
    assert by["int8"]["status"] == "error" and by["int8"]["error"].startswith("--precision int8 needs calibration data")
    assert by["fp32"]["status"] == "ok" and by["fp32"]["latency_ms_median"] > 0
    assert [r["precision"] for r in rep.ok] == ["fp32"]
    # Errors are not cached: a second run retries them (and reuses fp32).
    compile_calls.clear()
    edgec.compare(tiny_cnn_path, ["onnxruntime"], ["fp32", "fp16", "int8"], output=tmp_path / "rep",
                  validation=tiny_data, **FAST)
    assert compile_calls == [("onnxruntime", "int8")]  # fp16 raised in the wrapper before counting


@pytest.mark.slow  # minutes on the shared 2-core machine (issue 17: default run <= 5 min); `pytest -m slow`
def test_resume_reuses_unchanged_cells(tmp_path, tiny_cnn_path, tiny_data, compile_calls):
    kw = dict(output=tmp_path / "rep", calibration=tiny_data, validation=tiny_data, **FAST)
    first = edgec.compare(tiny_cnn_path, ["onnxruntime"], ["fp32", "int8"], **kw)
    assert compile_calls == [("onnxruntime", "fp32"), ("onnxruntime", "int8")]
    created = {p: json.loads((tmp_path / "rep" / "artifacts" / f"onnxruntime-{p}" / "manifest.json").read_text())["created"]
               for p in ("fp32", "int8")}

    compile_calls.clear()
    second = edgec.compare(tiny_cnn_path, ["onnxruntime"], ["fp32", "int8"], **kw)
    assert compile_calls == []
    assert all(r["reused"] and r["status"] == "ok" for r in second.rows)
    for p in ("fp32", "int8"):
        m = json.loads((tmp_path / "rep" / "artifacts" / f"onnxruntime-{p}" / "manifest.json").read_text())
        assert m["created"] == created[p]
        # Validation numbers come from the reused manifest; latency is measured afresh.
        assert second.row("onnxruntime", p)["cosine"] == first.row("onnxruntime", p)["cosine"]
        assert second.row("onnxruntime", p)["latency_ms_median"] > 0

    # A changed input recompiles: the calibration sample count is in every cell's key (without --val,
    # fp32/fp16 cells are validated on the calibration data, so it can shape them too).
    compile_calls.clear()
    edgec.compare(tiny_cnn_path, ["onnxruntime"], ["fp32", "int8"], **{**kw, "calib_samples": 16})
    assert sorted(compile_calls) == [("onnxruntime", "fp32"), ("onnxruntime", "int8")]

    # A damaged artifact is recompiled; the intact one is reused.
    (tmp_path / "rep" / "artifacts" / "onnxruntime-int8" / "model.onnx").write_bytes(b"truncated")
    compile_calls.clear()
    rep = edgec.compare(tiny_cnn_path, ["onnxruntime"], ["fp32", "int8"], **{**kw, "calib_samples": 16})
    assert compile_calls == [("onnxruntime", "int8")]
    assert rep.row("onnxruntime", "fp32")["reused"] and not rep.row("onnxruntime", "int8")["reused"]

    # force recompiles everything.
    compile_calls.clear()
    edgec.compare(tiny_cnn_path, ["onnxruntime"], ["fp32", "int8"], force=True, **{**kw, "calib_samples": 16})
    assert len(compile_calls) == 2


def test_failed_validation_row_is_cached(tmp_path, tiny_cnn_path, tiny_data, compile_calls, run_cli):
    # onnxruntime fp32 vs itself after the optimizer's folding is a hair below cosine 1 (above 1 is refused
    # as out of range)
    args = ["compare", tiny_cnn_path, "--backends", "onnxruntime", "--precisions", "fp32", "--val", tiny_data,
            "--min-cosine", "1", "--runs", "3", "--warmup", "0", "--min-seconds", "0", "--no-memory", "-o", tmp_path / "rep",
            "--json"]
    code, out, err = run_cli(*args)
    assert code == 1 and "no cell produced a validated artifact" in err
    row = json.loads(out)["cells"][0]
    assert row["status"] == "failed_validation" and row["error"].startswith("validation failed for onnxruntime fp32")
    assert 0.999 < row["cosine"] < 1 and row["latency_ms_median"] is None and row["artifact"] is None
    assert len(compile_calls) == 1
    code, out, _ = run_cli(*args)
    assert code == 1 and len(compile_calls) == 1 and json.loads(out)["cells"][0]["reused"]


def test_cli_table_and_usage_errors(tmp_path, tiny_cnn_path, tiny_data, run_cli):
    code, out, err = run_cli("compare", tiny_cnn_path, "-b", "onnxruntime", "-p", "fp32,fp16", "--val", tiny_data,
                             "--threads", "1", "--runs", "3", "--warmup", "1", "--min-seconds", "0", "--no-memory",
                             "-O", "onnxruntime:graph_optimization=basic",
                             "-o", tmp_path / "rep")
    assert code == 0, err
    assert "| onnxruntime (ref) | fp32 | ok |" in out and "| onnxruntime | fp16 | ok |" in out
    assert "wrote" in out and "pareto.png" in out
    opts = json.loads((tmp_path / "rep" / "artifacts" / "onnxruntime-fp32" / "manifest.json").read_text())["options"]
    assert opts["graph_optimization"] == "basic"
    rows = json.loads((tmp_path / "rep" / "report.json").read_text())["cells"]
    assert all(r["peak_rss_bytes"] is None for r in rows)  # --no-memory

    code, _, err = run_cli("compare", tiny_cnn_path, "-p", "fp8", "-o", tmp_path / "x")
    assert code == 2 and "unknown precision 'fp8'" in err
    code, _, err = run_cli("compare", tiny_cnn_path, "-b", "onnxruntime", "-O", "openvino:device=CPU", "-o", tmp_path / "x")
    assert code == 2 and "options given for backend 'openvino'" in err
    code, _, err = run_cli("compare", tmp_path / "missing.onnx", "-o", tmp_path / "x")
    assert code == 2 and "model file not found" in err


def test_pareto_front():
    def row(name, ms, acc, status="ok"):
        return {"backend": name, "precision": "fp32", "status": status, "latency_ms_median": ms, "top1_accuracy": acc,
                "top1_agreement": acc, "cosine": 1.0, "pareto": False}

    rows = [row("a", 10, 0.80), row("b", 5, 0.78), row("c", 6, 0.70), row("d", 12, 0.80), row("e", 4, 0.9, "error"),
            row("f", 5, 0.78)]
    rows[4]["latency_ms_median"] = None
    assert _mark_pareto(rows) == "top1_accuracy"
    # c is beaten by b (faster and better); d by a (same accuracy, slower); equal points b/f both stay.
    assert [r["backend"] for r in rows if r["pareto"]] == ["a", "b", "f"]


class _FakeRunner(Runner):
    def __init__(self, name, log, ms, fail_at=None):
        self.name, self.log, self.ms, self.fail_at, self.calls = name, log, ms, fail_at, 0

    def time_once(self, feeds):
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise RuntimeError("device lost\nmore")
        self.log.append(self.name)
        return self.ms / 1e3


def test_interleaved_rotates_and_isolates_failures():
    log = []
    runners = {"a": _FakeRunner("a", log, 1.0), "b": _FakeRunner("b", log, 2.0), "c": _FakeRunner("c", log, 3.0, fail_at=4)}
    stats, errors = interleaved(runners, {}, runs=4, warmup=1, threads=1)
    assert errors == {"c": "benchmark failed: RuntimeError: device lost"}
    timed = log[3:]  # after one warm-up each
    # Round 0: a b c; round 1: b c a; round 2: c fails at its 4th call, so (a b)... each round starts one later.
    assert timed[:6] == ["a", "b", "c", "b", "c", "a"]
    assert stats["a"].runs == 4 and stats["b"].runs == 4 and "c" not in stats
    assert stats["a"].median_ms == pytest.approx(1.0) and stats["b"].p90_ms == pytest.approx(2.0)
    assert np.isclose(stats["b"].mean_ms, 2.0)


@pytest.mark.slow  # minutes on the shared 2-core machine (issue 17: default run <= 5 min); `pytest -m slow`
def test_example_script_runs(tmp_path, tiny_cnn_path, tiny_data):
    import os
    import subprocess
    import sys

    from conftest import EXAMPLES

    proc = subprocess.run([sys.executable, str(EXAMPLES / "compare_backends.py"), str(tiny_cnn_path), str(tiny_data),
                           str(tiny_data), "--backends", "onnxruntime", "--precisions", "fp32,int8",
                           "--max-drop", "100", "-o", str(tmp_path / "rep")],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, EDGEC_PROGRESS="0"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Pareto front" in proc.stdout and "deploy: onnxruntime" in proc.stdout
    assert "ran it on the first validation sample" in proc.stdout
    assert (tmp_path / "rep" / "index.html").exists()


@pytest.mark.slow
def test_real_model_sweep(tmp_path):
    from conftest import shared_path

    model = shared_path("models", "efficientnet_lite0.onnx")
    calib = shared_path("data", "imagenet_calib500_jpeg.npz")
    val = shared_path("data", "imagenet_eval500_jpeg.npz")
    rep = edgec.compare(model, ["onnxruntime"], ["fp32", "int8"], output=tmp_path / "rep", calibration=calib,
                        validation=val, preprocess="efficientnet-lite", calib_samples=32, val_samples=50,
                        runs=20, warmup=3, threads=1)
    fp32, int8 = rep.row("onnxruntime", "fp32"), rep.row("onnxruntime", "int8")
    assert fp32["status"] == "ok" and int8["status"] == "ok", (fp32["error"], int8["error"])
    assert fp32["top1_accuracy"] == pytest.approx(rep.meta["reference_top1_accuracy"])
    assert int8["top1_agreement"] >= 0.8 and int8["size_bytes"] < 0.5 * fp32["size_bytes"]
