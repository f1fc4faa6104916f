"""Mul/Div/Add/Sub by a per-channel constant folded into the Conv / ConvTranspose / Gemm before it,
and a Mul by a per-input-channel constant folded into the Conv / Gemm after it (input scaling
such as baked-in normalisation; exact even with zero padding, since 0 * s = 0 - which is why an
Add before a padded Conv is not folded).

Must not fire for a non-constant operand, a constant that varies along a non-channel axis, an
output with other readers, or weights shared by another node.
"""
from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgec.core.optimizer import affine
from edgec.core.optimizer.registry import PassContext, register_pass
from edgec.core.optimizer.rewrite import (
    add_initializer,
    bypass,
    const_array,
    rewrite_to_fixpoint,
    single_consumer,
    used_only_by,
)


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


def _try_input_scale(mul: ir.Node) -> bool:
    """Conv(x * s) -> Conv'(x) with W scaled per input channel; Gemm(A * s) likewise per K."""
    if len(mul.inputs) != 2 or any(i is None for i in mul.inputs):
        return False
    y = mul.outputs[0]
    consumer = single_consumer(y)
    if consumer is None or consumer.op_type not in ("Conv", "Gemm") or consumer.inputs[0] is not y \
            or consumer.domain not in ("", "ai.onnx"):
        return False
    for pos in (0, 1):
        x, c = mul.inputs[pos], const_array(mul.inputs[1 - pos])
        w = const_array(consumer.inputs[1]) if len(consumer.inputs) > 1 else None
        if c is None or w is None or c.dtype != w.dtype or not used_only_by(consumer.inputs[1], consumer):
            continue
        if x.shape is None or y.shape is None or len(x.shape) != len(y.shape):
            continue  # the Mul must not broadcast x up to a bigger shape
        if consumer.op_type == "Conv":
            group = consumer.attributes.get_int("group", 1)
            cin = w.shape[1] * group
            vec = _per_channel(c, w.ndim, cin)
            if vec is None:
                continue
            per_group = vec.reshape(group, w.shape[1])  # input channels seen by each group
            cout_g = w.shape[0] // group
            scale = np.repeat(per_group, cout_g, axis=0)  # (Cout, Cin/group)
            new_w = w.astype(np.float64) * scale.reshape(scale.shape + (1,) * (w.ndim - 2))
        else:
            if consumer.attributes.get_int("transA", 0) or w.ndim != 2:
                continue
            trans_b = consumer.attributes.get_int("transB", 0)
            k = w.shape[1] if trans_b else w.shape[0]
            if c.ndim > 2 or any(d != 1 for d in ((1,) * (2 - c.ndim) + c.shape)[:1]):
                continue
            if c.ndim and c.shape[-1] not in (1, k):
                continue
            vec = np.broadcast_to(c.reshape(-1).astype(np.float64), (k,))
            new_w = w.astype(np.float64) * (vec[None, :] if trans_b else vec[:, None])
        name = consumer.name or consumer.outputs[0].name
        consumer.replace_input_with(1, add_initializer(consumer.graph, f"{name}_W_scaled",
                                                       new_w.astype(w.dtype)))
        consumer.replace_input_with(0, x)
        mul.graph.remove(mul, safe=True)
        return True
    return False


@register_pass("fold_mul_add")
def fold_mul_add(model: ir.Model, ctx: PassContext) -> int:
    """Fold per-channel constant Mul/Div/Add/Sub into Conv/ConvTranspose/Gemm weights and bias."""
    def fold(n: ir.Node) -> bool:
        if n.domain not in ("", "ai.onnx"):
            return False
        return n.op_type in ("Mul", "Add", "Sub", "Div") and _try(n) or n.op_type == "Mul" and _try_input_scale(n)

    return rewrite_to_fixpoint(model.graph, fold)
