"""Common-subexpression elimination of equal constants and equal nodes (onnx-ir library passes).

Constants are merged by content hash first, so two nodes reading equal-but-distinct weights
become equal nodes for the node-level CSE that follows.
"""
from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import CommonSubexpressionEliminationPass, DeduplicateHashedInitializersPass

from edgec.core.optimizer.registry import PassContext, register_pass


@register_pass("cse")
def cse(model: ir.Model, ctx: PassContext) -> int:
    """Merge equal initializers and nodes that compute the same thing from the same inputs."""
    g = model.graph
    before = len(g) + len(g.initializers)
    DeduplicateHashedInitializersPass()(model)
    CommonSubexpressionEliminationPass()(model)
    return before - (len(g) + len(g.initializers))
