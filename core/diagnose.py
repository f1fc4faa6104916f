"""Runtime and toolchain exceptions -> one line that names the op (and node) and what to do.

Runtimes raise 400-character messages (onnxruntime's `[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could
not find an implementation for Cast(19) node with name 'n0'`), C++ tracebacks (TVM) or `Exception from
src/...` chains (OpenVINO). A user needs the op, its opset version and the node, then the fix.
"""
from __future__ import annotations

import re

_ORT_HEAD = re.compile(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*(\w+)\s*:\s*")
_ORT_IMPL = re.compile(r"(?:implementation for|kernel for) (\w+)\((\d+)\)(?: node with name '([^']*)')?"
                       r"(?: \(node:'([^']*)')?")
_NODE_OP = re.compile(r"Node \(([^)]*)\) Op \((\w+)\)")
_NODE_NAME = re.compile(r"node (?:with name |name )?'([^']+)'", re.I)


def one_line(e: BaseException, limit: int = 300) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return (lines[0] if lines else type(e).__name__)[:limit]


def runtime_error(e: BaseException, model=None, what: str = "onnxruntime") -> str:
    """'op Cast-19 (node n0) has no onnxruntime kernel for these types: ...': the op first, then why."""
    text = one_line(e, 1000)
    text = _ORT_HEAD.sub(lambda m: "", text)
    m = _ORT_IMPL.search(text)
    if m:
        op, ver, node = m.group(1), m.group(2), m.group(3) or m.group(4)
        types = _input_types(model, node)
        return (f"{what} has no kernel for op {op}-{ver}{f' (node {node})' if node else ''}"
                f"{f' with inputs {types}' if types else ''}: use types/an opset it implements, or another backend")
    m = _NODE_OP.search(text)
    if m:
        return f"op {m.group(2)} (node {m.group(1)}): {text[m.end():].strip(' :') or text}"[:300]
    ops = op_hint(model, text)
    return f"{ops}{text}"[:300]


def op_hint(model, text: str) -> str:
    """'op X: ' when the message names one of the model's op types or nodes, '' otherwise."""
    if model is None:
        return ""
    nodes = list(getattr(getattr(model, "graph", None), "node", None) or [])
    by_name = next((n for n in nodes if n.name and f"'{n.name}'" in text), None)
    if by_name is not None:
        return f"op {by_name.op_type} (node {by_name.name}): "
    ops = sorted({n.op_type for n in nodes if re.search(rf"\b{re.escape(n.op_type)}\b", text)}, key=len, reverse=True)
    if ops:
        return f"op {ops[0]}: "
    if 0 < len({n.op_type for n in nodes}) <= 2:
        return f"op {', '.join(sorted({n.op_type for n in nodes}))}: "
    return ""


def _input_types(model, node_name: str | None) -> str:
    if model is None or not node_name:
        return ""
    try:
        import onnx

        node = next((n for n in model.graph.node if n.name == node_name), None)
        if node is None:
            return ""
        types = {}
        for vi in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
            if vi.type.HasField("tensor_type"):
                types[vi.name] = onnx.TensorProto.DataType.Name(vi.type.tensor_type.elem_type).lower()
        for t in model.graph.initializer:
            types[t.name] = onnx.TensorProto.DataType.Name(t.data_type).lower()
        got = [types.get(i, "?") for i in node.input if i]
        return "(" + ", ".join(got) + ")" if got and any(g != "?" for g in got) else ""
    except Exception:  # noqa: BLE001 - a hint only
        return ""
