"""Constant folding: evaluate every node whose inputs are all constants, and Shape/Size of
statically shaped values.

Our own code, on purpose: onnx-ir 1.1 has no folder; onnxsim folds by serializing the whole model
for onnxruntime (fails above 2 GB, see onnxsim#284) and onnxslim folds in its own graphsurgeon
IR. Evaluation uses onnx's ReferenceEvaluator one node at a time with the model's opset, so
every standard op folds without onnxruntime and without serializing the model.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
import onnx_ir as ir
from onnx.reference import ReferenceEvaluator
from onnx_ir.passes.common import LiftConstantsToInitializersPass

from edgec.core.optimizer.registry import PassContext, register_pass
from edgec.core.optimizer.rewrite import const_array, opset, static_shape

# Folding these would freeze randomness or needs control flow we do not evaluate here.
_NEVER = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
          "Bernoulli", "If", "Loop", "Scan", "Constant", "QuantizeLinear", "DequantizeLinear"}
# Do not fold results that grow a model beyond this (e.g. big Expand/Tile/ConstantOfShape
# outputs), unless they are weights: a backend needs those as constants whatever their size.
MAX_FOLDED_BYTES = 1 << 20


def _evaluate(node: ir.Node, arrays: list[np.ndarray | None], version: int) -> list[np.ndarray]:
    names = [f"i{k}" if a is not None else "" for k, a in enumerate(arrays)]
    proto = ir.serde.serialize_node(node)
    del proto.input[:]
    proto.input.extend(names)
    outs = [f"o{k}" for k in range(len(node.outputs))]
    del proto.output[:]
    proto.output.extend(outs)
    inputs = [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(a.dtype),
                                                 a.shape)
              for n, a in zip(names, arrays) if a is not None]
    graph = onnx.helper.make_graph([proto], "fold", inputs,
                                   [onnx.helper.make_empty_tensor_value_info(o) for o in outs])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", version)])
    feeds = {n: a for n, a in zip(names, arrays) if a is not None}
    return ReferenceEvaluator(model).run(None, feeds)


# Inputs that backends need as constants (weights, biases): these fold regardless of size.
_WEIGHT_SLOTS = {"Conv": {1, 2}, "ConvTranspose": {1, 2}, "Gemm": {1, 2}, "MatMul": {1},
                 "BatchNormalization": {1, 2, 3, 4}, "PRelu": {1}}


_LAYOUT_OPS = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Cast", "Identity"}


def _feeds_weight(node: ir.Node, depth: int = 4) -> bool:
    """A weight slot reads this node's output, directly or through layout-only ops."""
    for out in node.outputs:
        for use in out.uses():
            if use.idx in _WEIGHT_SLOTS.get(use.node.op_type, ()):
                return True
            if depth and use.idx == 0 and use.node.op_type in _LAYOUT_OPS \
                    and _feeds_weight(use.node, depth - 1):
                return True
    return False


def _shape_fold(node: ir.Node) -> np.ndarray | None:
    shape = static_shape(node.inputs[0])
    if shape is None:
        return None
    if node.op_type == "Size":
        return np.array(math.prod(shape), dtype=np.int64)
    start = node.attributes.get_int("start", 0)
    end = node.attributes.get_int("end", None)
    return np.array(shape[start:end], dtype=np.int64)


@register_pass("constant_folding")
def constant_folding(model: ir.Model, ctx: PassContext) -> int:
    """Replace nodes computable at compile time by initializers holding their result."""
    LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
    graph = model.graph
    version = opset(model)
    folded = 0
    for node in list(graph):
        if node.domain not in ("", "ai.onnx") or node.op_type in _NEVER:
            continue
        if any(o.is_graph_output() for o in node.outputs):
            continue  # a graph output must stay a computed value for runtimes to return it
        if node.op_type in ("Shape", "Size") and node.inputs:
            arr = _shape_fold(node)
            if arr is None:
                continue
            results = [arr]
        else:
            if not node.inputs or all(i is None for i in node.inputs):
                continue
            arrays = [const_array(i) if i is not None else None for i in node.inputs]
            if any(a is None for a, i in zip(arrays, node.inputs) if i is not None):
                continue
            try:
                results = _evaluate(node, arrays, version)
            except Exception:  # noqa: BLE001 - an op the reference runtime lacks stays computed
                continue
            in_bytes = sum(a.nbytes for a in arrays if a is not None)
            out_bytes = sum(np.asarray(r).nbytes for r in results)
            if out_bytes > MAX_FOLDED_BYTES and out_bytes > in_bytes and not _feeds_weight(node):
                continue
        # Sequences, optionals and string tensors are not initializer material.
        if any(not isinstance(r, np.ndarray) and not np.isscalar(r) for r in results) \
                or any(o.type is not None and not isinstance(o.type, ir.TensorType)
                       for o in node.outputs):
            continue
        results = [np.asarray(r) for r in results]
        if any(r.dtype == object for r in results):
            continue
        # An empty multi-dim constant ([2, 4, 0] padding into a Concat) is valid ONNX that OpenVINO's
        # frontend cannot convert; computed, the runtime sees the op it was given (an empty 1-D shape or
        # axes list still folds: backends need those constant)
        if any(r.size == 0 and r.ndim > 1 for r in results):
            continue
        names, replacements = [], []
        for old, arr in zip(node.outputs, results):
            if old.dtype is not None and arr.dtype != old.dtype.numpy():
                arr = arr.astype(old.dtype.numpy())
            # not ascontiguousarray: it turns 0-d arrays into 1-d ones
            tensor = ir.tensor(np.asarray(arr, order="C"))
            new = ir.Value(shape=ir.Shape(arr.shape), type=ir.TensorType(tensor.dtype),
                           const_value=tensor)
            ir.convenience.replace_all_uses_with(old, new)
            names.append(old.name)
            replacements.append(new)
        graph.remove(node, safe=True)
        for name, new in zip(names, replacements):
            if new.uses():  # the node is gone, so the folded value can take over its name
                new.name = name
                new.const_value.name = name
                graph.register_initializer(new)
        folded += 1
    return folded
