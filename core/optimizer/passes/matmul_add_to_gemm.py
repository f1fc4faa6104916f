"""MatMul(A, B) + Add(bias) -> Gemm, for 2-D A, constant 2-D B and a bias Gemm can broadcast.

Higher-rank A (transformer activations) is left alone: Gemm is 2-D only and wrapping it in
Reshapes would add nodes, not remove them.
"""
from __future__ import annotations

import onnx_ir as ir

from edgec.core.optimizer.registry import PassContext, register_pass
from edgec.core.optimizer.rewrite import const_array, single_consumer

_GEMM_TYPES = {ir.DataType.FLOAT, ir.DataType.DOUBLE, ir.DataType.FLOAT16, ir.DataType.BFLOAT16}


def _try(mm: ir.Node) -> bool:
    a, b = mm.inputs[0], mm.inputs[1]
    y = mm.outputs[0]
    if a is None or a.shape is None or len(a.shape) != 2:
        return False
    w = const_array(b)
    if w is None or w.ndim != 2 or a.dtype not in _GEMM_TYPES:
        return False
    add = single_consumer(y)
    if add is None or add.op_type != "Add" or add.domain not in ("", "ai.onnx"):
        return False
    bias_val = add.inputs[1] if add.inputs[0] is y else add.inputs[0]
    bias = const_array(bias_val)
    if bias is None or bias.dtype != w.dtype or bias.ndim > 2:
        return False
    n = w.shape[1]
    m = a.shape[0]
    shape = (1,) * (2 - bias.ndim) + bias.shape
    # Gemm's C broadcasts one way only, and the Add's output must keep MatMul's (M, N) shape.
    if shape[1] not in (1, n) or not (shape[0] == 1 or (isinstance(m, int) and shape[0] == m)):
        return False
    graph = mm.graph
    gemm = ir.Node("", "Gemm", [a, b, bias_val], num_outputs=1, name=mm.name or None)
    graph.insert_before(mm, gemm)
    out = gemm.outputs[0]
    out.type, out.shape = add.outputs[0].type, add.outputs[0].shape
    name = add.outputs[0].name
    ir.convenience.replace_all_uses_with(add.outputs[0], out, replace_graph_outputs=True)
    out.name = name
    graph.remove([add, mm], safe=True)
    return True


@register_pass("matmul_add_to_gemm")
def matmul_add_to_gemm(model: ir.Model, ctx: PassContext) -> int:
    """Turn 2-D MatMul + constant Add into one Gemm."""
    return sum(1 for n in list(model.graph)
               if n.op_type == "MatMul" and n.domain in ("", "ai.onnx") and n.graph is not None
               and _try(n))
