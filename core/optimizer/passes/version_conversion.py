"""Move the model into the opset range a backend accepts (and up to opset 11 at least).

Two passes: `version_conversion` raises the opset first, `opset_downgrade` lowers it at the end.

onnx's version converter does the work; it is a C++ API that needs the serialized model, so the
call goes through onnx-ir's `call_onnx_api`, which swaps large initializers for graph inputs
first. That keeps models above protobuf's 2 GB limit convertible; the weights are re-attached
afterwards (the converter does not rewrite weights, only ops and attributes).
"""
from __future__ import annotations

import functools

import onnx
import onnx.version_converter
import onnx_ir as ir
from onnx_ir.passes.common import _c_api_utils

from edgec.core.optimizer.registry import PassContext, register_pass
from edgec.core.optimizer.rewrite import opset

MIN_OPSET = 11


def target_opset(current: int, opset_range: tuple[int, int] | None) -> int:
    newest = onnx.defs.onnx_opset_version()
    lo, hi = opset_range if opset_range else (MIN_OPSET, newest)
    return min(max(current, lo), hi, newest)


def _convert(model: ir.Model, target: int):
    init_names = {name for name in model.graph.initializers}
    original_inputs = {v.name for v in model.graph.inputs}
    tensors = {n: v.const_value for n, v in model.graph.initializers.items()}
    proto = _c_api_utils.call_onnx_api(
        functools.partial(onnx.version_converter.convert_version, target_version=target), model
    )
    new = ir.serde.deserialize_model(proto)
    g = new.graph
    # call_onnx_api listed every initializer as an input and dropped the large ones' data.
    for value in list(g.inputs):
        if value.name not in init_names:
            continue
        if value.name not in original_inputs:
            g.inputs.remove(value)
        if value.name not in g.initializers and tensors[value.name] is not None:
            value.const_value = tensors[value.name]
            g.register_initializer(value)
    return new, 1


@register_pass("version_conversion")
def version_conversion(model: ir.Model, ctx: PassContext):
    """Raise the default-domain opset to 11 or the backend's minimum, before the other passes."""
    current = opset(model)
    target = target_opset(current, ctx.opset_range)
    return _convert(model, target) if target > current else 0


@register_pass("opset_downgrade")
def opset_downgrade(model: ir.Model, ctx: PassContext):
    """Lower the opset to the backend's maximum, last, after no-op removal.

    Last because onnx's converter lacks down-adapters for some ops that the passes remove anyway
    (e.g. Identity 16 -> 15).
    """
    current = opset(model)
    target = target_opset(current, ctx.opset_range)
    return _convert(model, target) if target < current else 0
