"""`edgec debug` (layerwise comparison, bisection, HTML report) and the precision audit on every backend.

The models are tiny and built here: a Conv-Relu-Conv-Relu-GAP-Gemm classifier whose second conv has one
huge weight per output channel, so per-channel int8 rounds its other weights to zero and that layer's own
error dwarfs the others'. Audits are proven with a layer made to stay float (--keep-fp32): the line must
call exactly that layer float, for the reason that it has FP32 weights, on every backend's runtime.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgec
from edgec.core.data import ArrayDataset
from edgec.core.debug import bisect as bis
from edgec.core.debug.audit import audit_artifact, summary_line
from edgec.core.debug.run import debug_artifact

BROKEN = "conv_b"  # the layer whose int8 weights are wrecked by one outlier per output channel


def _tiny(seed: int = 0, outlier: float = 12.0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((8, 3, 3, 3)) * 0.3
    w2 = rng.standard_normal((8, 8, 3, 3)) * 0.15
    w2[:, 0, 0, 0] = outlier  # its input channel 0 is ~0 (below), so FP32 barely feels it; int8 loses the rest
    w3 = rng.standard_normal((8, 8, 1, 1)) * 0.3
    wf = rng.standard_normal((10, 72))
    b1 = rng.standard_normal(8) * 0.1
    b1[0] = -20.0  # channel 0 of relu_a is almost always 0
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["ca"], pads=[1, 1, 1, 1], name="conv_a"),
        helper.make_node("Relu", ["ca"], ["ra"], name="relu_a"),
        helper.make_node("Conv", ["ra", "w2", "b2"], ["cb"], pads=[1, 1, 1, 1], name=BROKEN),
        helper.make_node("Relu", ["cb"], ["rb"], name="relu_b"),
        helper.make_node("Conv", ["rb", "w3", "b3"], ["cc"], name="conv_c"),
        helper.make_node("Relu", ["cc"], ["rc"], name="relu_c"),
        helper.make_node("AveragePool", ["rc"], ["gap"], kernel_shape=[4, 4], strides=[4, 4], name="pool"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], transB=1, name="fc"),
    ]
    f = lambda n, a: numpy_helper.from_array(np.asarray(a, np.float32), n)  # noqa: E731
    inits = [f("w1", w1), f("b1", b1), f("w2", w2), f("b2", rng.standard_normal(8) * 0.1), f("w3", w3),
             f("b3", rng.standard_normal(8) * 0.1), f("wf", wf), f("bf", rng.standard_normal(10) * 0.1)]
    g = helper.make_graph(nodes, "debug_tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 12, 12])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    # Centre the logits on the data, so the top-1 class depends on the input (and int8 error can flip it).
    import onnxruntime as ort
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    x = _data(64, 7)
    mean = np.mean([sess.run(None, {"input": x[i:i + 1]})[0][0] for i in range(len(x))], axis=0)
    bf = next(i for i in m.graph.initializer if i.name == "bf")
    bf.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(bf) - mean).astype(np.float32), "bf"))
    return m


def _data(n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, 3, 12, 12)) * 2).astype(np.float32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("debug_tiny")
    path = d / "tiny.onnx"
    onnx.save(_tiny(), path)
    np.savez(d / "calib.npz", input=_data(48, 1))
    np.savez(d / "val.npz", input=_data(64, 2))
    return d


def _compile(tiny: Path, backend: str, keep=None, out: str | None = None, **kw):
    return edgec.compile(str(tiny / "tiny.onnx"), backend=backend, precision="int8", calibration=str(tiny / "calib.npz"),
                         validation=str(tiny / "val.npz"), output=str(tiny / (out or f"{backend}-{bool(keep)}")),
                         force=True, keep_fp32=keep, min_cosine=-1.0, **kw)


def _val(tiny: Path, n: int = 16):
    return ArrayDataset({"input": np.load(tiny / "val.npz")["input"][:n]}, source="val")


def _audit_rows(art) -> dict[str, dict]:
    a = art.manifest["audit"]
    assert "layers" in a, a
    return {r["name"]: r for r in a["layers"]}


def _check_kept_float(art, kept: str, integer_layers: list[str]):
    rows = _audit_rows(art)
    assert rows[kept]["precision"] in ("fp32", "fp16"), rows[kept]
    assert "FP32 weights" in rows[kept]["why"] or "kept FP32" in rows[kept]["why"], rows[kept]
    for name in integer_layers:
        assert rows[name]["precision"].startswith(("int8", "int16")), rows[name]
    line = art.manifest["audit"]["summary"]
    n_int = sum(r["precision"].startswith(("int8", "int16")) for r in rows.values())
    assert line.startswith(f"{n_int} of {len(rows)} conv/gemm layers run INT"), line
    assert kept in line.split("not integer:")[1], line


# ------------------------------------------------------------------------------------------ pure parts

def test_search_finds_the_smallest_prefix_with_few_probes():
    calls = []

    def probe(k):
        calls.append(k)
        return {"k": k, "agreement": 90.0 + (k >= 11) * 9.0, "drop": None}

    k, steps = bis.search([f"l{i}" for i in range(40)], probe, 98.0, None)
    assert k == 11
    assert len(calls) <= 2 * 6 + 1 and len(set(calls)) == len(calls)
    assert bis.search(["a", "b"], lambda k: {"agreement": 10.0}, 98.0, None)[0] is None
    assert bis.search(["a"], lambda k: {"agreement": 99.0}, 98.0, None)[0] == 0


def test_candidates_are_complete_so_the_all_float_end_is_reached():
    # ranked first (a name the unit cannot keep is dropped), then every other quantized tensor in graph order
    everything = ["input", "a", "b", "cat_in", "c"]
    assert bis.candidates(["c", "a", "gone"], everything) == ["c", "a", "input", "b", "cat_in"]

    def probe(k):  # only the FP32 end (every tensor float) meets the demand: a ranked-only list never gets there
        return {"k": k, "agreement": 100.0 if k == len(cands) else 97.0}

    cands = bis.candidates(["c", "a"], everything)
    assert bis.search(["c", "a"], probe, 98.0, None)[0] is None
    assert bis.search(cands, probe, 98.0, None)[0] == len(everything)
    manifest = {"quantization": {"quantized_activations": ["input", "a"], "float_tensors": ["b"]}}
    assert bis.universe(manifest, "tensors") == ["input", "a", "b"]
    legacy = [{"tensor": "x", "runtime_tensor": "x_DequantizeLinear_Output", "suspect": "..."},
              {"tensor": "y", "runtime_tensor": "y"}]
    assert bis.universe({}, "tensors", legacy) == ["x"]


def test_demand_is_judged_on_the_bound_when_a_row_has_one():
    # 99 % observed on a few hundred images is not 98 % when the estimate minus its standard error is 97
    assert not bis.meets({"agreement": 99.0, "agreement_bound": 97.0}, 98.0, None)
    assert bis.meets({"agreement": 97.0, "agreement_bound": 98.5}, 98.0, None)
    assert bis.meets({"agreement": 99.0}, 98.0, None) and not bis.meets({"drop": 1.2, "drop_bound": 2.5}, None, 2.0)


def test_shrink_drops_what_only_came_along_with_the_prefix():
    need = {"a", "c"}  # the demand needs exactly these two; the prefix found holds four
    calls = []

    def probe(keep):
        calls.append(list(keep))
        return {"k": len(keep), "keep": keep, "agreement": 99.0 if need <= set(keep) else 95.0}

    keep, rows = bis.shrink(["a", "b", "c", "d"], probe, 98.0, None, budget=10)
    assert keep == ["a", "c"] and calls[0] == ["a", "b", "c"]  # least ranked (last) tried first
    assert bis.shrink(["a", "b", "c", "d"], probe, 98.0, None, budget=1)[0] == ["a", "b", "c"]


def _fire_graph() -> onnx.ModelProto:
    """conv1 -> squeeze -> (expand 1x1, expand 3x3) -> Concat -> conv_n: SqueezeNet's fire module in small."""
    rng = np.random.default_rng(0)
    f = lambda n, *shape: numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), n)  # noqa: E731
    conv = lambda name, x, w, y, **kw: helper.make_node("Conv", [x, w], [y], name=name, **kw)  # noqa: E731
    relu = lambda x, y: helper.make_node("Relu", [x], [y], name=f"relu_{y}")  # noqa: E731
    nodes = [conv("conv1", "input", "w1", "c1", pads=[1, 1, 1, 1]), relu("c1", "r1"),
             conv("squeeze", "r1", "ws", "cs"), relu("cs", "s"),
             conv("expand1", "s", "we1", "ce1"), relu("ce1", "e1"),
             conv("expand3", "s", "we3", "ce3", pads=[1, 1, 1, 1]), relu("ce3", "e3"),
             helper.make_node("Concat", ["e1", "e3"], ["cat"], axis=1, name="concat"),
             conv("conv_n", "cat", "wn", "n")]
    g = helper.make_graph(nodes, "fire", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("n", TensorProto.FLOAT, None)],
                          [f("w1", 8, 3, 3, 3), f("ws", 4, 8, 1, 1), f("we1", 8, 4, 1, 1), f("we3", 8, 4, 3, 3),
                           f("wn", 10, 16, 1, 1)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_cost_model_finds_the_layers_a_keep_set_turns_float_and_the_tensors_it_strands():
    from edgec.core.debug.cost import CostModel

    cm = CostModel(_fire_graph(), ["input", "r1", "s", "e1", "e3", "cat", "n"])
    assert cm.base == {"conv1", "squeeze", "expand1", "expand3", "conv_n"}
    assert cm.macs["expand3"] == 8 * 8 * 8 * 4 * 9 and cm.macs["expand1"] == 8 * 8 * 8 * 4
    # the squeeze output float: the squeeze and both expands lose int8; their outputs' Q/DQ now serve no
    # int8 layer (conv_n reads the Concat's own quantized output), so they are stranded and closed over
    assert cm.int8_layers(["s"]) == {"conv1", "conv_n"}
    assert cm.stranded(["s"]) == ["e1", "e3"] and cm.close(["s"]) == ["s", "e1", "e3"]
    assert cm.close(["s", "cat"]) == ["s", "cat", "e1", "e3", "n"]  # conv_n float too: its output goes
    assert cm.close(["e1"]) == ["e1"]  # expand3 still writes e3, conv_n still reads cat
    left = cm.int8_macs(["s"])
    total = sum(cm.macs.values())
    assert left["int8_layers"] == 2 and left["int8_macs_fraction"] == pytest.approx(
        (cm.macs["conv1"] + cm.macs["conv_n"]) / total, abs=1e-4)
    assert cm.int8_macs(cm.close(["input", "s", "cat"]))["int8_layers"] == 0
    # latency-aware order: at equal own error the 1x1 expand (the fewest int8 MACs) goes first
    assert cm.order_by_cost(["e3", "e1", "s"], {"e3": 1.0, "e1": 1.0, "s": 1.0})[0] == "e1"
    assert cm.order_by_cost(["e3", "e1"], {"e3": 100.0, "e1": 1.0})[0] == "e3"


def test_latency_advice_says_use_fp32_when_the_keep_set_is_not_faster():
    lat = {"ratio": 2.02, "ratio_ci95": [1.96, 2.09], "fp32_ratio": 1.47, "fp32_ratio_ci95": [1.40, 1.54],
           "keep_vs_fp32": 1.374}
    a = bis.advise(lat)
    assert not a["faster_than_fp32"] and a["advice"].startswith("use FP32") and "1.37" in a["advice"]
    fast = dict(lat, ratio=1.2, ratio_ci95=[1.15, 1.25], keep_vs_fp32=0.816)
    assert bis.advise(fast)["faster_than_fp32"] and "build it" in bis.advise(fast)["advice"]
    near = dict(lat, ratio=1.45, ratio_ci95=[1.38, 1.52], keep_vs_fp32=0.986)
    assert not bis.advise(near)["faster_than_fp32"]  # within the noise of FP32 is not faster
    assert "no layer int8" in bis.advise(fast, {"int8_layers": 0})["advice"]
    assert not bis.advise({"ratio": 1.2}, {"int8_layers": 0})["faster_than_fp32"]
    line = bis.latency_line(dict(lat, int8_median_ms=15.6, keep_median_ms=31.6, fp32_median_ms=22.9, runs=200,
                                 threads=1, load_average=[1.0, 1.0, 1.0]))
    assert "FP32 22.9 ms = 1.470x INT8 [1.400, 1.540]" in line and "keep-set / FP32 = 1.374" in line


def test_summary_line_counts_and_names_the_float_layers():
    rows = [{"name": "a", "precision": "int8"}, {"name": "b", "precision": "fp32", "why": "kept"},
            {"name": "c", "precision": "int8"}]
    assert summary_line(rows) == "2 of 3 conv/gemm layers run INT8; 1 not integer: b (fp32: kept)"


def test_paired_test_counts_discordant_images():
    a = np.array([1, 1, 0, 0, 1], bool)
    b = np.array([1, 1, 1, 1, 0], bool)
    p = bis.paired(a, b)
    assert (p["gained"], p["lost"]) == (2, 1) and p["diff_points"] == pytest.approx(20.0)


# ------------------------------------------------------------------------------------------ onnxruntime

@pytest.fixture(scope="module")
def ort_base(tiny):
    return _compile(tiny, "onnxruntime")


def test_debug_names_the_broken_layer_onnxruntime(tiny, ort_base):
    rep = debug_artifact(ort_base.path, _val(tiny), samples=16)
    by_tensor = {e["tensor"]: e for e in rep["layers"]}
    assert {"input", "ra", "rb", "rc", "logits"} <= set(by_tensor)
    # the error the broken layer adds over its inputs is the largest, though every later tensor inherits it
    assert rep["ranking"][0] == BROKEN
    assert by_tensor["rb"]["own_sqnr_db"] < by_tensor["rc"]["own_sqnr_db"] - 6
    assert by_tensor["rc"]["sqnr_db"] < by_tensor["rc"]["own_sqnr_db"]  # rc's total error is mostly inherited
    assert rep["exposure"]["outputs_cosine_vs_artifact"] > 0.9999  # exposing tensors changed nothing
    assert rep["audit"]["summary"].startswith("3 of 4") or "of 4 conv/gemm" in rep["audit"]["summary"]


def test_audit_onnxruntime_reads_what_ort_runs_not_what_was_meant(tiny, ort_base, tmp_path):
    base = _audit_rows(ort_base)
    assert base[BROKEN]["precision"] == "int8" and base[BROKEN]["kernel"] == "QLinearConv"
    # Kept FP32 by the quantizer, with its input and output still Q/DQ (its neighbours quantize them):
    # ORT's WeightBiasQuantization would quantize the FP32 weights itself and run QLinearConv; edgec's
    # sessions disable it, so it runs float, and the manifest says what session setting that needs.
    kept = _compile(tiny, "onnxruntime", keep=[BROKEN], out="ort-keep1")
    assert kept.manifest["quantization"]["kept_fp32"] == [BROKEN]
    _check_kept_float(kept, BROKEN, ["conv_a", "conv_c"])
    assert "WeightBiasQuantization" in _audit_rows(kept)[BROKEN]["why"]
    assert kept.manifest["backend_info"]["session"]["disabled_optimizers"] == ["WeightBiasQuantization"]
    # The same artifact in a default onnxruntime session would run it int8: the audit reads ORT, not intent.
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt-default.onnx")
    ort.InferenceSession(str(kept.path / "model.onnx"), so, providers=["CPUExecutionProvider"])
    import onnx
    opt = onnx.load(so.optimized_model_filepath)
    assert sum(n.op_type == "QLinearConv" for n in opt.graph.node) == 3  # conv_b too: the reason for the setting
    # With the next layer kept too, nothing quantizes its output: it really runs float.
    both = _compile(tiny, "onnxruntime", keep=[BROKEN, "conv_c"], out="ort-keep2")
    _check_kept_float(both, BROKEN, ["conv_a"])
    assert _audit_rows(both)["conv_c"]["precision"] == "fp32"


def test_cli_debug_bisect_json_and_html(tiny, tmp_path):
    from edgec.core.cli import main

    out = tmp_path / "rep"
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["debug", str(tiny / "tiny.onnx"), "--backend", "onnxruntime", "--calib", str(tiny / "calib.npz"),
                   "--val", str(tiny / "val.npz"), "--samples", "8", "--bisect", "--min-agreement", "95",
                   "--holdout", str(tiny / "val.npz"), "-o", str(out), "--json"])
    assert rc == 0
    rep = json.loads(buf.getvalue())
    # the broken layer's input or output in float: either way it runs with its FP32 weights (checked below)
    assert rep["layers"] and {"ra", "rb"} & set(rep["keep"])
    b = rep["bisect"]
    chosen = next(s for s in b["steps"] if s["artifact"] == b["artifact"])
    assert b["met"] and b["steps"][0]["agreement"] < 95 and chosen["keep"] == rep["keep"]
    assert b["judged_on"] == "agreement_bound" and chosen["agreement_bound"] >= 95  # the smooth bound, not a count
    assert all(s["agreement_bound"] <= s["est_agreement"] for s in b["steps"])
    qa = json.loads((out / "keep-0" / "manifest.json").read_text())["quantization"]["quantized_activations"]
    assert b["candidates"] == len(qa) and 0 < b["ranked"] <= len(qa) and set(rep["keep"]) <= set(qa)
    assert "--float-tensors " + ",".join(rep["keep"]) in b["flag_line"]
    assert b["latency"]["ratio"] > 0 and b["holdout"]["keep_agreement"] >= b["holdout"]["int8_agreement"]
    lat = b["latency"]  # FP32 timed in the same interleaved loop, and a verdict either way
    assert lat["fp32_median_ms"] > 0 and lat["keep_vs_fp32"] > 0 and isinstance(lat["faster_than_fp32"], bool)
    assert lat["advice"].startswith("use FP32" if not lat["faster_than_fp32"] else "the keep-set runs at")
    assert b["closed"] and set(b["members"]) <= set(b["keep"]) and b["cost"]["int8_layers_base"] >= 1
    assert (out / "debug.json").is_file() and "<svg" in (out / "index.html").read_text()
    assert "FP32" in (out / "index.html").read_text() and "advice" in (out / "index.html").read_text()
    # the printed flag line builds the artifact that was measured
    argv = b["flag_line"].split()[1:]
    built = tmp_path / "from-flag-line"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv + ["--val", str(tiny / "val.npz"), "-o", str(built), "--min-cosine", "-1", "--json"]) == 0
    m = json.loads((built / "manifest.json").read_text())
    assert m["quantization"]["float_tensors"] == rep["keep"] and BROKEN in m["quantization"]["kept_fp32"]
    assert m["validation"]["top1_agreement"] * 100 == pytest.approx(chosen["agreement"])


def test_inspect_artifact_prints_the_audit(ort_base, capsys):
    from edgec.core.cli import main

    assert main(["inspect", str(ort_base.path), "--json"]) == 0
    a = json.loads(capsys.readouterr().out)
    assert a["backend"] == "onnxruntime" and re.match(r"\d+ of 4 conv/gemm layers run INT8", a["summary"])


def _chromium() -> str | None:
    return next((shutil.which(c) for c in ("chromium", "chromium-browser", "google-chrome") if shutil.which(c)), None)


def test_html_report_renders_in_headless_chromium(tiny, ort_base, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium binary found (Debian: apt-get install -y chromium)")
    from edgec.core.debug.report import write_report

    rep = debug_artifact(ort_base.path, _val(tiny, 8), samples=8)
    files = write_report(rep, tmp_path / "rep")
    png = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={png}", "--window-size=1200,900", Path(files["html"]).as_uri()],
                   check=True, capture_output=True, timeout=120)
    from PIL import Image
    img = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert img.shape[0] == 900 and img.shape[1] == 1200
    # the plot's red (own error) and blue (total error) lines are drawn
    red = ((img[..., 0] > 180) & (img[..., 1] < 80) & (img[..., 2] < 80)).sum()
    blue = ((img[..., 2] > 150) & (img[..., 0] < 80)).sum()
    assert red > 50 and blue > 50, (red, blue)
    keep = Path("/tmp/edgec-debug-screenshot.png")
    shutil.copy(png, keep)


# ------------------------------------------------------------------------------------------ other backends

def _need(backend: str):
    from edgec.core.registry import get_backend
    av = get_backend(backend).available()
    if not av.ok:
        pytest.skip(f"{backend}: {av.reason}")


def test_openvino_debug_and_audit(tiny):
    _need("openvino")
    base = _compile(tiny, "openvino", **{"options": {"weight_rounding": "nearest"}})
    rows = _audit_rows(base)
    assert all(r["precision"] == "int8" for n, r in rows.items() if n != "fc"), rows
    rep = debug_artifact(base.path, _val(tiny), samples=16)
    assert rep["ranking"][0] == BROKEN
    assert rep["exposure"]["outputs_cosine_vs_artifact"] > 0.999
    kept = _compile(tiny, "openvino", keep=[BROKEN], options={"weight_rounding": "nearest"})
    _check_kept_float(kept, BROKEN, ["conv_a", "conv_c"])


def _fire() -> onnx.ModelProto:
    """A SqueezeNet fire module: squeeze -> (expand1x1, expand3x3) -> Concat -> conv classifier."""
    rng = np.random.default_rng(0)
    f = lambda n, a: numpy_helper.from_array(np.asarray(a, np.float32), n)  # noqa: E731
    conv = lambda x, w, y, name, **kw: [helper.make_node("Conv", [x, w, "b" + w[1:]], ["c" + y], name=name, **kw),  # noqa: E731
                                        helper.make_node("Relu", ["c" + y], [y], name=name + "_relu")]
    nodes = (conv("input", "w0", "r0", "stem", pads=[1, 1, 1, 1]) + conv("r0", "ws", "rs", "squeeze")
             + conv("rs", "we1", "re1", "expand1x1") + conv("rs", "we3", "re3", "expand3x3", pads=[1, 1, 1, 1])
             + [helper.make_node("Concat", ["re1", "re3"], ["cat"], axis=1, name="concat")]
             + conv("cat", "wh", "rh", "head")
             + [helper.make_node("GlobalAveragePool", ["rh"], ["gap"], name="pool"),
                helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
                helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], transB=1, name="fc")])
    shapes = {"w0": (16, 3, 3, 3, 0.3), "ws": (8, 16, 1, 1, 0.3), "we1": (8, 8, 1, 1, 0.4), "we3": (8, 8, 3, 3, 0.15),
              "wh": (16, 16, 1, 1, 0.3), "wf": (10, 16, 1.0)}
    inits = []
    for w, (*shape, sd) in shapes.items():
        inits += [f(w, rng.standard_normal(shape) * sd), f("b" + w[1:], rng.standard_normal(shape[0]) * 0.1)]
    g = helper.make_graph(nodes, "fire", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 12, 12])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_openvino_concat_inputs_are_compared_at_their_real_scale(tiny, tmp_path):
    """convert_model drops the FakeQuantize of each input of a quantized Concat, so the only IR port
    named after an expand conv's (Relu-folded) output is its raw pre-Relu value: it came back with
    NMSE > 1 and was flagged suspect, unranked. Its value as the Concat's consumers read it is its
    slice of the Concat's FakeQuantize output."""
    _need("openvino")
    onnx.save(_fire(), tmp_path / "fire.onnx")
    art = edgec.compile(str(tmp_path / "fire.onnx"), backend="openvino", precision="int8",
                        calibration=str(tiny / "calib.npz"), validation=str(tiny / "val.npz"), output=str(tmp_path / "ov"),
                        min_cosine=-1.0, options={"weight_rounding": "nearest"})
    rep = debug_artifact(art.path, _val(tiny, 8), samples=8)
    by = {e["tensor"]: e for e in rep["layers"]}
    assert not [e["tensor"] for e in rep["layers"] if e.get("suspect")]
    for t, (a, b) in (("re1", (0, 8)), ("re3", (8, 16))):
        assert by[t]["runtime_tensor"] == f"cat_DequantizeLinear_Output[axis 1: {a}:{b}]", by[t]
        assert by[t]["sqnr_db"] > 20 and by[t]["own_sqnr_db"] > 20, by[t]
        assert t in rep["tensor_ranking"]
    assert by["cat"]["own_nmse"] == 0  # the Concat adds nothing: its inputs' slices are its output
    assert rep["exposure"]["outputs_cosine_vs_artifact"] > 0.999


def test_tflite_debug_and_audit(tiny):
    _need("tflite")
    base = _compile(tiny, "tflite", out="tflite-base")
    rep = debug_artifact(base.path, _val(tiny), samples=16)
    assert {"ra", "rb", "rc"} <= {e["tensor"] for e in rep["layers"]}
    assert rep["ranking"][0] == BROKEN
    assert rep["exposure"]["outputs_cosine_vs_artifact"] > 0.999  # builtin kernels vs XNNPACK: same answer
    kept = _compile(tiny, "tflite", keep=[BROKEN])
    rows = _audit_rows(kept)
    assert rows[BROKEN]["precision"] == "fp32" and "CONV_2D float32xfloat32" in rows[BROKEN]["kernel"]
    _check_kept_float(kept, BROKEN, ["conv_a", "conv_c", "fc"])


@pytest.mark.slow  # a TVM build of even this model takes minutes on the loaded 2-core machine
def test_tvm_audit_says_qdq_runs_as_float(tiny):
    _need("tvm")
    art = _compile(tiny, "tvm", out="tvm")
    a = art.manifest["audit"]
    assert a["summary"].startswith("0 of 4 conv/gemm layers run INT8"), a["summary"]
    assert "float arithmetic" in a["summary"]
    # compiled without -O debug_onnx=true: no ONNX to build a debug module from, and debug says how to get one
    rep = debug_artifact(art.path, _val(tiny, 4), samples=4)
    assert rep["layers"] == [] and "debug_onnx=true" in rep["exposure"]["unavailable"]


@pytest.mark.slow
def test_tvm_debug_build_exposes_the_layers_and_names_the_broken_one(tiny):
    # two TVM builds of the tiny model (the artifact, then the debug module): ~1-2 min, hence slow
    _need("tvm")
    art = _compile(tiny, "tvm", out="tvm-debug", options={"debug_onnx": True})
    assert (art.path / "model.onnx").is_file() and "model.onnx" in json.dumps(art.manifest.get("files"))
    rep = debug_artifact(art.path, _val(tiny, 8), samples=8)
    by = {e["tensor"]: e for e in rep["layers"]}
    assert {"ca", "ra", "cb", "rb", "rc", "logits"} <= set(by), sorted(by)
    # TVM's flavour quantizes symmetric int8 before the Relu: conv_a's output keeps its -20 channel, which
    # takes the range (8 dB own); then conv_b's wrecked weights. Both stand out; the Relus add nothing.
    assert set(rep["worst"][:2]) == {"ca", "cb"}, rep["worst"]
    assert by["ra"]["own_nmse"] == 0 and by["cb"]["own_sqnr_db"] < 25
    assert "debug build" in rep["exposure"]["note"]
    assert rep["exposure"]["outputs_cosine_vs_artifact"] > 0.9999  # the debug module computes what module.so does
    # the same Q/DQ ONNX on onnxruntime without fusions (plain fake-quant float arithmetic, as TVM lowers it)
    # gives the same tensors under the same names: the exposure maps names and layouts right
    from edgec.backends.onnxruntime.debug import ExposedRunner as OrtExposed
    from edgec.backends.tvm.debug import intermediates
    from edgec.core.debug.layers import qdq_exposure
    from edgec.core.debug.layers import float_tensors
    from edgec.core.debug.run import compiled_from

    qm = onnx.load(str(art.path / "model.onnx"))
    names = float_tensors(compiled_from(art.manifest))
    ort_run = OrtExposed(qm, qdq_exposure(qm, names), "CPUExecutionProvider", "disable", 1, ["logits"])
    tvm_run = intermediates(art.path, art.manifest, names, 1)
    x = {"input": _data(1, 9)}
    a, b = ort_run.run(x), tvm_run.run(x)
    tvm_run.close()
    for t in ("ca", "rb", "rc", "logits"):
        u, v = a[t].ravel(), b[t].ravel()
        assert u.shape == v.shape and float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v))) > 0.999, t


def test_qnn_audit(tiny):
    _need("qnn")
    base = _audit_rows(_compile(tiny, "qnn", out="qnn-base"))
    assert all(r["precision"] == "int8" and r["kernel"].startswith("HTP a8") for r in base.values()), base
    # as on ORT's CPU EP: a kept layer between Q/DQ stays float (ORT's WeightBiasQuantization, which would
    # quantize its weights before QNN sees the graph, is disabled for the build)
    kept = _compile(tiny, "qnn", keep=[BROKEN], out="qnn-keep1")
    one = _audit_rows(kept)
    assert one[BROKEN]["precision"] == "fp16" and one[BROKEN]["kernel"] == "HTP fp16", one[BROKEN]
    assert kept.manifest["backend_info"]["session"]["disabled_optimizers"] == ["WeightBiasQuantization"]
    both = _compile(tiny, "qnn", keep=[BROKEN, "conv_c"], out="qnn-keep2")
    _check_kept_float(both, BROKEN, ["conv_a"])


def test_tensorrt_audit_and_no_intermediates_without_gpu(tiny):
    _need("tensorrt")
    kept = _compile(tiny, "tensorrt", keep=[BROKEN])
    _check_kept_float(kept, BROKEN, ["conv_a", "conv_c"])
    from edgec.core.registry import get_backend
    if not get_backend("tensorrt").available().can_run:
        rep = debug_artifact(kept.path, _val(tiny, 4), samples=4)
        assert rep["layers"] == [] and "needs a GPU" in rep["exposure"]["unavailable"]


@pytest.mark.parametrize("argv, words", [
    (["debug", "{m}"], "--val"),
    (["debug", "{m}", "--val", "{v}", "--bisect"], "--min-agreement"),
    (["debug", "{m}", "--val", "{v}", "--min-agreement", "98"], "--bisect"),
    (["debug", "{d}/nope.onnx", "--val", "{v}"], "neither an ONNX model nor an artifact"),
    (["debug", "{m}", "--val", "{v}", "--val-skip", "1000"], "no samples"),
    (["debug", "{m}", "--val", "{v}", "--min-agreement", "nan", "--bisect"], "finite"),
    (["debug", "{m}", "--val", "{v}", "--bisect", "--min-agreement", "98", "--unit", "layers", "--order", "cost"],
     "--unit tensors"),
    (["debug", "{m}", "--val", "{v}", "--bisect", "--min-agreement", "98", "--bound-z", "-1"], "standard errors >= 0"),
    (["debug", "{m}", "--val", "{v}", "--bisect", "--min-agreement", "98", "--bound-z", "nan"], "finite"),
])
def test_debug_bad_input_is_one_line_exit_2(tiny, run_cli, argv, words):
    args = [a.format(m=tiny / "tiny.onnx", v=tiny / "val.npz", d=tiny) for a in argv]
    code, out, err = run_cli(*args)
    assert code == 2 and words in err and "Traceback" not in err, err
    assert len([ln for ln in err.splitlines() if ln.strip()]) == 1, err


def test_inspect_refuses_a_tampered_artifact(tiny, ort_base, run_cli, tmp_path):
    bad = tmp_path / "tampered"
    shutil.copytree(ort_base.path, bad)
    with open(bad / "model.onnx", "ab") as f:
        f.write(b"\0")
    code, out, err = run_cli("inspect", bad)
    assert code == 2 and ("sha256" in err or "changed" in err), err


def test_float_tensors_flag_checks_its_names(tiny, run_cli, tmp_path):
    code, out, err = run_cli("compile", tiny / "tiny.onnx", "--precision", "int8", "--calib", tiny / "calib.npz",
                             "--float-tensors", "no_such_tensor", "-o", tmp_path / "x")
    assert code == 2 and "no_such_tensor" in err and not (tmp_path / "x").exists(), err
