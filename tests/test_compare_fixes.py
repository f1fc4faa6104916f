"""What a new user met in `edgec compare` (issue #21): random-input agreement, cached compile times,
enough runs for a p90, overlapping Pareto labels, several models in one report."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import edgec
from edgec.core.compare.render import _column_labels, _place_labels

from conftest import build_tiny_cnn

FAST = dict(runs=5, warmup=1, threads=1, memory=False)


def test_random_inputs_show_no_agreement_and_cached_compiles_say_so(tmp_path, tiny_cnn_path):
    out = tmp_path / "r"
    rep = edgec.compare(tiny_cnn_path, ["onnxruntime"], "fp32", output=out, min_seconds=0.3, **FAST)
    row = rep.row("onnxruntime", "fp32")
    assert row["status"] == "ok" and row["cosine"] is not None
    # 8 random inputs: one flipped sample would read as 87.5 % agreement, so none is shown.
    assert row["top1_agreement"] is None and row["top1_accuracy"] is None and "random inputs" in row["validated_on"]
    assert "n/a: random inputs" in (out / "report.md").read_text()
    # A duration floor: a sub-millisecond cell gets far more than `runs` timed runs.
    assert row["latency_runs"] > FAST["runs"]
    again = edgec.compare(tiny_cnn_path, ["onnxruntime"], "fp32", output=out, min_seconds=0, **FAST)
    r2 = again.row("onnxruntime", "fp32")
    assert r2["reused"] and r2["latency_runs"] == FAST["runs"]
    assert "(cached)" in (out / "report.md").read_text()


def _labels_overlap(fig, ax) -> list:
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    from matplotlib.text import Text
    texts = [c for c in ax.get_children() if isinstance(c, Text) and c.get_text()]  # annotations are Texts
    boxes = [Text.get_window_extent(t, r) for t in texts]  # the text itself, not an annotation's leader line
    return [(i, j) for i, a in enumerate(boxes) for j, b in enumerate(boxes) if i < j and a.overlaps(b)], len(boxes)


@pytest.mark.parametrize("n", [4, 16])
def test_pareto_labels_never_overlap(n):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(n)
    labels = [(f"backend{i % 4} int8 variant{i} {1 + rng.random():.2f}x", 0.3 + 0.01 * rng.random(),
               94 + 0.2 * rng.integers(0, 3)) for i in range(n)]  # a dense cluster, as sub-ms cells are
    fig, ax = plt.subplots(figsize=(11, 6), dpi=120)
    ax.scatter([x for _, x, _ in labels], [y for _, _, y in labels])
    ax.set_xlim(0, 0.45)
    ax.set_ylim(93.5, 94.8)
    _place_labels(fig, ax, labels)
    pairs, count = _labels_overlap(fig, ax)
    assert count == n and pairs == []
    plt.close(fig)
    # The fallback layout on its own: one label per row of a margin column.
    fig, ax = plt.subplots(figsize=(11, 6), dpi=120)
    _column_labels(fig, ax, labels)
    pairs, count = _labels_overlap(fig, ax)
    assert count == n and pairs == []
    plt.close(fig)


def test_several_models_one_report(tmp_path, tiny_data):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    onnx.save(build_tiny_cnn(seed=0), str(a))
    onnx.save(build_tiny_cnn(seed=1), str(b))
    out = tmp_path / "both"
    rep = edgec.compare([a, b], ["onnxruntime"], "fp32", output=out, validation=tiny_data, calibration=tiny_data,
                        **FAST)
    assert [(r["model"], r["precision"]) for r in rep.rows] == [("a", "fp32"), ("b", "fp32")]
    data = json.loads((out / "report.json").read_text())
    assert len(data["models"]) == 2 and (out / "pareto.png").exists() and (out / "a" / "report.json").exists()
    md = (out / "report.md").read_text()
    assert "a: onnxruntime" in md and "b: onnxruntime" in md


def test_simulated_latency_gets_no_speedup_and_ratios_carry_a_ci():
    """A QNN HTP simulator's (or an emulated board's) latency is labelled where it ran and divided by no host
    latency; host cells' speedups carry the paired-block 95 % interval `edgec benchmark` states, so the
    two tools' ratios can be checked against each other's noise."""
    from edgec.core.backend import LatencyStats
    from edgec.core.compare.cell import TimingGroup
    from edgec.core.compare.sweep import _Cell, _apply_timing, _mark_pareto, _rows

    def lat(ms, blocks):
        return LatencyStats(30, 1, 1, ms, ms, ms, ms, blocks)

    cells = [_Cell("onnxruntime", "fp32", reference=True), _Cell("openvino", "int8"), _Cell("qnn", "int8")]
    for c in cells:
        c.status = "ok"
    sim = "QNN HTP simulator on x86-64 (emulated, not device latency)"
    g = TimingGroup("host", "host", {
        "onnxruntime-fp32": {"latency": lat(2.0, [2.0, 2.1, 1.9, 2.0]), "error": None, "memory": None, "where": "host"},
        "openvino-int8": {"latency": lat(1.0, [1.0, 1.0, 1.0, 1.05]), "error": None, "memory": None, "where": "host"},
        "qnn-int8": {"latency": lat(0.5, [0.5, 0.5, 0.5, 0.5]), "error": None, "memory": None, "where": sim}})
    _apply_timing(cells, [g])
    rows = _rows(cells)
    by = {r["backend"]: r for r in rows}
    assert by["openvino"]["speedup_vs_reference"] == 2.0
    lo, hi = by["openvino"]["speedup_ci95"]
    assert lo < 2.0 < hi and hi - lo < 0.5
    assert by["qnn"]["speedup_vs_reference"] is None and by["qnn"]["speedup_ci95"] is None
    assert sim in by["qnn"]["timed_on"]
    for r in rows:
        r["top1_accuracy"] = 0.9
    _mark_pareto(rows)
    assert not by["qnn"]["pareto"] and by["openvino"]["pareto"]


def test_compression_axis_adds_a_variant_per_spec(tmp_path, tiny_cnn_path, run_cli):
    """--compress SPEC: every cell once more with those steps; the rows show what compression shrinks (the
    entropy-coded weights), and a bad SPEC is compile's own one-line error. The bundled model: the tiny
    CNN's layers are below compression's minimum layer size."""
    fm = Path(__file__).resolve().parents[1] / "examples" / "fashion_mnist"
    rep = edgec.compare(fm / "model.onnx", "onnxruntime", "int8", output=tmp_path / "rep",
                        calibration=fm / "calib.npz", validation=fm / "val.npz", preprocess="unit", calib_samples=64,
                        val_samples=64, compress=["prune=0.5,prune-method=magnitude", "cluster=8,cluster-method=nearest"],
                        memory=False, runs=3, warmup=1, min_seconds=0, threads=1)
    rows = {(r["precision"], r["variant"]): r for r in rep.rows}
    prune, cluster = "prune0.5+prune-methodmagnitude", "cluster8+cluster-methodnearest"
    # the reference is added uncompressed; every asked-for cell comes once plain and once per SPEC
    assert set(rows) == {("fp32", None), ("int8", None), ("int8", prune), ("int8", cluster)}
    assert rows["fp32", None]["reference"] and all(r["status"] == "ok" for r in rep.rows), rep.rows
    assert rows["int8", prune]["weights_ans_bytes"] < 0.8 * rows["int8", None]["weights_ans_bytes"]
    assert rows["int8", cluster]["weights_ans_bytes"] < 0.8 * rows["int8", None]["weights_ans_bytes"]
    m = json.loads((Path(rows["int8", prune]["artifact"]) / "manifest.json").read_text())
    assert m["compression"]["steps"][0]["technique"] == "prune"
    code, _out, err = run_cli("compare", tiny_cnn_path, "-b", "onnxruntime", "-p", "fp32", "-o", tmp_path / "bad",
                              "--compress", "prune=2")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--prune 2" in err, err
