"""`edgec auto`: hardware profiles, candidate order, threshold pruning, budget, resume from compare's cache,
and real end-to-end searches on the bundled Fashion-MNIST model (x86 on two backends, the integer-only mcu)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import edgec
from edgec.core import compiler, profiles
from edgec.core.auto import hardware
from edgec.core.auto.plan import Candidate, Demands, Outcome, follow_ups, judge, primaries, prune_reason
from edgec.core.auto.search import auto, explain
from edgec.core.errors import InputError

from conftest import EXAMPLES, built_once

FM = EXAMPLES / "fashion_mnist"
FM_DATA = dict(calibration=FM / "calib.npz", validation=FM / "val.npz", preprocess="unit", calib_samples=200,
               val_samples=300)
FAST = dict(runs=10, warmup=1, min_seconds=0.2, playoff_seconds=1.0, threads=1)


# ---------------------------------------------------------------- profiles and ordering (no compiles)

def test_hardware_profiles_load_and_leave_the_tvm_targets_alone():
    assert {"x86", "rpi4", "jetson-orin", "rtx", "snapdragon", "mcu"} <= set(hardware.names())
    backends = {r["name"] for r in edgec.list_backends()}
    for name in hardware.names():
        p = hardware.load(name)
        assert p["name"] == name and p["version"]
        assert {t["backend"] for t in p["targets"]} <= backends | {"snpe", "qnn"}
        if p.get("board_profile"):  # the board/TVM target it refers to exists
            assert p["board_profile"] in profiles.names()
    # The hardware folder is not a TVM/board target: `--target x86` / `mcu` stay unknown to backends.
    assert "x86" not in profiles.names() and "mcu" not in profiles.names() and "rpi4" in profiles.names()
    with pytest.raises(InputError, match="unknown hardware 'nope'.*x86"):
        hardware.load("nope")


def test_candidate_order_follows_each_profile():
    x86 = [(c.backend, c.precision) for c in primaries(hardware.load("x86"), "m")]
    assert [p for _, p in x86] == ["int8"] * 4 + ["fp32"] * 4 + ["fp16"] * 4
    assert [b for b, _ in x86[:4]] == ["onnxruntime", "openvino", "tvm", "tflite"]
    rtx = [c.precision for c in primaries(hardware.load("rtx"), "m")]
    assert rtx == ["fp16", "int8", "fp32"]  # NVIDIA GPU: fp16 first, then INT8
    snap = [c.precision for c in primaries(hardware.load("snapdragon"), "m")]
    assert snap.index("int8") < snap.index("fp16")
    mcu = primaries(hardware.load("mcu"), "m")
    assert [(c.backend, c.precision, c.options.get("io")) for c in mcu] == [("tflite", "int8", "int8")]
    rpi = primaries(hardware.load("rpi4"), "m")
    assert {(c.backend, c.options.get("target")) for c in rpi} == {("tvm", "rpi4")} and "fp16" not in {c.precision for c in rpi}
    # Follow-ups of a failed int8 cell: the other calibration methods in profile order, repair last.
    base = mcu[0]
    x = follow_ups(hardware.load("x86"), base, {"auto"}, Demands(max_drop=1))
    assert [(f.calib_method, f.repair) for f in x] == [("entropy", False), ("percentile", False), ("mse", False), ("auto", True)]
    assert not any(f.repair for f in follow_ups(hardware.load("mcu"), base, {"auto"}, Demands(max_drop=1)))
    assert not any(f.repair for f in follow_ups(hardware.load("x86"), base, {"auto"}, Demands()))  # no budget, no repair
    # A candidate becomes one compare cell with its own compile arguments.
    rep = x[-1].cell(1.0)
    assert rep == {"backend": "tflite", "precision": "int8", "variant": "auto-repair",
                   "compile": {"options": {"int8": "full", "io": "int8"}, "max_drop": 1.0}}
    assert x[0].cell(1.0)["compile"]["calib_method"] == "entropy" and mcu[0].cell(1.0)["variant"] is None


def test_explain_prints_the_plan(run_cli):
    code, out, err = run_cli("auto", "--explain", "--hardware", "mcu")
    assert code == 0, err
    assert "tflite -O int8=full -O io=int8" in out and "no repair" in out and "proxy" in out
    plan = explain("x86", Demands(max_drop=1))
    assert plan["steps"][0].startswith("1. baseline: onnxruntime fp32") and "entropy" in plan["steps"][2]
    assert any("VNNI" in r for r in plan["rules"])


# ---------------------------------------------------------------- thresholds and pruning

def _row(status="ok", ms=1.0, acc=0.90, agr=0.99, n=500, size=1e6):
    return {"status": status, "error": None, "latency_ms_median": ms, "top1_accuracy": acc, "top1_agreement": agr,
            "validation_samples": n, "size_bytes": size}


def test_judge_thresholds():
    ref = _row(ms=2.0, acc=0.92, agr=1.0)
    o = judge(_row(acc=0.905, agr=0.97), ref, 0.92, Demands(max_drop=1.0))
    assert o.rel == pytest.approx(0.5) and o.drop == pytest.approx(1.5) and o.misses and not o.meets
    # Paired, conservative SE (core/claims): var(d) <= P(predictions differ) - drop^2.
    assert o.drop_se == pytest.approx(100 * np.sqrt((0.03 - 0.015 ** 2) / 499), abs=1e-3)
    assert judge(_row(acc=0.915, agr=0.98), ref, 0.92, Demands(max_drop=1.0)).meets
    assert judge(_row(ms=3.0), ref, 0.90, Demands(max_latency_ms=2.5)).misses[0].startswith("latency")
    assert "size" in judge(_row(size=9e6), ref, 0.90, Demands(), max_model_mb=8).misses[0]
    assert judge(_row(acc=None), ref, None, Demands(max_drop=1)).drop == pytest.approx(1.0)  # agreement points
    assert judge(_row(acc=0.80), ref, 0.92, Demands(min_accuracy=85)).misses[0].startswith("accuracy")
    assert not judge(_row(status="failed_validation", ms=None), ref, 0.92, Demands(max_drop=1)).meets
    # A backbone's features: judged on cosine alone, whatever top-1 says about them.
    feat = {**_row(acc=0.0, agr=0.2), "cosine": 0.9991}
    assert judge(feat, ref, 0.0, Demands(min_cosine=0.999)).meets
    assert judge(feat, ref, 0.0, Demands(min_cosine=0.9995)).misses == ["cosine 0.99910 < 0.9995"]
    assert judge(feat, ref, 0.0, Demands(min_cosine=0.9995)).missed_accuracy  # int8 follow-ups run for it
    assert judge(_row(), ref, 0.92, Demands(min_cosine=0.99)).misses[0].startswith("cosine unknown")


def _measured(*items):
    return {f"m:{c.name}": (c, o) for c, o in items}


def test_pruning_needs_a_measured_lower_bound():
    x86 = hardware.load("x86")
    d = Demands(max_drop=1)
    int8 = Candidate("m", "openvino", "int8", 0, calib_method="auto")
    best = (Candidate("m", "tflite", "fp32", 1), Outcome("ok", rel=0.5, latency_ms=1))
    slow_int8 = Outcome("ok", rel=0.8, latency_ms=2, misses=["drop 3 > 1"])
    fast_int8 = Outcome("ok", rel=0.3, latency_ms=1, misses=["drop 3 > 1"])
    variant = Candidate("m", "openvino", "int8", 0, "calib", "entropy")
    repair = Candidate("m", "openvino", "int8", 0, "repair", "auto", True)
    # A calibration variant / repair of an int8 cell slower than the best cannot win: same graph, or more float.
    for c in (variant, repair):
        assert "cannot beat tflite-fp32" in prune_reason(c, _measured((int8, slow_int8)), best, x86, d, False)
        assert prune_reason(c, _measured((int8, fast_int8)), best, x86, d, False) is None
        assert prune_reason(c, {}, best, x86, d, False) is None  # nothing measured: no bound, it runs
        assert prune_reason(c, _measured((int8, slow_int8)), None, x86, d, False) is None  # no best yet
    # fp16 on a CPU without fp16 arithmetic is bounded by the same backend's fp32; not on a GPU profile.
    fp32 = Candidate("m", "openvino", "fp32", 1)
    fp16 = Candidate("m", "openvino", "fp16", 2)
    m = _measured((fp32, Outcome("ok", rel=0.9, latency_ms=2)))
    assert prune_reason(fp16, m, best, x86, d, False)
    assert prune_reason(fp16, m, best, hardware.load("jetson-orin"), d, False) is None
    # fp32 after an int8 cell of the same backend that met everything: only where the profile says int8 wins.
    ok_int8 = _measured((int8, Outcome("ok", rel=0.6, latency_ms=1.2)))
    assert prune_reason(fp32, ok_int8, best, x86, d, False) is None  # x86 claims it only with VNNI
    assert prune_reason(fp32, ok_int8, best, x86, d, True)
    assert prune_reason(fp32, ok_int8, best, hardware.load("rtx"), d, False)
    assert prune_reason(fp32, _measured((int8, slow_int8)), best, hardware.load("rtx"), d, False) is None  # missed


def test_input_errors(tmp_path, run_cli):
    with pytest.raises(InputError, match="needs calibration data"):
        auto(FM / "model.onnx", "x86", validation=FM / "val.npz", output=tmp_path / "o")
    with pytest.raises(InputError, match="--val"):
        auto(FM / "model.onnx", "x86", calibration=FM / "calib.npz", output=tmp_path / "o")
    with pytest.raises(InputError, match="not a target of hardware 'mcu'"):
        auto(FM / "model.onnx", "mcu", backends="openvino", output=tmp_path / "o", **FM_DATA)
    code, _, err = run_cli("auto", FM / "model.onnx", "--hardware", "x86", "--val", FM / "val.npz", "-o", tmp_path / "o")
    assert code == 2 and "needs calibration data" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("auto", FM / "model.onnx", "--hardware", "pdp11", "-o", tmp_path / "o")
    assert code == 2


# ---------------------------------------------------------------- real searches on the bundled model

@pytest.fixture(scope="module")
def x86_run(tmp_path_factory):
    """One search per session, shared by both xdist workers (conftest.built_once); read-only for the tests."""
    return built_once(tmp_path_factory, "auto-x86", lambda out: auto(
        FM / "model.onnx", "x86", backends="onnxruntime,tflite", max_drop=1.0, output=out, **FM_DATA, **FAST))


def test_end_to_end_x86_returns_a_validated_winner(x86_run):
    res, out = x86_run
    rep = json.loads((out / "report.json").read_text())
    assert {"report.json", "report.md", "index.html", "pareto.png", "artifact"} <= {p.name for p in out.iterdir()}
    w = rep["winner"]
    assert w is not None and res.winner["candidate"] == w["candidate"] and w["drop_points"] <= 1.0
    rows = {r["candidate"]: r for r in rep["cells"]}
    assert sum(r["decision"] == "won" for r in rep["cells"]) == 1
    # The winner is the fastest cell meeting the budget: in the playoff when close cells had one, else in the
    # final side-by-side run.
    met = [r for r in rep["cells"] if r["status"] == "ok" and not r["misses"] and r["latency_ms_median"]]
    po = rep["playoffs"].get("model")
    if po:
        medians = {c["candidate"]: c["median_ms"] for c in po["cells"]}
        assert w["candidate"] in medians and medians[w["candidate"]] == min(medians.values())
        assert "playoff" in w["why"]
    else:
        assert all(r["latency_ms_median"] >= w["latency_ms_median"] for r in met)
    # fp16 on a CPU without fp16 arithmetic is bounded by the measured fp32 cell of the same backend.
    for b in ("onnxruntime", "tflite"):
        assert rows[f"{b}-fp16"]["decision"] == "skipped" and f"{b}-fp32" in rows[f"{b}-fp16"]["why"]
        assert rows[f"{b}-int8"]["status"] == "ok"
    for r in rep["cells"]:
        assert r["why"], r
    # The published artifact is a complete, verifiable copy that runs.
    art = edgec.load(out / "artifact")
    x = np.load(FM / "val.npz")["images"][:1, None].astype(np.float32) / 255
    y = art.run({"input": x})
    assert next(iter(y.values())).shape == (1, 10)
    art.close()
    md = (out / "report.md").read_text()
    assert "WINNER" in md and "why:" in md and w["candidate"] in md


def test_rerun_resumes_from_the_cache(x86_run, monkeypatch, tmp_path):
    res, shared = x86_run
    out = tmp_path / "x86"  # the cells' cache lives in the output: a copy resumes as the original would
    shutil.copytree(shared, out, symlinks=True)
    calls = []
    real = compiler.compile
    monkeypatch.setattr(compiler, "compile", lambda *a, **k: calls.append(a) or real(*a, **k))
    again = auto(FM / "model.onnx", "x86", backends="onnxruntime,tflite", max_drop=1.0, output=out, **FM_DATA, **FAST)
    assert calls == []  # every cell came from compare's cache
    ran = [r for r in again.report["cells"] if r["status"] == "ok"]
    assert ran and all(r["reused"] for r in ran)
    assert "cached" in (out / "report.md").read_text()


def test_budget_stops_new_rounds(tmp_path):
    ticks = iter([0.0] + [1e9] * 100)  # the baseline round starts in budget, nothing after it
    res = auto(FM / "model.onnx", "x86", backends="onnxruntime", max_drop=1.0, output=tmp_path / "b",
               budget_minutes=1, clock=lambda: next(ticks), **FM_DATA, **FAST)
    rows = {r["candidate"]: r for r in res.report["cells"]}
    assert rows["onnxruntime-fp32"]["status"] == "ok"
    assert rows["onnxruntime-int8"]["decision"] == "not tried"
    assert any("budget" in n for n in res.report["notes"])


def test_end_to_end_mcu_gives_integer_io(tmp_path):
    res = auto(FM / "model.onnx", "mcu", max_drop=1.0, output=tmp_path / "mcu", **FM_DATA, **FAST)
    assert res.winner and res.winner["backend"] == "tflite" and res.winner["proxy"]
    io = json.loads((res.artifact / "tflite_io.json").read_text())
    assert {t["dtype"] for t in io["inputs"] + io["outputs"]} <= {"int8", "uint8"}
    m = json.loads((tmp_path / "mcu" / "artifact" / "manifest.json").read_text())
    assert not [d for d in m["backend_info"]["file"]["tensor_dtypes"] if d.startswith("float")]
    ref = next(r for r in res.report["cells"] if r["kind"] == "baseline")
    assert ref["decision"] == "reference"  # the FP32 ONNX cannot be the answer on an integer-only device
