"""Every bad-input case: one stderr line naming the thing and the fix, the right exit code, nothing written."""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgec.core import registry
from edgec.core.backend import Availability, Backend, Requirements
from edgec.core.hookspecs import hookimpl


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one stderr line, got: {err!r}"
    assert lines[0].startswith("edgec: error: ")
    return lines[0]


def _nothing_written(parent, name="out"):
    assert not (parent / name).exists()
    assert not [p for p in parent.iterdir() if p.name.startswith(f".{name}.")], "temporary directory left behind"


def test_missing_model(run_cli, tmp_path):
    code, out, err = run_cli("compile", tmp_path / "nope.onnx", "-o", tmp_path / "out")
    assert code == 2 and out == ""
    assert "model file not found" in _one_line(err) and "nope.onnx" in err
    _nothing_written(tmp_path)


def test_not_onnx(run_cli, tmp_path):
    p = tmp_path / "notes.onnx"
    p.write_text("this is not a protobuf\n" * 10)
    code, _, err = run_cli("compile", p, "-o", tmp_path / "out")
    assert code == 2 and "not a readable ONNX model" in _one_line(err)
    _nothing_written(tmp_path)


def test_truncated_protobuf(run_cli, tmp_path, tiny_cnn_path):
    data = tiny_cnn_path.read_bytes()
    p = tmp_path / "truncated.onnx"
    p.write_bytes(data[: len(data) // 2])
    code, _, err = run_cli("inspect", p)
    assert code == 2 and "truncated" in _one_line(err)


def test_model_failing_checker(run_cli, tmp_path):
    node = helper.make_node("Relu", ["undefined_tensor"], ["y"])
    graph = helper.make_graph([node], "bad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    p = tmp_path / "bad.onnx"
    onnx.save(model, str(p))
    code, _, err = run_cli("compile", p, "-o", tmp_path / "out")
    assert code == 2 and "fails onnx.checker" in _one_line(err)
    _nothing_written(tmp_path)


@pytest.mark.parametrize("arrays,expect", [
    ({"wrong_name": np.zeros((2, 3, 16, 16), np.float32), "other": np.zeros((2, 3, 16, 16), np.float32)},
     "no array for model input 'input'"),
    ({"input": np.zeros((2, 3, 8, 8), np.float32)}, "has shape [1, 3, 8, 8] but the model expects"),
    ({"input": np.zeros((2, 3, 16, 16), np.float64)}, "is float64 but the model expects float32"),
    ({"input": np.zeros((2, 16, 16), np.float32)}, "has rank 3"),
])
def test_data_mismatch(run_cli, tmp_path, tiny_cnn_path, arrays, expect):
    data = tmp_path / "data.npz"
    np.savez(data, **arrays)
    code, _, err = run_cli("compile", tiny_cnn_path, "--val", data, "-o", tmp_path / "out")
    assert code == 2 and expect in _one_line(err), err
    _nothing_written(tmp_path)


def test_pickled_data_refused(run_cli, tmp_path, tiny_cnn_path):
    data = tmp_path / "data.npz"
    np.savez(data, input=np.array([{"a": 1}], dtype=object))
    code, _, err = run_cli("compile", tiny_cnn_path, "--val", data, "-o", tmp_path / "out")
    assert code == 2 and "pickled objects" in _one_line(err)


def test_unknown_backend(run_cli, tmp_path, tiny_cnn_path):
    code, _, err = run_cli("compile", tiny_cnn_path, "--backend", "tpu9000", "-o", tmp_path / "out")
    line = _one_line(err)
    assert code == 2 and "unknown backend 'tpu9000'" in line and "onnxruntime" in line
    _nothing_written(tmp_path)


class _VendorBackend(Backend):
    """Stands in for a vendor backend whose SDK is missing on this machine."""

    name = "vendor-sdk"
    requirements = Requirements(precisions=("fp32", "int8"))

    def __init__(self, ok: bool):
        self.ok = ok

    def available(self):
        return Availability(True) if self.ok else Availability(False, "the VendorSDK compiler 'vcc' is not on PATH",
                                                               "install VendorSDK 3.1 and add its bin/ to PATH")


@pytest.fixture
def vendor_backend():
    class Plugin:
        def __init__(self, ok):
            self.ok = ok

        @hookimpl
        def edgec_backends(self):
            return [_VendorBackend(self.ok)]

    pm = registry.plugin_manager()

    def install(ok: bool):
        pm.register(Plugin(ok), name="vendor-test")
        registry._backends.cache_clear()

    yield install
    if pm.get_plugin("vendor-test"):
        pm.unregister(name="vendor-test")
    registry._backends.cache_clear()


def test_unavailable_backend(run_cli, tmp_path, tiny_cnn_path, vendor_backend):
    vendor_backend(False)
    code, _, err = run_cli("compile", tiny_cnn_path, "--backend", "vendor-sdk", "-o", tmp_path / "out")
    line = _one_line(err)
    assert code == 2 and "not available" in line and "'vcc' is not on PATH" in line and "install VendorSDK" in line
    code, out, _ = run_cli("backends")
    assert "vendor-sdk" in out and "install VendorSDK" in out


def test_unsupported_precision(run_cli, tmp_path, tiny_cnn_path, vendor_backend):
    vendor_backend(True)
    code, _, err = run_cli("compile", tiny_cnn_path, "--backend", "vendor-sdk", "--precision", "fp16",
                           "-o", tmp_path / "out")
    line = _one_line(err)
    assert code == 2 and "does not support precision 'fp16'" in line and "fp32, int8" in line


def test_unknown_backend_option(run_cli, tmp_path, tiny_cnn_path):
    code, _, err = run_cli("compile", tiny_cnn_path, "-O", "turbo=1", "-o", tmp_path / "out")
    assert code == 2 and "has no option 'turbo'" in _one_line(err)


def test_unwritable_output(run_cli, tmp_path, tiny_cnn_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, _, err = run_cli("compile", tiny_cnn_path, "-o", blocker / "sub" / "out")
    assert code == 2 and "not writable" in _one_line(err)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory(run_cli, tmp_path, tiny_cnn_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        code, _, err = run_cli("compile", tiny_cnn_path, "-o", ro / "out")
        assert code == 2 and "not writable" in _one_line(err)
    finally:
        ro.chmod(0o700)


def test_existing_output_kept_without_force(run_cli, tmp_path, tiny_cnn_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run_cli("compile", tiny_cnn_path, "-o", out)
    assert code == 2 and "--force" in _one_line(err)
    assert (out / "keep.txt").read_text() == "mine"


def test_failed_validation_exit_1_and_nothing_written(run_cli, tmp_path, tiny_cnn_path, tiny_data):
    # A threshold int8 cannot meet (cosine exactly 1; above 1 is refused as out of range): the path under
    # test is "validation below threshold".
    code, out, err = run_cli("compile", tiny_cnn_path, "--precision", "int8", "--calib", tiny_data,
                             "--min-cosine", "1", "-o", tmp_path / "out")
    assert code == 1 and "validation failed" in _one_line(err) and "--min-cosine" in err
    _nothing_written(tmp_path)


def test_missing_artifact(run_cli, tmp_path):
    code, _, err = run_cli("run", tmp_path / "nothing", "--input", tmp_path / "x.npz")
    assert code == 2 and "artifact not found" in _one_line(err)


def test_int8_without_calibration(run_cli, tmp_path, tiny_cnn_path):
    code, _, err = run_cli("compile", tiny_cnn_path, "--precision", "int8", "-o", tmp_path / "out")
    assert code == 2 and "--calib" in _one_line(err)


def test_images_without_preprocess(run_cli, tmp_path, tiny_cnn_path):
    from PIL import Image
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(folder / "a.png")
    code, _, err = run_cli("compile", tiny_cnn_path, "--val", folder, "-o", tmp_path / "out")
    assert code == 2 and "pass --preprocess" in _one_line(err)
