"""Shared fixtures: small models built with onnx.helper, the ../shared material, a CLI runner."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
EXAMPLES = REPO / "examples"

os.environ.setdefault("EDGEC_PROGRESS", "0")


def shared_path(*parts: str) -> Path:
    """A file under ../shared, or a skip saying what is missing."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} not present (real models/data live in ../shared beside the repo)")
    return p


def _init(name, arr):
    return numpy_helper.from_array(np.asarray(arr, np.float32), name)


def build_tiny_cnn(seed: int = 0, channels: int = 3, size: int = 16, classes: int = 10, opset: int = 17) -> onnx.ModelProto:
    """Conv-BN-Relu, depthwise Conv-Relu, residual Add, GAP, Gemm: a classifier small enough for every test."""
    rng = np.random.default_rng(seed)
    c = 8
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn1"]),
        helper.make_node("Relu", ["bn1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=c),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Add", ["r1", "r2"], ["res"]),
        helper.make_node("GlobalAveragePool", ["res"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], transB=1),
    ]
    inits = [
        _init("w1", rng.standard_normal((c, channels, 3, 3)) * 0.3), _init("b1", rng.standard_normal(c) * 0.1),
        _init("bn_s", rng.uniform(0.5, 1.5, c)), _init("bn_b", rng.standard_normal(c) * 0.1),
        _init("bn_m", rng.standard_normal(c) * 0.1), _init("bn_v", rng.uniform(0.5, 1.5, c)),
        _init("w2", rng.standard_normal((c, 1, 3, 3)) * 0.3), _init("b2", rng.standard_normal(c) * 0.1),
        _init("wf", rng.standard_normal((classes, c))), _init("bf", rng.standard_normal(classes) * 0.1),
    ]
    graph = helper.make_graph(
        nodes, "tiny_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", channels, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="edgec-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def build_two_input(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("MatMul", ["s", "w"], ["y"])]
    graph = helper.make_graph(
        nodes, "two_input",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [_init("w", rng.standard_normal((4, 3)))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture
def tiny_cnn_path(tmp_path) -> Path:
    p = tmp_path / "tiny_cnn.onnx"
    onnx.save(build_tiny_cnn(), str(p))
    return p


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    """Calibration/validation .npz for the tiny CNN: 32 samples keyed by the input name, with labels."""
    rng = np.random.default_rng(1)
    p = tmp_path / "tiny_data.npz"
    np.savez(p, input=rng.uniform(0, 1, (32, 3, 16, 16)).astype(np.float32), labels=rng.integers(0, 10, 32))
    return p


@pytest.fixture
def run_cli(capsys):
    """Run `edgec ARGS` in-process; returns (exit code, stdout, stderr)."""
    from edgec.core.cli import main

    def run(*args):
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def built_once(tmp_path_factory, name: str, build):
    """`build(out_dir)` run once per test session, not once per xdist worker: the first worker to get here
    builds under a lock in the directory the workers share and pickles what `build` returned; a later
    worker waits for the lock and unpickles that. Returns (result, out_dir). For module-scoped fixtures
    whose tests xdist spreads over both workers (loadgroup does not group, pytest-dev/pytest-xdist#1386).
    Tests must only read out_dir (a test that writes copies it first)."""
    import fcntl
    import pickle

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    work = root / f"built-once-{name}"
    work.mkdir(exist_ok=True)
    done = work / "result.pkl"
    with open(work / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not done.exists():
                result = build(work / "out")
                tmp = work / "result.pkl.tmp"
                tmp.write_bytes(pickle.dumps(result))
                tmp.rename(done)
                return result, work / "out"
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return pickle.loads(done.read_bytes()), work / "out"
