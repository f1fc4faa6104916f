"""Loading a user's ONNX file with errors that say what is wrong and how to fix it."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from edgec.core.backend import TensorSpec
from edgec.core.errors import InputError


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_model(path: str | Path, check: bool = True) -> onnx.ModelProto:
    """Load and check an ONNX model; external data next to the file is loaded too."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"model file not found: {p} (check the path)")
    if p.is_dir():
        raise InputError(f"model path is a directory, not an .onnx file: {p}")
    try:
        model = onnx.load(str(p), load_external_data=True)
    except (DecodeError, RuntimeError, ValueError, OSError) as e:  # onnx wraps protobuf errors differently by version
        raise InputError(f"{p} is not a readable ONNX model (truncated or not a protobuf: "
                         f"{type(e).__name__}); re-export or re-download it") from None
    if not model.graph.node and not model.graph.output:
        raise InputError(f"{p} is not an ONNX model (no graph found); pass an .onnx file")
    if check:
        try:
            # Path-based check handles models over 2 GB with external data.
            onnx.checker.check_model(str(p), full_check=False)
        except onnx.checker.ValidationError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(f"{p} fails onnx.checker: {first}; fix the exporter output "
                             "(or run `edgec inspect` to see the graph)") from None
    return model


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
    for s in specs:
        shape = concrete_shape(s)
        if not is_tensor_dtype(s.dtype):
            raise InputError(f"input '{s.name}' is a {s.dtype}, which random validation cannot generate; "
                             "pass --val data (per-sample .npz keys or a list of feeds)")
        dt = np.dtype(s.dtype)
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
