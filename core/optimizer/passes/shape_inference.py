"""Shape inference: onnx's C++ inference, called through onnx-ir's `call_onnx_api` (which swaps
large initializers for inputs first, so models above 2 GB work).

The merge back into the IR is ours: onnx-ir 1.1's ShapeInferencePass sets `value.dtype` on
values that had no type, which turns a sequence-typed value into a tensor-typed one (onnxruntime
then rejects the model). Here a value without a type takes the inferred type whole, and shapes
are only merged into tensor types.
"""
from __future__ import annotations

import functools

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import _c_api_utils

from edgec.core.optimizer.registry import PassContext, register_pass


def _merge(model: ir.Model, inferred_proto: onnx.ModelProto) -> int:
    inferred = ir.serde.deserialize_model(inferred_proto)
    gained = 0
    for graph, inf_graph in zip(model.graphs(), inferred.graphs()):
        inf_values = ir.convenience.create_value_mapping(inf_graph)
        for name, value in ir.convenience.create_value_mapping(graph).items():
            inf = inf_values.get(name)
            if inf is None or inf.type is None:
                continue
            if value.type is None:
                value.type = inf.type
                gained += 1
            if not isinstance(value.type, ir.TensorType) or not isinstance(inf.type, ir.TensorType):
                continue
            if value.type.dtype != inf.type.dtype:
                continue  # conflicting element types: leave it for the checker to report
            if inf.shape is not None and value.shape != inf.shape:
                known_before = _known(value.shape)
                value.shape = inf.shape
                gained += max(0, _known(inf.shape) - known_before)
    return gained


def _known(shape) -> int:
    if shape is None:
        return 0
    return 1 + sum(1 for d in shape if isinstance(d, int))


def infer_shapes(model: ir.Model) -> int:
    """Infer types and shapes in place; returns how many were gained (0 if inference failed)."""
    fn = functools.partial(onnx.shape_inference.infer_shapes, check_type=False, strict_mode=False,
                           data_prop=True)
    try:
        proto = _c_api_utils.call_onnx_api(fn, model)
    except Exception:  # noqa: BLE001 - inference is best effort; passes cope with unknown shapes
        return 0
    return _merge(model, proto)


@register_pass("shape_inference", changes_numerics=False)
def shape_inference(model: ir.Model, ctx: PassContext) -> int:
    """Infer value types and shapes (with data propagation for shape subgraphs)."""
    return infer_shapes(model)
