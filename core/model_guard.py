"""Checks on an ONNX file's declarations before onnx allocates anything for them.

`onnx.load` trusts what a tensor declares: dims [2^40] with a 64-byte external file is read into a
buffer the size of the dims. Here every tensor (initializers, Constant attributes, subgraphs, functions)
is checked against the bytes actually present: raw_data length, typed-field counts, and external data
(location inside the model's folder, file present, offset + length within the file, length equal to
the declared size), all before `load_external_data_for_model`. The messages blame the right file:
a short external-data file is named, not the .onnx.
"""
from __future__ import annotations

import os
from pathlib import Path

import onnx
from onnx import TensorProto

from edgec.core.errors import InputError
from edgec.core.limits import check_bytes, element_count, human

# Typed repeated fields by storage: how many entries one element takes (complex: 2).
_TYPED = {"float_data": 1, "int32_data": 1, "string_data": 1, "int64_data": 1, "double_data": 1, "uint64_data": 1}
_COMPLEX = {TensorProto.COMPLEX64, TensorProto.COMPLEX128}
_SUB_BYTE = {getattr(TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1") if hasattr(TensorProto, n)}


def _itemsize(t: TensorProto) -> float | None:
    if t.data_type in _SUB_BYTE:
        return 0.5
    if t.data_type in (TensorProto.STRING, TensorProto.UNDEFINED):
        return None
    try:
        import numpy as np
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    except (KeyError, TypeError, ValueError):
        return None


def iter_tensors(model: onnx.ModelProto):
    """Every TensorProto in the model, with a name for messages."""
    def graph(g, where):
        for t in g.initializer:
            yield t, f"initializer '{t.name}'"
        for st in g.sparse_initializer:
            yield st.values, f"sparse initializer '{st.values.name}' values"
            yield st.indices, f"sparse initializer '{st.values.name}' indices"
        for n in g.node:
            yield from attrs(n, where)

    def attrs(n, where):
        for a in n.attribute:
            label = f"attribute '{a.name}' of node '{n.name or n.op_type}'{where}"
            if a.HasField("t"):
                yield a.t, label
            for t in a.tensors:
                yield t, label
            if a.HasField("sparse_tensor"):
                yield a.sparse_tensor.values, label
            if a.HasField("g"):
                yield from graph(a.g, f" (in a subgraph of '{n.name or n.op_type}')")
            for sg in a.graphs:
                yield from graph(sg, f" (in a subgraph of '{n.name or n.op_type}')")

    yield from graph(model.graph, "")
    for f in model.functions:
        for n in f.node:
            yield from attrs(n, f" (in function '{f.name}')")


def check_declared_sizes(model: onnx.ModelProto, model_path: Path) -> None:
    """Raise InputError for any tensor whose declared size the file does not back, or that is too big."""
    base = model_path.parent
    total = 0
    fix_model = "re-export the model (its tensor declarations do not match its data)"
    for t, label in iter_tensors(model):
        n = element_count(t.dims, f"{model_path}: {label}", fix_model)
        item = _itemsize(t)
        declared = None if item is None else int(n * item + 0.5)
        if declared is not None:
            total += declared
            check_bytes(declared, f"{model_path}: {label} (dims {list(t.dims)})", fix_model)
        if t.data_location == TensorProto.EXTERNAL:
            _check_external(t, label, declared, model_path, base)
        elif t.HasField("raw_data"):
            if declared is not None and len(t.raw_data) != declared:
                raise InputError(f"{model_path}: {label} declares dims {list(t.dims)} ({human(declared)}) but holds "
                                 f"{human(len(t.raw_data))} of data; the file is corrupt: {fix_model}")
        else:
            per = 2 if t.data_type in _COMPLEX else 1
            have = sum(len(getattr(t, f)) for f in _TYPED)
            if have and have != n * per and not (n == 0 and have == 0):
                raise InputError(f"{model_path}: {label} declares {n} elements (dims {list(t.dims)}) but holds "
                                 f"{have // per}; the file is corrupt: {fix_model}")
    check_bytes(total, f"{model_path}: the model's tensors together", "use a machine with more memory or "
                "raise $EDGEC_MAX_BYTES if the model is really this large")


def _check_external(t: TensorProto, label: str, declared: int | None, model_path: Path, base: Path) -> None:
    info = {}
    for e in t.external_data:
        k, v = e.key, e.value
        if not isinstance(k, str) or not isinstance(v, str):  # protobuf hands back bytes for invalid UTF-8
            raise InputError(f"{model_path}: {label} has external-data fields that are not valid UTF-8; "
                             "the file is corrupt: re-export the model")
        info[k] = v
    loc = info.get("location", "")
    where = f"{model_path}: {label} keeps its data in external file '{loc}'"
    if not loc:
        raise InputError(f"{model_path}: {label} is marked external but names no file; re-export the model "
                         "with its external data")
    lp = Path(loc)
    if lp.is_absolute() or ".." in lp.parts or "\x00" in loc:
        raise InputError(f"{where}, outside the model's folder; onnx (and edgec) only read external data "
                         f"beside the model: move the file next to {model_path.name} and fix its location")
    f = base / lp
    try:
        if f.is_symlink() or (f.exists() and not f.resolve().is_relative_to(base.resolve())):
            raise InputError(f"{where}, a link that points outside the model's folder; copy the data file "
                             "next to the model instead")
        if not f.is_file():
            raise InputError(f"{where}, which is missing; put '{loc}' next to {model_path.name} "
                             "(external data travels with the .onnx)")
        size = f.stat().st_size
    except OSError as e:
        raise InputError(f"{where}, which cannot be read ({e.strerror or type(e).__name__}); check the file") from None
    try:
        offset = int(info.get("offset", 0) or 0)
        length = int(info["length"]) if info.get("length") not in (None, "") else None
    except ValueError:
        raise InputError(f"{where} with a non-numeric offset/length; re-export the model") from None
    if offset < 0 or (length is not None and length < 0):
        raise InputError(f"{where} with a negative offset/length; re-export the model")
    need = length if length is not None else (declared if declared is not None else size - offset)
    if declared is not None and length is not None and length != declared:
        raise InputError(f"{where}: length {length} B, but dims {list(t.dims)} need {declared} B; "
                         "re-export the model")
    if offset + need > size:
        raise InputError(f"external data file {f} is {human(size)}, but {label} needs bytes {offset}..{offset + need} "
                         f"of it (dims {list(t.dims)}): the data file is truncated or from another export; "
                         "copy it again with the .onnx")


def check_size_limit(path: Path) -> None:
    try:
        size = os.path.getsize(path)
    except OSError:
        return
    check_bytes(size, f"model file {path}", "check that this is the model you meant")


def check_reference_accepts(model: onnx.ModelProto, path) -> None:
    """The FP32 reference (onnxruntime) must accept the source model: a model that passes onnx.checker's
    light check but whose shapes or attributes contradict each other (Conv channels vs weights) would
    otherwise fail later, inside the optimizer or validation, as an internal error."""
    import onnxruntime as ort
    if model.ByteSize() > 1_000_000_000:  # big models: the validation stage's own session will say it
        return
    so = ort.SessionOptions()
    so.log_severity_level = 4
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    try:
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        first = first.split("failed:", 1)[-1].strip()[:250]
        raise InputError(f"{path}: onnxruntime, the FP32 reference, cannot load the model ({first}); the model is "
                         "inconsistent: fix or re-export it") from None


def reference_failure(e: Exception, what: str) -> InputError | None:
    """An onnxruntime run error during validation (the model and the data disagree) as an InputError."""
    mod = type(e).__module__ or ""
    if "onnxruntime" not in mod:
        return None
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:250]
    return InputError(f"{what} failed in onnxruntime ({first}); check that the data matches the model's inputs "
                      "and that the model is consistent")
