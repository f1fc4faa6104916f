"""TVM's part of the precision audit.

TVM 0.27's Relax frontend lowers QuantizeLinear/DequantizeLinear to float round/clip/scale arithmetic and
FoldConstant dequantizes the int8 weights at compile time; the compiled TIR kernels' operand types
(recorded at compile from the fused module, manifest backend_info.int8) say whether any conv/matmul
kernel took integer operands. The module.so keeps no per-layer map back to ONNX nodes, so when every
kernel is float each ONNX conv/gemm is reported fp32 with that reason, and when some are integer the
per-layer precision is reported unknown rather than guessed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping


def audit(artifact_dir: Path, manifest: Mapping) -> list[dict]:
    import onnx

    from edgec.core.quantization.graph import WEIGHTED_OPS, ensure_node_names

    src = manifest.get("source")
    if not src or not Path(src).is_file():
        from edgec.core.errors import InputError
        raise InputError(f"tvm audit: the artifact's ONNX source {src!r} is not there (it names the layers)")
    m = ensure_node_names(onnx.load(src, load_external_data=False))
    int8 = (manifest.get("backend_info") or {}).get("int8") or {}
    precision = manifest.get("precision", "fp32")
    ints = int8.get("kernels_with_integer_operands", 0)
    floats = int8.get("kernels_with_float_operands")
    rows = []
    for n in m.graph.node:
        if n.op_type not in WEIGHTED_OPS:
            continue
        if precision != "int8":
            rows.append({"name": n.name, "op": n.op_type, "precision": precision, "kernel": "TIR", "why": f"a {precision} artifact"})
        elif ints == 0:
            rows.append({"name": n.name, "op": n.op_type, "precision": "fp32", "kernel": "TIR float32",
                         "why": f"TVM lowers Q/DQ to float arithmetic (fake quantization): all {floats} conv/matmul "
                                "kernels take float32 operands"})
        else:
            rows.append({"name": n.name, "op": n.op_type, "precision": "unknown", "kernel": "TIR",
                         "why": f"{ints} kernels take integer operands, but TVM keeps no map from kernels to ONNX nodes"})
    return rows
