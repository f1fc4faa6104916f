"""Pad (constant mode, zero value, spatial dims only) folded into the pads of the Conv or
AveragePool that reads it, and a -inf Pad into MaxPool."""
from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgec.core.optimizer.registry import PassContext, register_pass
from edgec.core.optimizer.rewrite import const_array, single_consumer


def _pad_amounts(pad: ir.Node) -> tuple[np.ndarray, float] | None:
    if pad.attributes.get_string("mode", "constant") != "constant":
        return None
    if len(pad.inputs) > 3 and pad.inputs[3] is not None:
        return None  # `axes` (opset 18): rare, not worth the bookkeeping
    if len(pad.inputs) > 1:
        pads = const_array(pad.inputs[1])
    else:
        attr = pad.attributes.get_ints("pads", None)
        pads = np.array(attr) if attr is not None else None
    if pads is None:
        return None
    value = 0.0
    if len(pad.inputs) > 2 and pad.inputs[2] is not None:
        v = const_array(pad.inputs[2])
        if v is None or v.size != 1:
            return None
        value = float(v.reshape(()))
    elif len(pad.inputs) == 1:
        value = pad.attributes.get_float("value", 0.0)
    return pads.astype(np.int64), value


def _try(pad: ir.Node) -> bool:
    consumer = single_consumer(pad.outputs[0])
    if consumer is None or consumer.inputs[0] is not pad.outputs[0]:
        return False
    op = consumer.op_type
    if op not in ("Conv", "AveragePool", "MaxPool") or consumer.domain not in ("", "ai.onnx"):
        return False
    found = _pad_amounts(pad)
    if found is None:
        return False
    pads, value = found
    rank = len(pads) // 2
    begin, end = pads[:rank], pads[rank:]
    if rank < 3 or np.any(pads < 0) or begin[0] or begin[1] or end[0] or end[1]:
        return False
    if consumer.attributes.get_string("auto_pad", "NOTSET") != "NOTSET":
        return False
    existing = consumer.attributes.get_ints("pads", None)
    existing = np.array(existing if existing is not None else [0] * (2 * (rank - 2)), np.int64)
    set_count_include = False
    if op == "Conv" or op == "AveragePool":
        if value != 0.0:
            return False
        if op == "AveragePool" and consumer.attributes.get_int("count_include_pad", 0) == 0:
            if np.any(existing):
                return False  # would change how the existing border is averaged
            set_count_include = True
    else:  # MaxPool ignores its own padding, which equals padding with -inf
        if not (np.isneginf(value)) or len(consumer.outputs) > 1 and consumer.outputs[1].uses():
            return False
    n = rank - 2
    new = np.concatenate([existing[:n] + begin[2:], existing[n:] + end[2:]])
    if op != "Conv":  # pooling pads must stay below the kernel size (onnxruntime enforces it)
        kernel = consumer.attributes.get_ints("kernel_shape", None)
        if kernel is None or np.any(new >= np.tile(np.array(kernel), 2)):
            return False
    consumer.attributes["pads"] = ir.AttrInt64s("pads", [int(x) for x in new])
    if set_count_include:
        consumer.attributes["count_include_pad"] = ir.AttrInt64("count_include_pad", 1)
    consumer.replace_input_with(0, pad.inputs[0])
    pad.graph.remove(pad, safe=True)
    return True


@register_pass("fold_pad")
def fold_pad(model: ir.Model, ctx: PassContext) -> int:
    """Fold constant-zero spatial Pad into Conv/AveragePool pads (-inf Pad into MaxPool)."""
    return sum(1 for node in list(model.graph)
               if node.op_type == "Pad" and node.domain in ("", "ai.onnx") and _try(node))
