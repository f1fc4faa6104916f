"""The optimizer on the real models in ../shared/models: equivalent, and no more nodes than
onnxslim or onnxsim reach (about 5 s for all four on one core, so not slow-marked)."""
from __future__ import annotations

import io
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgec.core.optimizer import optimize

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MODELS = ["efficientnet_lite0", "squeezenet1_1", "mobilenetv2_backbone", "fashion_mnist_cnn"]


def _path(name: str) -> Path:
    p = SHARED / "models" / f"{name}.onnx"
    if not p.exists():
        pytest.skip(f"{p} not found (the shared test models live beside the repo)")
    return p


def _quiet(fn, *a):
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        return fn(*a)


@pytest.mark.parametrize("name", MODELS)
def test_shared_model_is_equivalent_and_not_larger_than_onnxslim_onnxsim(name):
    onnxslim = pytest.importorskip("onnxslim")
    onnxsim = pytest.importorskip("onnxsim")
    path = _path(name)
    res = optimize(onnx.load(path))
    eq = res.report["equivalence"]
    assert eq["ok"] and eq["max_abs_err"] <= 1e-4 * eq["output_scale"], eq
    assert not [p["name"] for p in res.report["passes"] if p["rolled_back"]]
    onnx.checker.check_model(res.model)

    # Independent of the optimizer's own check: a fresh input, compared here.
    original = onnx.load(path)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    a = ort.InferenceSession(original.SerializeToString(), so, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(res.model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    shape = [d.dim_value or 1 for d in original.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(123).uniform(-2, 2, shape).astype(np.float32)
    ya, yb = a.run(None, {"input": x})[0], b.run(None, {"input": x})[0]
    assert np.abs(ya - yb).max() <= 1e-4 * np.abs(ya).max()

    ours = len(res.model.graph.node)
    slim = len(_quiet(onnxslim.slim, onnx.load(path)).graph.node)
    sim, ok = _quiet(onnxsim.simplify, onnx.load(path))
    assert ours <= slim
    if ok:
        assert ours <= len(sim.graph.node)
    assert res.report["fusions"], "every shared model has Conv+activation chains to annotate"


# onnx ships small real-world test models (old opsets, IR 3, sequences, ...): a sweep over all
# of them is the cheapest way to catch a pass that mis-handles something the hand-built graphs
# did not think of. A rollback here means a pass bug that the safety net hid.
ONNX_DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"


def _sweep(paths):
    assert paths, f"no bundled onnx test models under {ONNX_DATA}"
    problems = []
    for path in paths:
        res = optimize(onnx.load(path))
        rolled = [(p["name"], p["reason"]) for p in res.report["passes"] if p["rolled_back"]]
        if rolled or res.report["equivalence"]["ok"] is False or "fallback" in res.report:
            problems.append((path.relative_to(ONNX_DATA).as_posix(), rolled,
                             res.report["equivalence"]))
        if res.report["after"]["nodes"] > res.report["before"]["nodes"]:
            problems.append((path.name, "node count grew"))
    assert not problems, problems


def test_onnx_bundled_small_models_optimize_cleanly():
    _sweep([p for p in sorted(ONNX_DATA.glob("**/*.onnx")) if p.parent.name != "light"])


@pytest.mark.slow
def test_onnx_bundled_light_cnns_match_onnxslim_node_counts():
    onnxslim = pytest.importorskip("onnxslim")
    paths = sorted((ONNX_DATA / "light").glob("*.onnx"))
    _sweep(paths)
    for path in paths:
        ours = len(optimize(onnx.load(path), verify=False).model.graph.node)
        assert ours <= len(_quiet(onnxslim.slim, onnx.load(path)).graph.node), path.name
