"""Bring the graph into the form the other passes assume (all onnx-ir library passes).

- initializers that are also listed as graph inputs become plain constants (ONNX IR < 4 style
  exports list every weight as an input, which blocks all folding; onnxsim does the same);
- Constant nodes become initializers, so "is it constant?" is one check (`const_value`);
- every node and value gets a unique name (the report and fusion annotations refer to names).
"""
from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import (
    LiftConstantsToInitializersPass,
    NameFixPass,
    RemoveInitializersFromInputsPass,
)

from edgec.core.optimizer.registry import PassContext, register_pass


@register_pass("normalize")
def normalize(model: ir.Model, ctx: PassContext) -> int:
    """Initializers out of inputs, Constant nodes to initializers, unique names."""
    changes = 0
    n_inputs = len(model.graph.inputs)
    RemoveInitializersFromInputsPass()(model)
    changes += n_inputs - len(model.graph.inputs)

    n_const = sum(1 for n in model.graph if n.op_type == "Constant")
    LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
    changes += n_const - sum(1 for n in model.graph if n.op_type == "Constant")
    unnamed = sum(1 for n in model.graph if not n.name)
    NameFixPass()(model)
    return changes + unnamed
