"""The bad-input catalog: every verb, every backend, one table.

Each case builds its bad input in a fresh tmp dir and runs `edgec ...` in-process (`run_cli`), then
asserts: the exit code (2 input error, 1 failed validation), exactly one stderr line starting
`edgec: error:` that contains what names the thing (and the fix: one of FIX_WORDS), no traceback,
nothing on stdout, and nothing left behind (the tmp dir's tree is unchanged, no staging dir, no
output). Interrupts, which need signals, are in tests/test_interrupts.py.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

import bad_inputs_lib as B

FIX_WORDS = ("pass ", "give ", "use ", "re-", "remove", "choose", "fix", "see ", "put ", "copy", "save ",
             "rename", "recompile", "check", "convert", "name the", "split", "export", "move", "keep", "calibrate",
             "expected", "expects", "choose", "try ", "install", "unset", "stack", "lower ", "--")

BACKENDS = {"onnxruntime", "openvino", "tvm"}


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def _backend_ok(name: str) -> bool:
    from edgec.core.registry import get_backend
    try:
        return get_backend(name).available().ok
    except Exception:
        return False


# ----------------------------------------------------------------------------------------------- the cases
# Each case: (id, build(tmp, arts) -> argv, exit code, substrings of the error line, backend needed or None)

def _m(tmp, model):
    return B.save(model, tmp / "bad.onnx")


def _compile(model_path, *rest):
    return ["compile", model_path, *rest]


def _ext_model(tmp, dims, nbytes, location="w.bin", **kw):
    (tmp / "w.bin").write_bytes(b"\0" * nbytes)
    return _m(tmp, B.add_model(B.external_init(dims, location, **kw)))


def _unknown_domain(tmp):
    node = helper.make_node("Frobnicate", ["y"], ["z"], domain="com.example")
    m = B.add_model(B.raw_init([1, 4], 16))
    m.graph.node.append(node)
    m.graph.output[0].name = "z"
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    return _m(tmp, m)


def _newer_opset(tmp):
    m = B.add_model(B.raw_init([1, 4], 16))
    m.opset_import[0].version = 99
    return _m(tmp, m)


def _bad_input_dtype(tmp):
    m = B.add_model(B.raw_init([1, 4], 16))
    m.graph.input[0].type.tensor_type.elem_type = 999
    return _m(tmp, m)


def _huge_input(tmp):
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1 << 20, 1 << 20])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1 << 20, 1 << 20])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return _m(tmp, m)


def _checker_fail(tmp):
    node = helper.make_node("Relu", ["undefined_tensor"], ["y"])
    g = helper.make_graph([node], "bad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    return _m(tmp, helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def _write(tmp, name, content: bytes):
    (tmp / name).write_bytes(content)
    return tmp / name


def _image_folder(tmp, corrupt=False):
    from PIL import Image
    d = tmp / "imgs"
    (d / "cat").mkdir(parents=True)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(d / "cat" / "a.png")
    if corrupt:
        (d / "cat" / "b.png").write_bytes(b"not a png")
    return d


def _tamper(art, name, fn):
    p = art / name
    fn(p)
    return art


def _append(p):
    with open(p, "ab") as f:
        f.write(b"\x90" * 16)


def _flip(p):
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0xFF
    p.write_bytes(bytes(b))


def _truncate(p):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _main_file(art):
    m = json.loads((art / "manifest.json").read_text())
    return max(m["files"], key=lambda k: m["files"][k]["size"])


def art(a, backend="onnxruntime", precision="fp32"):
    return B.compiled(a["tmp"], backend, a, precision)


CASES = [
    # --- compile: the model file
    ("missing-model", lambda t, a: _compile(t / "nope.onnx"), 2, ["model file not found", "nope.onnx"], None),
    ("model-is-dir", lambda t, a: _compile(t), 2, ["is a directory"], None),
    ("model-is-text", lambda t, a: _compile(_write(t, "m.onnx", b"hello world\n" * 20)), 2, ["not a readable ONNX"], None),
    ("model-empty-file", lambda t, a: _compile(_write(t, "m.onnx", b"")), 2, ["no graph found"], None),
    ("model-truncated", lambda t, a: _compile(_write(t, "m.onnx", B.tiny(t).read_bytes()[:300])), 2,
     ["not a readable ONNX", "truncated"], None),
    ("model-random-bytes", lambda t, a: _compile(_write(t, "m.onnx", np.random.default_rng(3).bytes(4096))), 2,
     ["m.onnx"], None),
    ("checker-fails", lambda t, a: _compile(_checker_fail(t)), 2, ["fails onnx.checker"], None),
    ("opset-too-new", lambda t, a: _compile(_newer_opset(t)), 2, ["opset 99", "re-export"], None),
    ("unknown-op-domain", lambda t, a: _compile(_unknown_domain(t)), 2, ["com.example", "Frobnicate"], None),
    ("input-dtype-unknown", lambda t, a: _compile(_bad_input_dtype(t)), 2, ["bad.onnx"], None),
    ("huge-dims-64B-external", lambda t, a: _compile(_ext_model(t, [1 << 40], 64)), 2, ["declares", "GB"], None),
    ("huge-dims-external-within-limit", lambda t, a: _compile(_ext_model(t, [1 << 20], 64)), 2,
     ["w.bin", "truncated"], None),
    ("external-missing", lambda t, a: _compile(_m(t, B.add_model(B.external_init([1, 4], "gone.bin")))), 2,
     ["gone.bin", "missing"], None),
    ("external-short", lambda t, a: _compile(_ext_model(t, [1, 4], 8)), 2, ["w.bin", "truncated"], None),
    ("external-offset-past-end", lambda t, a: _compile(_ext_model(t, [1, 4], 16, offset=100)), 2, ["w.bin"], None),
    ("external-length-mismatch", lambda t, a: _compile(_ext_model(t, [1, 4], 64, length=32)), 2, ["length 32"], None),
    ("external-path-escape", lambda t, a: _compile(_m(t, B.add_model(B.external_init([1, 4], "../../etc/passwd")))), 2,
     ["outside the model's folder"], None),
    ("external-absolute", lambda t, a: _compile(_m(t, B.add_model(B.external_init([1, 4], "/etc/passwd")))), 2,
     ["outside the model's folder"], None),
    ("raw-data-short", lambda t, a: _compile(_m(t, B.add_model(B.raw_init([1, 4], 7)))), 2, ["holds 7 B"], None),
    ("raw-huge-dims", lambda t, a: _compile(_m(t, B.add_model(B.raw_init([1 << 33, 1 << 20], 16)))), 2,
     ["declares"], None),
    ("negative-dim", lambda t, a: _compile(_m(t, B.add_model(B.raw_init([-4], 16)))), 2, ["negative dimension"], None),
    ("huge-model-input-random-validation", lambda t, a: _compile(_huge_input(t)), 2, ["model input 'x'"], None),
    # --- compile: options (numeric ranges on every flag)
    ("unknown-backend", lambda t, a: _compile(B.tiny(t), "--backend", "nosuch"), 2, ["nosuch"], None),
    ("unknown-precision", lambda t, a: _compile(B.tiny(t), "--precision", "int3"), 2, ["--precision"], None),
    ("max-drop-negative", lambda t, a: _compile(B.tiny(t), "--max-drop", "-1"), 2, ["--max-drop", "between 0 and 100"], None),
    ("max-drop-nan", lambda t, a: _compile(B.tiny(t), "--max-drop", "nan"), 2, ["--max-drop", "finite"], None),
    ("max-drop-inf", lambda t, a: _compile(B.tiny(t), "--max-drop", "inf"), 2, ["--max-drop", "finite"], None),
    ("max-drop-above-100", lambda t, a: _compile(B.tiny(t), "--max-drop", "101"), 2, ["--max-drop"], None),
    ("max-drop-text", lambda t, a: _compile(B.tiny(t), "--max-drop", "lots"), 2, ["--max-drop", "a number"], None),
    ("min-agreement-zero", lambda t, a: _compile(B.tiny(t), "--min-agreement", "0"), 2, ["--min-agreement"], None),
    ("min-agreement-nan", lambda t, a: _compile(B.tiny(t), "--min-agreement", "nan"), 2, ["--min-agreement"], None),
    ("min-cosine-nan", lambda t, a: _compile(B.tiny(t), "--min-cosine", "nan"), 2, ["--min-cosine", "finite"], None),
    ("min-cosine-2", lambda t, a: _compile(B.tiny(t), "--min-cosine", "2"), 2, ["--min-cosine", "between -1 and 1"], None),
    ("val-samples-zero", lambda t, a: _compile(B.tiny(t), "--val-samples", "0"), 2, ["--val-samples", ">= 1"], None),
    ("calib-samples-negative", lambda t, a: _compile(B.tiny(t), "--calib-samples", "-5"), 2, ["--calib-samples"], None),
    ("threads-negative", lambda t, a: _compile(B.tiny(t), "--threads", "-1"), 2, ["--threads"], None),
    ("threads-zero", lambda t, a: _compile(B.tiny(t), "--threads", "0"), 2, ["--threads"], None),
    ("threads-float", lambda t, a: _compile(B.tiny(t), "--threads", "1.5"), 2, ["--threads", "integer"], None),
    ("ort-unknown-option", lambda t, a: _compile(B.tiny(t), "-O", "colour=blue"), 2, ["colour"], None),
    ("ort-option-no-equals", lambda t, a: _compile(B.tiny(t), "-O", "colour"), 2, ["key=value"], None),
    ("openvino-unknown-option", lambda t, a: _compile(B.tiny(t), "-b", "openvino", "-O", "colour=blue"), 2,
     ["colour"], "openvino"),
    ("openvino-bad-hint", lambda t, a: _compile(B.tiny(t), "-b", "openvino", "-O", "hint=fastest"), 2, ["hint"], "openvino"),
    ("openvino-bad-calibrator", lambda t, a: _compile(B.tiny(t), "-b", "openvino", "-p", "int8", "--calib", B.data(t),
                                                      "-O", "calibrator=magic"), 2, ["calibrator"], "openvino"),
    ("tvm-bad-target", lambda t, a: _compile(B.tiny(t), "-b", "tvm", "--target", "mars-rover"), 2, ["mars-rover"], "tvm"),
    ("tvm-batch-zero", lambda t, a: _compile(B.tiny(t), "-b", "tvm", "-O", "batch=0"), 2, ["batch"], "tvm"),
    ("tvm-trials-nan", lambda t, a: _compile(B.tiny(t), "-b", "tvm", "-O", "trials=nan"), 2, ["trials"], "tvm"),
    ("tvm-tune-minutes-nan", lambda t, a: _compile(B.tiny(t), "-b", "tvm", "-O", "tune_minutes=nan"), 2,
     ["tune_minutes"], "tvm"),
    ("tvm-bad-schedule", lambda t, a: _compile(B.tiny(t), "-b", "tvm", "-O", "schedule=fast"), 2, ["schedule"], "tvm"),
    ("int8-without-calib", lambda t, a: _compile(B.tiny(t), "-p", "int8"), 2, ["--calib"], None),
    ("max-drop-without-val", lambda t, a: _compile(B.tiny(t), "-p", "int8", "--calib", B.data(t), "--max-drop", "1"),
     2, ["--val"], None),
    # --- compile: data
    ("calib-not-found", lambda t, a: _compile(B.tiny(t), "-p", "int8", "--calib", t / "none.npz"), 2, ["data not found"], None),
    ("calib-is-text", lambda t, a: _compile(B.tiny(t), "-p", "int8", "--calib", _write(t, "c.npz", b"1,2,3\n4,5,6\n")), 2,
     ["text file", "numpy.savez"], None),
    ("calib-empty-file", lambda t, a: _compile(B.tiny(t), "-p", "int8", "--calib", _write(t, "c.npz", b"")), 2,
     ["empty"], None),
    ("calib-empty-npz", lambda t, a: _compile(B.tiny(t), "-p", "int8", "--calib", _empty_npz(t)), 2, ["no arrays"], None),
    ("calib-damaged-zip", lambda t, a: _compile(B.tiny(t), "-p", "int8", "--calib",
                                                _write(t, "c.npz", B.data(t).read_bytes()[:200])), 2, ["c.npz"], None),
    ("calib-pickled", lambda t, a: _compile(B.tiny(t), "--val", _pickled(t)), 2, ["pickled"], None),
    ("npy-huge-header", lambda t, a: _compile(B.tiny(t), "--val", B.npy_with_header(t / "v.npy", (1 << 30, 3, 16, 16)))
     , 2, ["declares", "GB"], None),
    ("npz-member-huge-header", lambda t, a: _compile(B.tiny(t), "--val", B.npz_with_member(
        t / "v.npz", B.npy_with_header(t / "m.npy", (1 << 18, 3, 16, 16)))), 2, ["member 'input.npy'", "declares"], None),
    ("npy-folder-huge-header", lambda t, a: _compile(B.tiny(t), "--val", _npy_folder(t)), 2, ["declares"], None),
    ("calib-nan", lambda t, a: _compile(B.tiny(t), "-p", "int8", "--calib", _nonfinite(t, np.nan, 3)), 2,
     ["sample 3", "'input'", "NaN"], None),
    ("val-inf", lambda t, a: _compile(B.tiny(t), "--val", _nonfinite(t, np.inf, 5)), 2, ["sample 5", "Inf"], None),
    ("val-wrong-name", lambda t, a: _compile(B.tiny(t), "--val", B.data(t, input=None, x=np.zeros((2, 3, 16, 16), np.float32),
                                                                         y=np.zeros((2, 3, 16, 16), np.float32), labels=None)), 2,
     ["no array for model input 'input'"], None),
    ("val-wrong-shape", lambda t, a: _compile(B.tiny(t), "--val", B.data(t, input=np.zeros((2, 3, 8, 8), np.float32),
                                                                          labels=None)), 2, ["shape [1, 3, 8, 8]"], None),
    ("val-wrong-dtype", lambda t, a: _compile(B.tiny(t), "--val", B.data(t, input=np.zeros((2, 3, 16, 16)),
                                                                          labels=None)), 2, ["float64"], None),
    ("val-wrong-rank", lambda t, a: _compile(B.tiny(t), "--val", B.data(t, input=np.zeros((2, 16, 16), np.float32),
                                                                         labels=None)), 2, ["rank 3"], None),
    ("val-labels-count", lambda t, a: _compile(B.tiny(t), "--val", B.data(t, labels=np.arange(3))), 2,
     ["3 labels for 8 samples"], None),
    ("image-folder-no-preprocess", lambda t, a: _compile(B.tiny(t), "--val", _image_folder(t)), 2, ["--preprocess"], None),
    ("image-folder-corrupt", lambda t, a: _compile(B.tiny(t), "--val", _image_folder(t, corrupt=True), "--preprocess",
                                                   "unit"), 2, ["b.png", "cannot be decoded"], None),
    ("bad-preprocess-key", lambda t, a: _compile(B.tiny(t), "--val", _image_folder(t), "--preprocess", "colour=red"), 2,
     ["colour"], None),
    ("empty-data-folder", lambda t, a: _compile(B.tiny(t), "--val", _mkdir(t / "empty")), 2, ["holds no"], None),
    # --- compile: the output
    ("output-exists", lambda t, a: _compile(B.tiny(t), "-o", _mkdir(t / "out")), 2, ["already exists", "--force"], None),
    ("output-is-file-force", lambda t, a: _compile(B.tiny(t), "-o", _write(t, "out", b"x"), "--force"), 2,
     ["not a directory"], None),
    ("output-under-a-file", lambda t, a: _compile(B.tiny(t), "-o", _write(t, "f.txt", b"x") / "out"), 2,
     ["not writable"], None),
    # --- compile: failed validation (exit 1)
    ("validation-fails", lambda t, a: _compile(B.tiny(t), "-p", "int8", "--calib", B.data(t), "--min-cosine", "1"), 1,
     ["validation failed", "--min-cosine"], None),
    # --- run / validate: artifacts
    ("run-missing-artifact", lambda t, a: ["run", t / "none", "--input", B.data(t)], 2, ["artifact not found"], None),
    ("run-not-an-artifact", lambda t, a: ["run", _mkdir(t / "dir"), "--input", B.data(t)], 2, ["no manifest.json"], None),
    ("run-manifest-not-json", lambda t, a: ["run", B.edit_manifest(art(a), lambda m: "{nope"), "--input", B.data(t)], 2,
     ["not valid JSON"], None),
    ("run-manifest-not-object", lambda t, a: ["run", B.edit_manifest(art(a), lambda m: [1, 2]), "--input", B.data(t)], 2,
     ["not a JSON object"], None),
    ("run-manifest-no-inputs", lambda t, a: ["run", B.edit_manifest(art(a), lambda m: {**m, "inputs": "x"}), "--input",
                                             B.data(t)], 2, ["'inputs'"], None),
    ("run-manifest-bad-dtype", lambda t, a: ["run", B.edit_manifest(art(a), lambda m: {**m, "inputs": [
        {"name": "input", "dtype": "float99", "shape": [1]}]}), "--input", B.data(t)], 2, ["float99"], None),
    ("run-manifest-unknown-backend", lambda t, a: ["run", B.edit_manifest(art(a), lambda m: {**m, "backend": "zz"}),
                                                   "--input", B.data(t)], 2, ["zz"], None),
    ("run-file-path-escape", lambda t, a: ["run", B.edit_manifest(art(a), lambda m: {**m, "files": {
        "../../etc/passwd": {"size": 1, "sha256": "0" * 64}}}), "--input", B.data(t)], 2, ["outside the artifact"], None),
    ("run-onnx-weights-changed", lambda t, a: ["run", _tamper(art(a), "model.onnx", _flip), "--input", B.data(t)], 2,
     ["model.onnx", "sha256", "--no-verify"], None),
    ("run-file-appended", lambda t, a: ["run", _tamper(art(a), "model.onnx", _append), "--input", B.data(t)], 2,
     ["model.onnx", "grown"], None),
    ("run-file-truncated", lambda t, a: ["run", _tamper(art(a), "model.onnx", _truncate), "--input", B.data(t)], 2,
     ["model.onnx", "truncated"], None),
    ("run-file-deleted", lambda t, a: ["run", _tamper(art(a), "model.onnx", os.remove), "--input", B.data(t)], 2,
     ["model.onnx", "missing"], None),
    ("run-samples-zero", lambda t, a: ["run", art(a), "--input", B.data(t), "--samples", "0"], 2, ["--samples"], None),
    ("run-threads-nan", lambda t, a: ["run", art(a), "--input", B.data(t), "--threads", "nan"], 2, ["--threads"], None),
    ("run-wrong-input-shape", lambda t, a: ["run", art(a), "--input", B.data(t, input=np.zeros((2, 3, 4, 4), np.float32), labels=None)],
     2, ["shape"], None),
    ("run-output-dir-missing", lambda t, a: ["run", art(a), "--input", B.data(t), "-o", t / "no" / "y.npz"], 2,
     ["cannot write"], None),
    ("validate-weights-changed", lambda t, a: ["validate", _tamper(art(a), "model.onnx", _flip), "--data", B.data(t)], 2,
     ["sha256"], None),
    ("validate-reference-missing", lambda t, a: ["validate", art(a), "--reference", t / "ref.onnx"], 2, ["ref.onnx"], None),
    ("validate-min-cosine-inf", lambda t, a: ["validate", art(a), "--min-cosine", "inf"], 2, ["--min-cosine"], None),
    ("validate-fails", lambda t, a: ["validate", art(a, precision="int8"), "--data", B.data(t), "--min-cosine", "1"], 1,
     ["validation failed"], None),
    ("openvino-bin-changed", lambda t, a: ["run", _tamper(art(a, "openvino"), "model.bin", _flip), "--input", B.data(t)],
     2, ["model.bin", "sha256"], "openvino"),
    ("openvino-xml-deleted", lambda t, a: ["validate", _tamper(art(a, "openvino"), "model.xml", os.remove)], 2,
     ["model.xml", "missing"], "openvino"),
    # --- inspect / optimize / compare / top level
    ("inspect-missing", lambda t, a: ["inspect", t / "x.onnx"], 2, ["not found"], None),
    ("inspect-garbage", lambda t, a: ["inspect", _write(t, "x.onnx", b"\x08\x07garbage" * 50)], 2, ["x.onnx"], None),
    ("inspect-huge-dims", lambda t, a: ["inspect", _ext_model(t, [1 << 40], 64)], 2, ["declares"], None),
    ("optimize-output-exists", lambda t, a: ["optimize", B.tiny(t), "-o", _write(t, "o.onnx", b"x")], 2, ["--force"], None),
    ("optimize-corrupt", lambda t, a: ["optimize", _write(t, "m.onnx", b"junk" * 9), "-o", t / "o.onnx"], 2,
     ["m.onnx"], None),
    ("compare-runs-zero", lambda t, a: ["compare", B.tiny(t), "--runs", "0", "-o", t / "rep"], 2, ["--runs"], None),
    ("compare-warmup-negative", lambda t, a: ["compare", B.tiny(t), "--warmup", "-1", "-o", t / "rep"], 2, ["--warmup"], None),
    ("compare-threads-nan", lambda t, a: ["compare", B.tiny(t), "--threads", "nan", "-o", t / "rep"], 2, ["--threads"], None),
    ("compare-calib-method", lambda t, a: ["compare", B.tiny(t), "--calib-method", "guess", "-o", t / "rep"], 2,
     ["--calib-method"], None),
    ("no-command", lambda t, a: [], 2, ["required"], None),
    ("unknown-command", lambda t, a: ["frobnicate"], 2, ["frobnicate"], None),
    ("backends-unknown-flag", lambda t, a: ["backends", "--colour"], 2, ["--colour"], None),
]


def _mkdir(p):
    p.mkdir(parents=True, exist_ok=True)
    return p


def _empty_npz(t):
    np.savez(t / "c.npz")
    return t / "c.npz"


def _pickled(t):
    np.savez(t / "p.npz", input=np.array([{"a": 1}], dtype=object))
    return t / "p.npz"


def _npy_folder(t):
    d = _mkdir(t / "npys")
    B.npy_with_header(d / "a.npy", (1 << 30, 3, 16, 16))
    return d


def _nonfinite(t, value, index):
    x = np.random.default_rng(0).uniform(0, 1, (8, 3, 16, 16)).astype(np.float32)
    x[index, 0, 1, 2] = value
    return B.data(t, "nf.npz", input=x)


@pytest.fixture(scope="module")
def arts(tmp_path_factory):
    return {"root": tmp_path_factory.mktemp("artifacts")}


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EDGEC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def test_catalog_size():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)
    prefixes = {c[0].split("-")[0] for c in CASES}
    assert prefixes >= {"inspect", "compare", "optimize", "run", "validate", "backends", "openvino", "tvm", "ort"}
    assert {c[4] for c in CASES} >= {None, "openvino", "tvm"}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, run_cli, tmp_path, arts, monkeypatch):
    name, build, code, expect, backend = case
    if backend and not _backend_ok(backend):
        pytest.skip(f"backend {backend} is not installed here")
    work = _mkdir(tmp_path / "work")
    monkeypatch.chdir(work)  # compile's default output goes to the cwd: it must stay empty too
    arts["tmp"] = work
    argv = build(work, arts)
    before = _tree(work)
    got, out, err = run_cli(*argv)
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("edgec: warning:")]
    assert "Traceback" not in err, err
    assert got == code, f"{name}: exit {got}, wanted {code}: {err!r}"
    assert len(lines) == 1, f"{name}: expected one stderr line, got {err!r}"
    line = lines[0]
    assert line.startswith("edgec: error: "), line
    for s in expect:
        assert s in line, f"{name}: {s!r} not in {line!r}"
    assert any(w in line for w in FIX_WORDS), f"{name}: the line names no fix: {line!r}"
    if code == 2:  # a refused input prints nothing on stdout (a failed validation prints its report)
        assert out == "", f"{name}: stdout should be empty, got {out[:200]!r}"
    assert _tree(work) == before, f"{name}: left behind {sorted(_tree(work) - before)}"
