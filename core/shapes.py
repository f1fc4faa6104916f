"""Concrete input shapes for models with symbolic dims (`--input-shape name=1x3x640x640`).

A detector exported with dynamic HxW or a text model with a symbolic sequence length has no shape a
backend can specialize for, and no shape random validation can honestly pick: setting every symbol to 1
validates a 1x3x1x1 "image" (issue #12: a text detector passed there and failed with cosine 0 elsewhere).
So the user's shapes are written into the graph inputs before anything else runs (every backend then
compiles, and the validation runs, at them), and a random validation that would have to invent a
non-batch dim is refused instead of called a pass (`degenerate_dims`).
"""
from __future__ import annotations

import re
from typing import Mapping

import onnx

from edgec.core.errors import InputError

_DIMS = re.compile(r"^\d+(x\d+)*$")


def parse_input_shapes(value) -> dict[str, list[int]]:
    """`name=1x3x640x640` strings (a list, or one string with several separated by spaces/commas), or a
    {name: shape} mapping -> {name: [dims]}. A scalar input is `name=` (empty)."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        items = list(value.items())
    else:
        texts = [value] if isinstance(value, str) else list(value)
        items = []
        for text in texts:
            for part in re.split(r"[\s,;]+", str(text).strip()):
                if not part:
                    continue
                name, eq, dims = part.rpartition("=")
                if not eq or not name:
                    raise InputError(f"--input-shape {part!r}: write NAME=DxDxD, e.g. images=1x3x640x640")
                items.append((name, dims))
    out = {}
    for name, dims in items:
        if isinstance(dims, str):
            d = dims.strip().lower()
            if d and not _DIMS.match(d):
                raise InputError(f"--input-shape {name}={dims}: dims must be positive integers joined by x "
                                 "(e.g. 1x3x640x640); dynamic dims are not a concrete shape")
            shape = [int(x) for x in d.split("x")] if d else []
        else:
            shape = [int(x) for x in dims]
        if any(x < 0 for x in shape):
            raise InputError(f"--input-shape {name}: dims must be >= 0, got {shape}")
        out[str(name)] = shape
    return out


def apply_input_shapes(model: onnx.ModelProto, shapes: Mapping[str, list[int]]) -> onnx.ModelProto:
    """A copy of `model` whose named graph inputs have these static shapes. Each given dim must agree
    with a static one the model already has; a name that is not an input is an error naming the inputs."""
    if not shapes:
        return model
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {i.name for i in m.graph.initializer}
    inputs = {i.name: i for i in m.graph.input if i.name not in inits}
    for name, shape in shapes.items():
        vi = inputs.get(name)
        if vi is None:
            raise InputError(f"--input-shape names '{name}', which is not a model input "
                             f"(inputs: {', '.join(inputs) or 'none'})")
        if not vi.type.HasField("tensor_type"):
            raise InputError(f"--input-shape {name}: input '{name}' is not a tensor")
        tt = vi.type.tensor_type
        dims = list(tt.shape.dim) if tt.HasField("shape") else None
        if dims is not None and len(dims) != len(shape):
            raise InputError(f"--input-shape {name}={'x'.join(map(str, shape)) or '(scalar)'} has rank {len(shape)} "
                             f"but input '{name}' has rank {len(dims)} ({_show(dims)})")
        for k, (d, n) in enumerate(zip(dims or [], shape)):
            if d.HasField("dim_value") and d.dim_value != n:
                raise InputError(f"--input-shape {name}: dim {k} is fixed to {d.dim_value} by the model, not {n} "
                                 f"(input '{name}' is {_show(dims)})")
        tt.ClearField("shape")
        tt.shape.SetInParent()
        for n in shape:
            tt.shape.dim.add().dim_value = n
    # Intermediate shapes recorded for the symbolic model would contradict the concrete ones.
    del m.graph.value_info[:]
    return m


def degenerate_dims(specs) -> list[str]:
    """'name dim k (symbol)' for every symbolic dim past the leading one: random inputs would have to
    make up a size for it (1), which is not a shape the model is meant for."""
    out = []
    for s in specs:
        for k, d in enumerate(s.shape):
            if k > 0 and not (isinstance(d, int) and d >= 0):
                out.append(f"{s.name} dim {k} ({d})")
    return out


def _show(dims) -> str:
    return "[" + ", ".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in dims) + "]"
