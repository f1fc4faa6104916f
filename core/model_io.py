"""Loading a user's ONNX file with errors that say what is wrong and how to fix it."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx

from edgec.core.backend import TensorSpec
from edgec.core.errors import InputError


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_model(path: str | Path, check: bool = True) -> onnx.ModelProto:
    """Load and check an ONNX model; external data next to the file is loaded too.

    Every way a file can be bad ends in one InputError: unreadable protobuf (any parser exception:
    DecodeError, UnicodeDecodeError in string fields, ...), declared tensor sizes the file does not back
    (checked before anything is allocated, core/model_guard.py), external data onnx refuses, checker
    failures, an opset newer than this onnx knows, ops from domains no runtime here implements."""
    from edgec.core.model_guard import check_declared_sizes, check_size_limit

    p = Path(path)
    if not p.exists():
        raise InputError(f"model file not found: {p} (check the path)")
    if p.is_dir():
        raise InputError(f"model path is a directory, not an .onnx file: {p}; pass the .onnx file itself")
    check_size_limit(p)
    try:
        model = onnx.load(str(p), load_external_data=False)
    except OSError as e:
        raise InputError(f"cannot read {p} ({e.strerror or type(e).__name__}); check the file's permissions") from None
    except Exception as e:  # any parser failure on untrusted bytes: DecodeError, UnicodeDecodeError, RuntimeError
        raise InputError(f"{p} is not a readable ONNX model (truncated or not a protobuf: "
                         f"{type(e).__name__}); re-export or re-download it") from None
    if not model.graph.node and not model.graph.output:
        raise InputError(f"{p} is not an ONNX model (no graph found); pass an .onnx file")
    check_declared_sizes(model, p)
    _check_opsets(model, p)
    try:
        onnx.load_external_data_for_model(model, str(p.parent))
    except Exception as e:  # onnx's own path checks (ValidationError) or an unreadable file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise InputError(f"{p}: onnx refused to load its external data ({first}); keep the data files beside the "
                         "model, as plain files, under the names the model gives") from None
    if check:
        try:
            # Path-based check handles models over 2 GB with external data.
            onnx.checker.check_model(str(p), full_check=False)
        except Exception as e:  # ValidationError, and the C++ checker's other failures on odd protos
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise InputError(f"{p} fails onnx.checker: {first}; fix the exporter output "
                             "(or run `edgec inspect` to see the graph)") from None
        _check_types(model, p)
    return model


# Domains onnxruntime (the reference every compile validates against) implements.
KNOWN_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "com.microsoft.nchwc", "ai.onnx.training",
                 "ai.onnx.preview.training", "com.ms.internal.nhwc", "org.pytorch.aten"}


def _check_opsets(model: onnx.ModelProto, p: Path) -> None:
    newest = onnx.defs.onnx_opset_version()
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx") and o.version > newest:
            raise InputError(f"{p} is ONNX opset {o.version}, newer than the newest this installation knows "
                             f"({newest}, onnx {onnx.__version__}); re-export at opset {newest} or lower")
    local = {(f.domain, f.name) for f in model.functions}
    for n in model.graph.node:
        if n.domain not in KNOWN_DOMAINS and (n.domain, n.op_type) not in local:
            raise InputError(f"{p}: node '{n.name or n.op_type}' uses op '{n.op_type}' from domain '{n.domain}', "
                             "which neither onnxruntime nor any edgec backend implements; export it with standard "
                             "ONNX ops (or define it as a model-local function)")


def _check_types(model: onnx.ModelProto, p: Path) -> None:
    for kind, values in (("input", graph_inputs(model)), ("output", model.graph.output)):
        for v in values:
            try:
                np_dtype(v.type.tensor_type.elem_type)
            except Exception:
                raise InputError(f"{p}: graph {kind} '{v.name}' has element type {v.type.tensor_type.elem_type}, "
                                 "which has no numpy equivalent (or is not a tensor); give it a numeric tensor "
                                 "type") from None


_ELEM = {v: k for k, v in onnx.TensorProto.DataType.items()}


def np_dtype(elem_type: int) -> str:
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name


def value_dtype(tp: onnx.TypeProto) -> str:
    """A tensor's numpy dtype name; sequences, optionals and maps as `sequence(float32)`,
    `optional(int64)`, `map(int64,float32)` (no numpy dtype exists for them; runners pass them as lists/None)."""
    kind = tp.WhichOneof("value")
    if kind == "tensor_type":
        return np_dtype(tp.tensor_type.elem_type) if tp.tensor_type.elem_type else "undefined"
    if kind == "sparse_tensor_type":
        return f"sparse({np_dtype(tp.sparse_tensor_type.elem_type)})"
    if kind == "sequence_type":
        return f"sequence({value_dtype(tp.sequence_type.elem_type)})"
    if kind == "optional_type":
        return f"optional({value_dtype(tp.optional_type.elem_type)})"
    if kind == "map_type":
        return f"map({np_dtype(tp.map_type.key_type)},{value_dtype(tp.map_type.value_type)})"
    return "undefined"


def is_tensor_dtype(dtype: str) -> bool:
    return "(" not in dtype and dtype != "undefined"


def _shape(t: onnx.ValueInfoProto) -> tuple:
    if not t.type.HasField("tensor_type") or not t.type.tensor_type.HasField("shape"):
        return ()
    dims = []
    for d in t.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or "?")
    return tuple(dims)


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def input_specs(model: onnx.ModelProto) -> list[TensorSpec]:
    return [TensorSpec(i.name, value_dtype(i.type), _shape(i)) for i in graph_inputs(model)]


def output_specs(model: onnx.ModelProto) -> list[TensorSpec]:
    return [TensorSpec(o.name, value_dtype(o.type), _shape(o)) for o in model.graph.output]


def concrete_shape(spec: TensorSpec, batch: int = 1) -> tuple[int, ...]:
    """Symbolic dims become `batch` on axis 0 and 1 elsewhere (used for random validation inputs);
    a zero-size dim is a real size, not a dynamic one."""
    return tuple(d if isinstance(d, int) and d >= 0 else (batch if i == 0 else 1) for i, d in enumerate(spec.shape))


def random_feeds(specs: list[TensorSpec], rng: np.random.Generator) -> dict[str, np.ndarray]:
    feeds = {}
    from edgec.core.limits import check_bytes, element_count
    for s in specs:
        shape = concrete_shape(s)
        if not is_tensor_dtype(s.dtype):
            raise InputError(f"input '{s.name}' is a {s.dtype}, which random validation cannot generate; "
                             "pass --val data (per-sample .npz keys or a list of feeds)")
        dt = np.dtype(s.dtype)
        fix = "pass --val data, or give the input a realistic static shape"
        check_bytes(element_count(shape, f"input '{s.name}'", fix) * dt.itemsize,
                    f"random validation input '{s.name}' (shape {list(shape)})", fix)
        if dt.kind == "f":
            feeds[s.name] = rng.standard_normal(shape).astype(dt)
        elif dt.kind in "iu":
            feeds[s.name] = rng.integers(0, 10, shape).astype(dt)
        elif dt.kind == "b":
            feeds[s.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            raise InputError(f"input '{s.name}' has dtype {s.dtype}, which random validation cannot generate; "
                             "pass --val data")
    return feeds


def save_model(model: onnx.ModelProto, path: Path) -> None:
    """Save, switching to external data past protobuf's 2 GB limit."""
    if model.ByteSize() > 1_900_000_000:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data")
    else:
        onnx.save_model(model, str(path))


def check_input_sizes(model: onnx.ModelProto, path) -> None:
    """A graph input whose static shape no machine could feed (the optimizer's equivalence check and
    random validation would allocate it) is refused before compiling."""
    from edgec.core.limits import check_bytes, element_count
    for s in input_specs(model):
        shape = concrete_shape(s)
        fix = "give the input a realistic static shape (or a symbolic batch dimension)"
        n = element_count(shape, f"{path}: model input '{s.name}'", fix)
        check_bytes(n * np.dtype(s.dtype).itemsize, f"{path}: model input '{s.name}' (shape {list(shape)})", fix)
