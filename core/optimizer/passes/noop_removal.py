"""Removal of nodes that compute their input unchanged.

Identity; Dropout in inference mode; Reshape/Flatten/Squeeze/Unsqueeze/Expand whose (inferred,
static) output shape equals the input shape; Transpose by the identity permutation and pairs of
Transposes (cancelling pairs vanish, other pairs become one Transpose when the first has no other
reader); Cast to the input's own type; Pad by all-zero pads; single-input Concat/Sum/Max/Min/Mean.
"""
from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgec.core.optimizer.registry import PassContext, register_pass
from edgec.core.optimizer.rewrite import bypass, const_array, rewrite_to_fixpoint, single_consumer, static_shape

_SHAPE_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Expand"}
_VARIADIC = {"Concat", "Sum", "Max", "Min", "Mean"}


def _dropout_is_noop(node: ir.Node) -> bool:
    if node.attributes.get_int("is_test", 1) == 0:  # opset < 7 training flag
        return False
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        mode = const_array(node.inputs[2])
        if mode is None or bool(mode):
            return False
    return True


def _transpose(node: ir.Node, rank: int | None) -> list[int] | None:
    perm = node.attributes.get_ints("perm", None)
    if perm is not None:
        return list(perm)
    return list(range(rank))[::-1] if rank is not None else None


def _rank(value: ir.Value) -> int | None:
    return len(value.shape) if value.shape is not None else None


def _try(node: ir.Node) -> bool:
    op = node.op_type
    if node.domain not in ("", "ai.onnx") or not node.inputs or node.inputs[0] is None:
        return False
    src, out = node.inputs[0], node.outputs[0]
    if op == "Identity":
        return bypass(node, src, out)
    if op == "Dropout":
        return _dropout_is_noop(node) and bypass(node, src, out)
    if op in _SHAPE_OPS:
        s_in, s_out = static_shape(src), static_shape(out)
        return s_in is not None and s_in == s_out and bypass(node, src, out)
    if op == "Cast":
        return src.dtype is not None and node.attributes.get_int("to", -1) == src.dtype.value \
            and bypass(node, src, out)
    if op == "Pad":
        pads = const_array(node.inputs[1]) if len(node.inputs) > 1 else None
        if pads is None:
            attr = node.attributes.get_ints("pads", None)
            pads = np.array(attr) if attr is not None and len(node.inputs) == 1 else None
        return pads is not None and not np.any(pads) and bypass(node, src, out)
    if op in _VARIADIC and len(node.inputs) == 1:
        return bypass(node, src, out)
    if op == "Transpose":
        perm = _transpose(node, _rank(src))
        if perm is None:
            return False
        if perm == list(range(len(perm))):
            return bypass(node, src, out)
        first = src.producer()
        if first is None or first.op_type != "Transpose" or first.domain not in ("", "ai.onnx"):
            return False
        perm1 = _transpose(first, _rank(first.inputs[0]))
        if perm1 is None or len(perm1) != len(perm):
            return False
        combined = [perm1[p] for p in perm]  # y = x.transpose(perm1).transpose(perm)
        if combined == list(range(len(combined))):
            return bypass(node, first.inputs[0], out)
        if single_consumer(src) is node:
            node.replace_input_with(0, first.inputs[0])
            node.attributes["perm"] = ir.AttrInt64s("perm", combined)
            node.graph.remove(first, safe=True)
            return True
    return False


@register_pass("noop_removal")
def noop_removal(model: ir.Model, ctx: PassContext) -> int:
    """Drop Identity, inference Dropout, same-shape reshapes, cancelling Transposes, etc."""
    return rewrite_to_fixpoint(model.graph, _try)
