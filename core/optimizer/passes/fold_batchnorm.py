"""BatchNormalization (inference mode) folded into the Conv / ConvTranspose / Gemm before it.

Fires only when the BN is the sole reader of that output (otherwise the un-normalised tensor is
still needed) and the weights are not shared with another node.
"""
from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgec.core.optimizer import affine
from edgec.core.optimizer.registry import PassContext, register_pass
from edgec.core.optimizer.rewrite import bypass, const_array, single_consumer


def _try(bn: ir.Node) -> bool:
    if bn.attributes.get_int("training_mode", 0) != 0 or len(bn.inputs) != 5:
        return False
    x = bn.inputs[0]
    anchor = x.producer() if x is not None else None
    if anchor is None or single_consumer(x) is not bn or not affine.foldable(anchor):
        return False
    if anchor.op_type == "Gemm" and (x.shape is not None and len(x.shape) != 2):
        return False
    params = [const_array(v) for v in bn.inputs[1:]]
    if any(p is None for p in params):
        return False
    gamma, beta, mean, var = (p.astype(np.float64).reshape(-1) for p in params)
    c = affine.out_channels(anchor)
    if any(p.size not in (1, c) for p in (gamma, beta, mean, var)):
        return False
    eps = bn.attributes.get_float("epsilon", 1e-5)
    scale = gamma / np.sqrt(var + eps)
    shift = beta - mean * scale
    if any(o.uses() or o.is_graph_output() for o in bn.outputs[1:]):
        return False
    affine.fold(anchor, scale, shift)
    if not bypass(bn, x, bn.outputs[0]):
        raise RuntimeError(f"could not bypass {bn.name} after folding")  # rolled back
    return True


@register_pass("fold_batchnorm")
def fold_batchnorm(model: ir.Model, ctx: PassContext) -> int:
    """Fold inference BatchNormalization into the preceding Conv/ConvTranspose/Gemm."""
    return sum(1 for n in list(model.graph)
               if n.op_type == "BatchNormalization" and n.domain in ("", "ai.onnx") and _try(n))
