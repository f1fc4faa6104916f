"""FP16 conversion.

ONNX Runtime's `float16` converter (shipped inside onnxruntime.transformers) already handles the hard
parts: keeping model I/O in FP32 with boundary Casts, ops that have no FP16 definition, clamping weights
outside the FP16 range, and subgraphs. Reimplementing it would only add bugs, so we wrap it and add
what edgec needs: a keep-list that accepts both node names and op types.
"""
from __future__ import annotations

import logging
from typing import Sequence

import onnx

from .graph import split_keep_list, topo_sort


def convert_fp16(model: onnx.ModelProto, *, keep_fp32: Sequence[str] = (), fp32_io: bool = True) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    names, op_types = split_keep_list(model, keep_fp32)
    # The converter logs a warning per clamped weight; those are expected for FP16 and not actionable.
    logger = logging.getLogger("onnxruntime.transformers.float16")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        out = convert_float_to_float16(
            model,
            keep_io_types=fp32_io,
            op_block_list=sorted(set(DEFAULT_OP_BLOCK_LIST) | op_types),
            node_block_list=sorted(names),
            # Shape inference is needed to type intermediate tensors; the converter runs onnx's own.
            disable_shape_infer=False,
        )
    finally:
        logger.setLevel(level)
    return topo_sort(_dedupe_casts(out))


def _dedupe_casts(model: onnx.ModelProto) -> onnx.ModelProto:
    """The converter emits one boundary Cast per blocked consumer, all with the same output name, when
    a tensor feeds several blocked nodes (SqueezeNet's fire modules): keep one, they are identical."""
    seen: dict[str, onnx.NodeProto] = {}
    keep = []
    for n in model.graph.node:
        dup = [o for o in n.output if o in seen]
        if dup:
            first = seen[dup[0]]
            if n.op_type == first.op_type and list(n.input) == list(first.input) and \
                    n.attribute == first.attribute:
                continue
        for o in n.output:
            seen[o] = n
        keep.append(n)
    if len(keep) != len(model.graph.node):
        nodes = [onnx.NodeProto() for _ in keep]
        for d, s in zip(nodes, keep):
            d.CopyFrom(s)
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return model
