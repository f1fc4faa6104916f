"""`edgec benchmark` / `edgec.benchmark`: well-formed numbers, interleaving, JSON schema, memory measured in a
real child process, throughput streams, compare's memory columns, emulated labelling, and bad inputs.

Timing ratios are never asserted (a shared 2-core machine); only structure and invariants are.
"""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgec
import edgec.core.errors
from conftest import build_tiny_cnn
from edgec.core.benchmark import memory, stats, timing
from edgec.core.benchmark import api as bench_api

FAST = dict(iterations=30, warmup=2)
BACKENDS = ("onnxruntime", "openvino", "tflite")


@pytest.fixture(scope="session")
def arts(tmp_path_factory):
    """The tiny CNN compiled fp32 for onnxruntime, openvino and tflite (those installed)."""
    d = tmp_path_factory.mktemp("bench")
    src = d / "tiny.onnx"
    onnx.save(build_tiny_cnn(), str(src))
    out = {}
    for b in BACKENDS:
        row = next((r for r in edgec.list_backends() if r["name"] == b), None)
        if not row or not row["available"]:
            continue
        out[b] = edgec.compile(src, backend=b, precision="fp32", output=d / b, force=True).path
    if "onnxruntime" not in out:
        pytest.skip("onnxruntime backend not available")
    return out


@pytest.fixture(scope="session")
def static_art(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench_static")
    m = build_tiny_cnn()
    for v in (m.graph.input[0], m.graph.output[0]):
        v.type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(m, str(d / "static.onnx"))
    return edgec.compile(d / "static.onnx", backend="onnxruntime", output=d / "art", force=True).path


def _check_latency(lat: dict, runs: int):
    assert lat["runs"] == runs
    assert 0 < lat["min"] <= lat["median"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    lo, hi = lat["median_ci95"]
    assert lo <= lat["median"] <= hi and hi > lo


@pytest.mark.slow  # minutes on the shared 2-core machine (issue 17: default run <= 5 min); `pytest -m slow`
def test_numbers_well_formed_and_interleaved(arts):
    names = [str(p) for p in arts.values()]
    rep = edgec.benchmark(names, **FAST)
    j = rep.to_json()
    assert j["mode"] == "latency" and j["streams"] == 1 and j["threads"] == 1
    # Interleaving: every round times every artifact once, the start rotating round by round.
    assert len(j["rounds"]) == 30
    for r, seq in enumerate(j["rounds"]):
        k = r % len(names)
        assert seq == names[k:] + names[:k]
    for a, p in zip(rep.artifacts, arts.values()):
        assert a["error"] is None and a["backend"] == p.name and a["where"] == "host" and not a["emulated"]
        _check_latency(a["latency_ms"], 30)
        assert a["throughput"]["inferences_per_s"] == pytest.approx(1e3 / a["latency_ms"]["mean"])
        assert a["vs_first"]["ranked"] and a["vs_first"]["latency_ratio"] > 0
        lo, hi = a["vs_first"]["latency_ratio_ci95"]
        assert lo <= a["vs_first"]["latency_ratio"] <= hi
        mem = a["memory"]
        man = json.loads((p / "manifest.json").read_text())
        assert mem["size_on_disk_bytes"] == sum(f["size"] for f in man["files"].values()) > 0
        assert mem["peak_rss_bytes"] > 20e6 and mem["baseline_peak_rss_bytes"] > 20e6
        assert mem["child_pid"] != os.getpid()
        # The high-water mark covers every resident figure the child saw of itself along the way.
        rss = mem["child_rss_bytes"]
        assert 0 < rss["before_load"] and max(rss.values()) <= mem["peak_rss_bytes"]
    assert rep.artifacts[0]["vs_first"]["latency_ratio"] == 1.0


@pytest.mark.slow  # minutes on the shared 2-core machine (issue 17: default run <= 5 min); `pytest -m slow`
def test_memory_child_measures_the_load(tmp_path):
    """A model with a 40 MB weight must raise the child's peak over the runtime-only child by about that."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((3200, 3200)).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "big",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3200])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3200])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "big.onnx"))
    art = edgec.compile(tmp_path / "big.onnx", backend="onnxruntime", output=tmp_path / "art", val_samples=2).path
    feeds = {"x": rng.standard_normal((1, 3200)).astype(np.float32)}
    mem = memory.measure(art, "onnxruntime", feeds, threads=1, runs=2)
    assert mem["increment_bytes"] > 35e6, mem
    assert mem["load_increment_bytes"] > 35e6, mem


def test_cli_json_schema(arts, run_cli):
    code, out, err = run_cli("benchmark", arts["onnxruntime"], "-n", "20", "--warmup", "1", "--json")
    assert code == 0, err
    j = json.loads(out)
    assert set(j) >= {"edgec_version", "mode", "streams", "threads", "batch", "warmup", "iterations", "duration_s",
                      "ci_method", "order", "rounds", "host", "artifacts"}
    assert len(j["host"]["load_average"]) == 3
    (a,) = j["artifacts"]
    assert set(a) == {"artifact", "backend", "precision", "where", "emulated", "device_timed", "input", "parallel",
                      "error", "latency_ms", "throughput", "vs_first", "memory"}
    assert set(a["latency_ms"]) >= {"min", "median", "p90", "p99", "max", "mean", "median_ci95", "runs"}
    assert set(a["memory"]) >= {"peak_rss_bytes", "baseline_peak_rss_bytes", "increment_bytes", "size_on_disk_bytes"}
    code, out, _ = run_cli("benchmark", arts["onnxruntime"], "-n", "20", "--no-memory")
    assert code == 0 and "median ms" in out and "peak RSS MB" in out and "batch-medians" in out


def test_batch_and_input(arts, tmp_path):
    rep = edgec.benchmark(arts["onnxruntime"], batch=4, measure_memory=False, **FAST)
    a = rep[0]
    assert a["error"] is None and a["throughput"]["samples_per_s"] == pytest.approx(4 * a["throughput"]["inferences_per_s"])
    np.savez(tmp_path / "d.npz", input=np.random.default_rng(0).uniform(0, 1, (3, 3, 16, 16)).astype(np.float32))
    a = edgec.benchmark(arts["onnxruntime"], batch=2, input=tmp_path / "d.npz", measure_memory=False, **FAST)[0]
    assert a["error"] is None and "d.npz" in a["input"]
    if "openvino" in arts:  # built for batch 1 (the manifest keeps the source's N): the runner's specs decide
        with pytest.raises(edgec.core.errors.InputError, match="static batch of 1"):
            edgec.benchmark(arts["openvino"], batch=4, measure_memory=False, **FAST)


def test_throughput_two_streams(arts):
    names = [str(arts[b]) for b in ("openvino", "onnxruntime") if b in arts]
    rep = edgec.benchmark(names, mode="throughput", streams=2, iterations=60, warmup=2, measure_memory=False)
    assert rep.settings["streams"] == 2
    for a in rep.artifacts:
        assert a["error"] is None
        tp = a["throughput"]
        assert tp["inferences_per_s"] > 0 and tp["requests"] >= 50 and len(tp["blocks"]) >= 3
        lo, hi = tp["ci95"]
        assert lo <= tp["inferences_per_s"] <= hi
        _check_latency(a["latency_ms"], tp["requests"])
    by = {a["backend"]: a for a in rep.artifacts}
    if "openvino" in by:
        assert "async requests" in by["openvino"]["parallel"] and "NUM_STREAMS=2" in by["openvino"]["parallel"]
    assert by["onnxruntime"]["parallel"] == "2 Python threads, one runner each"


def test_threaded_streams_really_parallel(arts):
    """Two runners over two threads: every request is issued once and timed."""
    rs = [edgec.load(arts["onnxruntime"], threads=1) for _ in range(2)]
    feeds = {"input": np.zeros((1, 3, 16, 16), np.float32)}
    lat, wall = timing.threaded_streams(rs, feeds, iterations=40)
    assert len(lat) == 40 and wall > 0 and all(t > 0 for t in lat)


def test_emulated_is_labelled_and_not_ranked(arts, monkeypatch):
    """A runner that says it runs on the emulated board (as TVM's RpcRunner does) is labelled and never
    ranked against a host artifact. (The real board path: test_emulated_board_tvm, slow.)"""
    real = bench_api._load
    emu = str(arts["onnxruntime"]) + "-emu"
    shutil.copytree(arts["onnxruntime"], emu)

    def load(path, threads):
        r = real(path, threads)
        if path == emu:
            r.where = "emulated board (qemu-user arm64, scripts/arm64_board.sh)"
        return r

    monkeypatch.setattr(bench_api, "_load", load)
    rep = edgec.benchmark([arts["onnxruntime"], emu], measure_memory=False, **FAST)
    a = rep[1]
    assert a["emulated"] and a["vs_first"] == {"ranked": False, "note": a["vs_first"]["note"]}
    assert "not ranked" in a["vs_first"]["note"]
    from edgec.core.benchmark.command import format_report
    assert "EMULATED" in format_report(rep.to_json())


@pytest.mark.slow
def test_emulated_board_tvm(tmp_path):
    from edgec.backends.tvm.runner import DEFAULT_BOARD, listening
    if shutil.which("aarch64-linux-gnu-gcc") is None or not listening(*DEFAULT_BOARD):
        pytest.skip("emulated board not running: scripts/arm64_board.sh setup && scripts/arm64_board.sh start")
    onnx.save(build_tiny_cnn(), str(tmp_path / "t.onnx"))
    art = edgec.compile(tmp_path / "t.onnx", backend="tvm", output=tmp_path / "rpi", options={"target": "rpi4"}).path
    a = edgec.benchmark(art, iterations=10, warmup=1, measure_memory=False)[0]
    assert a["emulated"] and a["device_timed"] and a["error"] is None


def test_compare_rows_carry_memory(tmp_path):
    onnx.save(build_tiny_cnn(), str(tmp_path / "t.onnx"))
    rep = edgec.compare(tmp_path / "t.onnx", ["onnxruntime"], "fp32", output=tmp_path / "rep", runs=5, warmup=1,
                        threads=1)
    row = rep.row("onnxruntime", "fp32")
    assert row["status"] == "ok" and row["peak_rss_bytes"] > 20e6 and row["memory_increment_bytes"] is not None
    assert "peak RSS MB" in (tmp_path / "rep" / "report.md").read_text()


def test_stats_interval():
    t = np.linspace(1e-3, 2e-3, 100)
    s = stats.latency_summary(t)
    assert s["blocks"] == 10 and s["median_ci95"][0] <= s["median"] <= s["median_ci95"][1]
    assert stats.latency_summary([1e-3, 2e-3])["median_ci95"] is None  # too few blocks: no interval claimed
    r = stats.ratio_summary(t, 2 * t)
    assert r["latency_ratio"] == pytest.approx(2.0) and r["latency_ratio_ci95"] == pytest.approx([2.0, 2.0])


@pytest.mark.parametrize("args, needle", [
    (["{tmp}"], "not an edgec artifact"),
    (["{tmp}/nope"], "artifact not found"),
    (["{ort}", "--iterations", "0"], "--iterations must be >= 1"),
    (["{ort}", "--streams", "-1"], "--streams must be >= 1"),
    (["{ort}", "--batch", "0"], "--batch must be >= 1"),
    (["{static}", "--batch", "3"], "static batch of 1"),
    (["{ort}", "--duration", "soon"], "--duration"),
    (["{ort}", "--duration", "0s"], "--duration must be positive"),
    (["{ort}", "--mode", "latency", "--streams", "2"], "needs --mode throughput"),
    (["{ort}", "--threads", "0"], "--threads must be >= 1"),
    (["{ort}", "{ort}"], "given twice"),
    (["{tampered}"], "does not match its manifest"),
])
def test_bad_inputs_one_line_exit_2(arts, static_art, tmp_path, run_cli, args, needle):
    tampered = tmp_path / "tampered"
    shutil.copytree(arts["onnxruntime"], tampered)
    with open(tampered / "model.onnx", "ab") as f:
        f.write(b"\0")
    subst = {"{tmp}": str(tmp_path), "{ort}": str(arts["onnxruntime"]), "{static}": str(static_art),
             "{tampered}": str(tampered)}
    argv = [subst.get(a, a.replace("{tmp}", str(tmp_path))) for a in args]
    code, out, err = run_cli("benchmark", *argv, "--no-memory", "-n" if "--iterations" not in args
                             and "--duration" not in args else "--warmup", "5")
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgec: error:") and needle in lines[0], err


@pytest.mark.slow
def test_tvm_host_artifact(tmp_path):
    """TVM (host target): the compile alone takes ~1.5 min on 2 busy cores, hence slow."""
    pytest.importorskip("tvm")
    onnx.save(build_tiny_cnn(), str(tmp_path / "t.onnx"))
    art = edgec.compile(tmp_path / "t.onnx", backend="tvm", output=tmp_path / "tvm").path
    a = edgec.benchmark(art, iterations=20, warmup=2)[0]
    assert a["error"] is None and a["where"] == "host" and not a["emulated"]
    _check_latency(a["latency_ms"], 20)
    assert a["memory"]["peak_rss_bytes"] > 20e6
