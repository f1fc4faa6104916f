"""Builders of bad inputs for tests/test_bad_inputs.py and tests/test_fuzz.py (tiny, in tmp dirs)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from conftest import build_tiny_cnn


def save(model, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def tiny(tmp: Path, name="m.onnx", **kw) -> Path:
    return save(build_tiny_cnn(**kw), tmp / name)


def data(tmp: Path, name="d.npz", n=8, **override) -> Path:
    rng = np.random.default_rng(0)
    arrays = {"input": rng.uniform(0, 1, (n, 3, 16, 16)).astype(np.float32), "labels": rng.integers(0, 10, n)}
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(tmp / name, **arrays)
    return tmp / name


def add_model(init: TensorProto, extra_nodes=(), opset=17, domain_op=None) -> onnx.ModelProto:
    """y = x + w, with `w` any TensorProto (possibly lying about its size)."""
    nodes = [helper.make_node("Add", ["x", init.name], ["y"])] + list(extra_nodes)
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [init])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def external_init(dims, location: str, offset=0, length=None) -> TensorProto:
    t = TensorProto()
    t.name, t.data_type = "w", TensorProto.FLOAT
    t.dims.extend(dims)
    t.data_location = TensorProto.EXTERNAL
    for k, v in [("location", location), ("offset", str(offset))] + ([("length", str(length))] if length is not None else []):
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


def raw_init(dims, nbytes: int) -> TensorProto:
    t = TensorProto()
    t.name, t.data_type = "w", TensorProto.FLOAT
    t.dims.extend(dims)
    t.raw_data = b"\0" * nbytes
    return t


def npy_with_header(path: Path, shape, dtype="<f4", payload=b"\0" * 64) -> Path:
    """A .npy whose header declares `shape` followed by `payload` (not necessarily enough bytes)."""
    from numpy.lib import format as fmt
    header = {"descr": dtype, "fortran_order": False, "shape": tuple(shape)}
    with open(path, "wb") as f:
        fmt.write_array_header_1_0(f, header)
        f.write(payload)
    return path


def npz_with_member(path: Path, member: Path, name="input.npy") -> Path:
    import zipfile
    with zipfile.ZipFile(path, "w") as z:
        z.write(member, name)
    return path


def compiled(tmp: Path, backend: str, cache: dict, precision="fp32") -> Path:
    """A real artifact of the tiny CNN, compiled once per (backend, precision) and copied per test."""
    import edgec
    key = (backend, precision)
    if key not in cache:
        src = Path(cache["root"]) / f"{backend}-{precision}"
        m = tiny(Path(cache["root"]), f"{backend}-{precision}.onnx")
        kw = {"calibration": data(Path(cache["root"]), f"{backend}-{precision}.npz", n=16)} if precision == "int8" else {}
        opts = {"schedule": "naive"} if backend == "tvm" else None
        edgec.compile(m, backend=backend, precision=precision, output=src, options=opts, **kw)
        cache[key] = src
    dst = tmp / f"art-{backend}-{precision}"
    shutil.copytree(cache[key], dst)
    return dst


def edit_manifest(art: Path, fn) -> Path:
    p = art / "manifest.json"
    m = json.loads(p.read_text())
    m = fn(m)
    p.write_text(json.dumps(m) if not isinstance(m, str) else m)
    return art
