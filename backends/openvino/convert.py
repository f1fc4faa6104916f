"""ONNX -> openvino.Model -> IR files, with conversion failures turned into one-line edgec errors."""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

from edgec.core.errors import BackendError, UnsupportedError

# OpenVINO's ONNX frontend summarises what it could not convert in these lines.
_NO_RULE = re.compile(r"No conversion rule found for operations:\s*(.+)")
_FAILED_OP = re.compile(r"--\s*([\w.:]+)\s+with a message:")
_UNSUPPORTED = re.compile(r"(?:Unsupported operator|Op type|operation type):?\s*['\"]?([\w.:]+)", re.I)


def onnx_to_ov(model_proto):
    """Convert an in-memory ONNX model. OpenVINO's convert_model takes a path, not a ModelProto, so the
    model goes through a temporary file (external data for models past protobuf's 2 GB limit)."""
    import onnx
    import openvino as ov

    with tempfile.TemporaryDirectory(prefix="edgec-ov-") as tmp:
        path = Path(tmp) / "model.onnx"
        big = model_proto.ByteSize() > 1_800_000_000
        onnx.save_model(model_proto, str(path), save_as_external_data=big,
                        all_tensors_to_one_file=True, location="model.onnx.data")
        try:
            # Weights must be read before the directory goes away.
            return ov.convert_model(str(path), share_weights=False)
        except Exception as e:  # OpenVINO raises its own OpConversionFailure / ovc Error types
            try:
                # The ONNX frontend via Core.read_model converts some models convert_model refuses (its
                # extra MOC transformations); weights are read into memory, not mapped from the temp file.
                return ov.Core().read_model(str(path))
            except Exception:  # noqa: BLE001
                raise conversion_error(e, model_proto) from e


# ONNX element types OpenVINO's frontend refuses with a bare "Unsupported type".
_EXOTIC = {"FLOAT8E4M3FNUZ", "FLOAT8E5M2FNUZ", "FLOAT4E2M1", "FLOAT8E8M0", "UINT4", "INT4", "INT2", "UINT2",
           "FLOAT8E4M3FN", "FLOAT8E5M2", "STRING", "COMPLEX64", "COMPLEX128"}


def _exotic_types(model) -> list[str]:
    import onnx

    seen = set()
    g = model.graph
    for v in list(g.input) + list(g.output) + list(g.value_info):
        if v.type.HasField("tensor_type"):
            seen.add(v.type.tensor_type.elem_type)
    seen.update(t.data_type for t in g.initializer)
    for n in g.node:
        for a in n.attribute:
            if a.name == "to":
                seen.add(a.i)
            elif a.type == onnx.AttributeProto.TENSOR:
                seen.add(a.t.data_type)
    names = []
    for t in seen:
        try:
            names.append(onnx.TensorProto.DataType.Name(t))
        except ValueError:
            pass
    return sorted(set(names) & _EXOTIC)


def conversion_error(e: Exception, model=None) -> BackendError:
    text = str(e)
    if model is not None and re.search(r"^Unsupported type$", text, re.M):
        types = _exotic_types(model)
        if types:
            return UnsupportedError(f"OpenVINO cannot load tensor type(s) {', '.join(types)} in this model; "
                                    "use another backend (e.g. --backend onnxruntime)")
    m = _NO_RULE.search(text)
    ops = [o.strip() for o in m.group(1).split(",")] if m else _FAILED_OP.findall(text)
    if not ops:
        ops = _UNSUPPORTED.findall(text)
    if ops:
        op_list = ", ".join(sorted(set(ops)))
        return UnsupportedError(f"OpenVINO cannot convert ONNX op(s) {op_list}; replace them in the model "
                                "or use another backend (e.g. --backend onnxruntime)")
    return BackendError(f"OpenVINO failed to convert the model: {reason(e)}")


_WRAPPER = re.compile(r"^(Exception from src/|Check '.*' failed at src/|Loading input model$|\[ ?(GENERAL_ERROR|NOT_IMPLEMENTED) ?\]$)")
_NODE = re.compile(r"While validating (?:ONNX )?node '([^']+)'|node (?:name|with name)[: ]+'?([\w./:-]+)")


def reason(e: Exception, limit: int = 300) -> str:
    """OpenVINO's messages start with lines that say where (`Exception from src/...cpp:112:`) and then
    the one that says why: keep the why, and the node it names when it names one."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    why = [ln for ln in lines if not _WRAPPER.match(ln)] or lines or [type(e).__name__]
    text = why[0]
    m = next((m for ln in lines for m in [_NODE.search(ln)] if m), None)
    node = (m.group(1) or m.group(2)) if m else None
    if node and node not in text:
        text = f"node {node}: {text}"
    return text[:limit]


def set_batch(ov_model, dynamic: bool, batch: int) -> None:
    """Fix a symbolic leading input dim to `batch`, or keep it dynamic (-1).

    Only inputs whose leading dim the model itself leaves symbolic have a batch axis to set: a static
    leading dim is the model's own shape (weights fed as inputs, shape tensors, `split` sizes, a [3, 4, 5]
    tensor), and reshaping it breaks the model. Static shapes let the CPU plugin pick its kernels once
    at compile time; dynamic batch pays a small per-shape cost but serves any batch size.
    """
    import openvino as ov

    shapes = {}
    for inp in ov_model.inputs:
        ps = inp.get_partial_shape()
        if ps.rank.is_dynamic or ps.rank.get_length() == 0 or ps[0].is_static:
            continue
        dims = list(ps)
        dims[0] = ov.Dimension(-1) if dynamic else ov.Dimension(batch)
        shapes[inp] = ov.PartialShape(dims)
    if not shapes:
        return
    try:
        ov_model.reshape(shapes)
    except Exception as e:
        if not dynamic:
            return  # the symbolic dim is not a batch OpenVINO can fix: keep the model's own (dynamic) shapes
        raise UnsupportedError(f"the model cannot take a dynamic batch in OpenVINO ({reason(e, 200)}); "
                               "drop -O dynamic_batch=true, or give --input-shape") from e


def save_ir(ov_model, out_dir: Path, compress_to_fp16: bool) -> list[str]:
    import openvino as ov

    xml = Path(out_dir) / "model.xml"
    ov.save_model(ov_model, str(xml), compress_to_fp16=compress_to_fp16)
    return ["model.xml", "model.bin"]
