"""Size and cost figures of an ONNX model: nodes, initializers, parameters, MACs, bytes.

Shared by the optimizer's per-pass report and `edgec inspect`. MACs need tensor shapes, so the
model is shape-inferred first (through onnx-ir, which strips large initializers before calling
onnx's C++ inference, so models over 2 GB work too). Symbolic dimensions count as 1.

Counting convention (documented because every tool differs): Conv/ConvTranspose/Gemm/MatMul count
multiply-accumulates; elementwise ops, activations, normalisations and pooling count one MAC per
output element (per input element for global/reduce ops) so that removing or fusing them shows up.
"""
from __future__ import annotations

import math
from typing import Union

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import ShapeInferencePass

ModelLike = Union[onnx.ModelProto, ir.Model]

_ELEMENTWISE = {
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "Equal", "Less",
    "Greater", "And", "Or", "Not", "Neg", "Abs", "Sqrt", "Exp", "Log", "Reciprocal", "Erf",
    "Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu",
    "Selu", "Softplus", "Gelu", "Mish", "BatchNormalization", "InstanceNormalization",
    "LayerNormalization", "Softmax", "LogSoftmax", "Dropout", "Cast", "Floor", "Ceil", "Round",
    "MaxPool", "AveragePool", "LpPool", "QuantizeLinear", "DequantizeLinear",
}
_REDUCING = {"GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceSum", "ReduceMax",
             "ReduceMin", "ReduceL2", "ReduceProd"}


def _dims(value: ir.Value | None) -> list[int] | None:
    if value is None or value.shape is None:
        return None
    return [d if isinstance(d, int) else 1 for d in value.shape]


def _numel(dims: list[int] | None) -> int:
    return int(math.prod(dims)) if dims is not None else 0


def node_macs(node: ir.Node) -> int:
    """MACs of one node given shapes already on its values (0 when a needed shape is unknown)."""
    op = node.op_type
    out = _dims(node.outputs[0]) if node.outputs else None
    if op == "Conv":
        w = _dims(node.inputs[1])
        if out is None or w is None:
            return 0
        return _numel(out) * _numel(w[1:])  # w[1] is already Cin/group
    if op == "ConvTranspose":
        x, w = _dims(node.inputs[0]), _dims(node.inputs[1])
        if x is None or w is None:
            return 0
        return _numel(x) * _numel(w[1:])  # every input pixel scatters into Cout/group * k
    if op in ("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"):
        a = _dims(node.inputs[0])
        if out is None or a is None or not a:
            return 0
        if op == "Gemm":
            k = a[0] if node.attributes.get_int("transA", 0) else a[-1]
        else:
            k = a[-1]
        return _numel(out) * k
    if op in _REDUCING:
        return _numel(_dims(node.inputs[0]))
    if op in _ELEMENTWISE:
        return _numel(out)
    return 0


def _ensure_shapes(model: ModelLike) -> ir.Model:
    if isinstance(model, onnx.ModelProto):
        model = ir.serde.deserialize_model(model)
    else:
        model = model.clone()  # tensors are shared, so this is cheap; shapes land on the copy
    try:
        ShapeInferencePass(strict_mode=False)(model)
    except Exception:  # noqa: BLE001 - stats degrade to 0 MACs rather than fail a compile
        pass
    return model


def model_stats(model: ModelLike) -> dict:
    """{"nodes", "initializers", "parameters", "macs", "bytes"} of the main graph.

    `bytes` is the stored size of initializers plus Constant-node tensors (the weight payload);
    `parameters` counts their elements.
    """
    m = _ensure_shapes(model)
    g = m.graph
    params = nbytes = 0
    for v in g.initializers.values():
        t = v.const_value
        if t is not None:
            params += _numel(list(t.shape))
            nbytes += t.nbytes
    macs = 0
    for node in g:
        if node.op_type == "Constant" and node.domain == "":
            attr = node.attributes.get("value")
            if attr is not None and attr.type == ir.AttributeType.TENSOR:
                params += _numel(list(attr.value.shape))
                nbytes += attr.value.nbytes
        macs += node_macs(node)
    return {
        "nodes": len(g),
        "initializers": len(g.initializers),
        "parameters": int(params),
        "macs": int(macs),
        "bytes": int(nbytes),
    }
