"""Mul/Div/Add/Sub by a per-channel constant folded into the Conv / ConvTranspose / Gemm before it.

Must not fire for a non-constant operand, a constant that varies along a non-channel axis, an
output with other readers, or weights shared by another node.
"""
from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgec.core.optimizer import affine
from edgec.core.optimizer.registry import PassContext, register_pass
from edgec.core.optimizer.rewrite import bypass, const_array, single_consumer


def _per_channel(c: np.ndarray, rank: int, channels: int) -> np.ndarray | None:
    if c.ndim > rank:
        return None
    shape = (1,) * (rank - c.ndim) + c.shape
    if any(d != 1 for k, d in enumerate(shape) if k != 1) or shape[1] not in (1, channels):
        return None
    return np.broadcast_to(c.reshape(-1).astype(np.float64), (channels,))


def _try(node: ir.Node) -> bool:
    if len(node.inputs) != 2 or any(i is None for i in node.inputs):
        return False
    for pos in (0, 1):
        y, other = node.inputs[pos], node.inputs[1 - pos]
        anchor = y.producer()
        if anchor is None or anchor.op_type not in affine.ANCHORS:
            continue
        c = const_array(other)
        if c is None or single_consumer(y) is not node or not affine.foldable(anchor):
            continue
        w = const_array(anchor.inputs[1])
        if c.dtype != w.dtype:
            continue
        vec = _per_channel(c, affine.output_rank(anchor), affine.out_channels(anchor))
        if vec is None:
            continue
        op = node.op_type
        if op == "Mul":
            scale, shift = vec, None
        elif op == "Add":
            scale, shift = None, vec
        elif op == "Sub":
            scale, shift = (None, -vec) if pos == 0 else (-np.ones_like(vec), vec)
        elif op == "Div" and pos == 0 and np.all(vec != 0):
            scale, shift = 1.0 / vec, None
        else:
            continue
        affine.fold(anchor, scale, shift)
        if not bypass(node, y, node.outputs[0]):
            raise RuntimeError(f"could not bypass {node.name} after folding")  # rolled back
        return True
    return False


@register_pass("fold_mul_add")
def fold_mul_add(model: ir.Model, ctx: PassContext) -> int:
    """Fold per-channel constant Mul/Div/Add/Sub into Conv/ConvTranspose/Gemm weights and bias."""
    changes = 0
    progress = True
    while progress:
        progress = False
        for n in list(model.graph):
            if n.graph is not None and n.op_type in ("Mul", "Add", "Sub", "Div") \
                    and n.domain in ("", "ai.onnx") and _try(n):
                changes += 1
                progress = True
    return changes
