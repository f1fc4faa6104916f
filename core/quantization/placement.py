"""Which original node runs in which precision after quantization (printed by the CLI, stored in the manifest)."""
from __future__ import annotations

from collections import Counter

import onnx

from .graph import WEIGHTED_OPS, input_readers

_QDQ = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
_FLOATS = {onnx.TensorProto.FLOAT: "fp32", onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.DOUBLE: "fp32",
           onnx.TensorProto.BFLOAT16: "fp16"}


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # a model ORT runs but onnx cannot fully infer still gets a best-effort report
        inferred = model
    g = inferred.graph
    types = {t.name: t.data_type for t in g.initializer}
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    return types


def placement(original: onnx.ModelProto, converted: onnx.ModelProto) -> dict:
    """Precision of every float-computing node of `original` as it ends up in `converted`.

    A weighted node is int8 when its weight comes out of a DequantizeLinear; any other node when all
    its inputs come out of DequantizeLinear and its output goes into a QuantizeLinear (the pattern
    ONNX Runtime and TensorRT fuse into an integer kernel), or when the quantizer folded it away
    (Relu/Clip absorbed into the range of the following QuantizeLinear). Otherwise its output element
    type decides fp16 vs fp32.
    Shape arithmetic (no float tensors) is not listed.
    """
    types = _elem_types(converted)
    orig_types = _elem_types(original)
    orig_inits = {t.name for t in original.graph.initializer}
    producer = {o: n for n in converted.graph.node for o in n.output}
    consumers = input_readers(converted.graph.node)
    by_name = {n.name: n for n in converted.graph.node}

    def from_dq(t: str) -> bool:
        return t in producer and producer[t].op_type == "DequantizeLinear"

    nodes: dict[str, str] = {}
    for onode in original.graph.node:
        float_io = [t for t in list(onode.input) + list(onode.output) if orig_types.get(t) in _FLOATS]
        if not float_io:
            continue
        node = by_name.get(onode.name)
        if node is None:
            nodes[onode.name] = "int8"
            continue
        if onode.op_type in WEIGHTED_OPS and len(onode.input) > 1 and onode.input[1] in orig_inits:
            integer = from_dq(node.input[1])  # int8 weights (with int8 activations unless weight-only)
        else:
            # Runs as an integer kernel only when fed by DQ and requantized after (DQ -> op -> Q fusion).
            data_in = [i for i, oi in zip(node.input, onode.input) if i and oi not in orig_inits]
            integer = bool(data_in) and all(from_dq(i) for i in data_in) and any(
                c.op_type == "QuantizeLinear" for c in consumers.get(node.output[0], []))
        if integer:
            nodes[onode.name] = "int8"
            continue
        out_types = [types.get(o) for o in node.output if types.get(o) in _FLOATS]
        in_types = [types.get(i) for i in node.input if types.get(i) in _FLOATS]
        nodes[onode.name] = _FLOATS[(out_types or in_types or [onnx.TensorProto.FLOAT])[0]]
    counts = Counter(nodes.values())
    return {"int8": counts.get("int8", 0), "fp16": counts.get("fp16", 0), "fp32": counts.get("fp32", 0),
            "nodes": nodes}


def format_placement(report: dict) -> str:
    """Human summary of a quantization report: counts per precision, then the exceptions."""
    pl = report.get("placement") or {}
    nodes = pl.get("nodes", {})
    total = len(nodes) or 1
    parts = [f"{p.upper()} {pl.get(p, 0)} ({100.0 * pl.get(p, 0) / total:.0f}%)" for p in ("int8", "fp16", "fp32")
             if pl.get(p, 0)]
    lines = [f"precision placement ({report.get('precision', '?')}): " + ", ".join(parts or ["no float nodes"])]
    cal = report.get("calibration")
    if cal:
        lines.append(f"  calibration: {cal['method']} on {cal['samples']} samples (cache {cal['cache']})")
    majority = max(("int8", "fp16", "fp32"), key=lambda p: pl.get(p, 0))
    others = [(n, p) for n, p in nodes.items() if p != majority]
    if others:
        shown = others[:12]
        lines.append(f"  not {majority.upper()}: " + ", ".join(f"{n} ({p})" for n, p in shown)
                     + (f", ... {len(others) - len(shown)} more" if len(others) > len(shown) else ""))
    md = report.get("max_drop")
    if md:
        demand = " and ".join(d for d in (f"max_drop {md['budget']}" if md.get("budget") is not None else "",
                                          f"min_agreement {md['min_agreement']}%" if md.get("min_agreement") is not None
                                          else "") if d)
        est = md.get("final_estimate", {})
        lines.append(f"  {demand}: {len(md.get('float_tensors', []))} activation tensor(s) in float, "
                     f"{len(md['kept_fp32'])} layer(s) in FP32 ({md['kept_weight_share'] * 100:.1f}% of weights); "
                     f"{md['metric']} drop {md['initial_drop']:.2f} -> {md['final_drop']:.2f} points"
                     + (f", agreement {md['initial_agreement']:.1f} -> {md['final_agreement']:.1f}%"
                        if "final_agreement" in md else "")
                     + (f" (bounds: drop <= {est['drop_bound']:.2f}, agreement >= {est['agreement_bound']:.1f}%)"
                        if est else "")
                     + ("" if md["met"] else " (NOT met)"))
    bc = report.get("bias_correction")
    if bc:
        lines.append(f"  bias correction: {bc['layers']} layer(s) on {bc['samples']} samples")
    return "\n".join(lines)
