"""Dead node, unused initializer and unused graph-input elimination.

Nodes and initializers: onnx-ir's RemoveUnusedNodesPass, which keeps the model's signature. A graph
input nothing reads stays too (issue #12): the artifact's interface is the model's, so a user's feed
that names it is never refused; runners accept it and ignore it. Only IR >= 4 initializers that were
also listed as inputs and are now unused go.
"""
from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass, RemoveUnusedOpsetsPass

from edgec.core.optimizer.registry import PassContext, register_pass


@register_pass("dead_code")
def dead_code(model: ir.Model, ctx: PassContext) -> int:
    """Remove nodes, initializers and graph inputs that no output depends on."""
    g = model.graph
    before = len(g) + len(g.initializers) + len(g.inputs)
    RemoveUnusedNodesPass()(model)
    dropped = False
    for value in list(g.inputs):
        if not value.uses() and not value.is_graph_output() and value.is_initializer() and len(g.inputs) > 1:
            if model.ir_version < 4:
                continue  # IR < 4: an initializer must stay listed as an input
            g.inputs.remove(value)
            dropped = True
    if dropped:  # an input that was also an initializer (IR < 4 style) is now unused
        RemoveUnusedNodesPass()(model)
    RemoveUnusedOpsetsPass()(model)
    return before - (len(g) + len(g.initializers) + len(g.inputs))
