"""Shape inference through onnx-ir's wrapper of onnx's C++ inference (works above 2 GB)."""
from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import ShapeInferencePass

from edgec.core.optimizer.registry import PassContext, register_pass


def _known(model: ir.Model) -> int:
    n = 0
    for node in model.graph:
        for v in node.outputs:
            if v.shape is not None:
                n += 1 + sum(1 for d in v.shape if isinstance(d, int))
    return n


@register_pass("shape_inference", changes_numerics=False)
def shape_inference(model: ir.Model, ctx: PassContext) -> int:
    """Infer value types and shapes (with data propagation for shape subgraphs)."""
    before = _known(model)
    ShapeInferencePass(strict_mode=False, data_prop=True)(model)
    return max(0, _known(model) - before)
