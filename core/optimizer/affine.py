"""Folding a per-output-channel affine map (y*scale + shift) into Conv/ConvTranspose/Gemm weights.

Shared by the BatchNormalization and the Mul/Add folding passes. New initializers are created
rather than editing tensors in place, because the pipeline's rollback snapshots share tensors.
"""
from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgec.core.optimizer.rewrite import add_initializer, const_array, used_only_by

ANCHORS = ("Conv", "ConvTranspose", "Gemm")


def out_channels(anchor: ir.Node) -> int | None:
    w = const_array(anchor.inputs[1]) if len(anchor.inputs) > 1 else None
    if w is None:
        return None
    if anchor.op_type == "Conv":
        return w.shape[0]
    if anchor.op_type == "ConvTranspose":
        return w.shape[1] * anchor.attributes.get_int("group", 1)
    if w.ndim != 2:
        return None
    return w.shape[0] if anchor.attributes.get_int("transB", 0) else w.shape[1]


def output_rank(anchor: ir.Node) -> int | None:
    if anchor.op_type == "Gemm":
        return 2
    w = const_array(anchor.inputs[1])
    return None if w is None else w.ndim


def foldable(anchor: ir.Node) -> bool:
    """Weights are constants no other node reads (bias constant), so the rewrite stays local."""
    if anchor.op_type not in ANCHORS or anchor.domain not in ("", "ai.onnx"):
        return False
    if len(anchor.inputs) < 2 or const_array(anchor.inputs[1]) is None:
        return False
    if not used_only_by(anchor.inputs[1], anchor):
        return False
    # A shared bias is fine (deduplicated zero biases are common): fold() writes a new one and
    # the other reader keeps the old; a shared weight is not, copying it would grow the model.
    if len(anchor.inputs) > 2 and anchor.inputs[2] is not None:
        if const_array(anchor.inputs[2]) is None:
            return False
    return out_channels(anchor) is not None


def fold(anchor: ir.Node, scale: np.ndarray | None, shift: np.ndarray | None) -> None:
    """Rewrite the anchor so its output becomes `output * scale + shift` (per channel)."""
    graph = anchor.graph
    w = const_array(anchor.inputs[1])
    dtype = w.dtype
    c = out_channels(anchor)
    s = np.ones(c) if scale is None else np.broadcast_to(np.asarray(scale, np.float64), (c,))
    t = np.zeros(c) if shift is None else np.broadcast_to(np.asarray(shift, np.float64), (c,))
    has_bias = len(anchor.inputs) > 2 and anchor.inputs[2] is not None
    b = const_array(anchor.inputs[2]).astype(np.float64) if has_bias else None
    w64 = w.astype(np.float64)
    op = anchor.op_type
    if op == "Conv":
        new_w = w64 * s.reshape((c,) + (1,) * (w.ndim - 1))
        new_b = (b if b is not None else np.zeros(c)) * s + t
    elif op == "ConvTranspose":
        g = anchor.attributes.get_int("group", 1)
        cin, cout_g = w.shape[0], w.shape[1]
        grouped = w64.reshape((g, cin // g, cout_g) + w.shape[2:])
        new_w = (grouped * s.reshape((g, 1, cout_g) + (1,) * (w.ndim - 2))).reshape(w.shape)
        new_b = (b if b is not None else np.zeros(c)) * s + t
    else:  # Gemm: Y = alpha*A@B + beta*C, channels are B's output columns
        trans_b = anchor.attributes.get_int("transB", 0)
        new_w = w64 * (s[:, None] if trans_b else s[None, :])
        beta = anchor.attributes.get_float("beta", 1.0)
        if b is not None:
            new_b = beta * b * s + t  # keeps C's broadcast shape, e.g. (M, N) or (1, N)
        else:
            new_b = t
        anchor.attributes["beta"] = ir.AttrFloat32("beta", 1.0)
    name = anchor.name or anchor.outputs[0].name
    w_val = add_initializer(graph, f"{name}_W_folded", new_w.astype(dtype))
    anchor.replace_input_with(1, w_val)
    if not has_bias and shift is None:
        return  # a pure scale needs no bias; adding a zero one would only grow the model
    b_val = add_initializer(graph, f"{name}_B_folded", np.asarray(new_b).astype(dtype))
    if has_bias:
        anchor.replace_input_with(2, b_val)
    else:
        anchor.resize_inputs(3)
        anchor.replace_input_with(2, b_val)
