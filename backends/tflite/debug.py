"""TFLite's part of the precision audit: the .tflite file as LiteRT loaded it.

Per CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED / BATCH_MATMUL / TRANSPOSE_CONV op: the element types of
its activation input and weight tensors in the file (int8 x int8 = an integer kernel, float32 x int8 =
a dynamic-range / hybrid kernel, float32 x float32 = float), and whether XNNPACK took it (the DELEGATE
partitions, convert.delegation). Tensors carry the ONNX tensor names, so a layer is named by the ONNX
node that wrote its output (the source model, walking back over a fused Relu/Clip/bias Add).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

COMPUTE = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV", "CONV_3D"}
_DT = {"int8": "int8", "uint8": "int8", "int16": "int16", "float32": "fp32", "float16": "fp16"}


def _onnx_names(manifest: Mapping):
    """tensor name -> ONNX node name of the layer that computes it (source model; no optimizer run)."""
    src = manifest.get("source")
    if not src or not Path(src).is_file():
        return {}
    import onnx

    from edgec.core.quantization.graph import WEIGHTED_OPS, ensure_node_names

    m = ensure_node_names(onnx.load(src, load_external_data=False))
    prod = {o: n for n in m.graph.node for o in n.output}
    out = {}
    for t, n in prod.items():
        cur = n
        for _ in range(3):
            if cur.op_type in WEIGHTED_OPS or not cur.input or cur.input[0] not in prod:
                break
            if cur.op_type not in ("Relu", "Clip", "Add", "BatchNormalization", "Mul"):
                break
            cur = prod[cur.input[0]]
        out[t] = cur.name if cur.op_type in WEIGHTED_OPS else n.name
    return out


def audit(backend, artifact_dir: Path, manifest: Mapping) -> list[dict]:
    import json

    from edgec.backends.tflite.backend import FILE, IO_FILE
    from edgec.backends.tflite.convert import delegation
    from edgec.backends.tflite.runner import TFLiteRunner

    recorded = {k: v for k, v in (manifest.get("options") or {}).items() if k in backend.option_defaults}
    opts = backend.validate_options(recorded)
    io = json.loads((Path(artifact_dir) / IO_FILE).read_text())
    runner = TFLiteRunner(Path(artifact_dir) / FILE, io, threads=1, delegate=opts["delegate"])
    try:
        tensors = {d["index"]: d for d in runner.it.get_tensor_details()}
        ops = runner.ops()
        deleg = delegation(runner)
    finally:
        runner.close()
    not_delegated = {int(s.split(":", 1)[0]) for s in deleg.get("ops_not_delegated", [])}
    islands = {s.split(" (")[0] for s in ((manifest.get("backend_info") or {}).get("float_islands") or [])}
    names = _onnx_names(manifest)
    rows = []
    for op in ops:
        kind = op.get("op_name")
        if kind not in COMPUTE:
            continue
        ins = [int(i) for i in op["inputs"] if int(i) >= 0]
        act = tensors[ins[0]] if ins else None
        wt = tensors[ins[1]] if len(ins) > 1 else None
        out_name = tensors[int(op["outputs"][0])]["name"] if len(op["outputs"]) else ""
        a_dt = str(getattr(act.get("dtype"), "__name__", act.get("dtype"))) if act else "?"
        w_dt = str(getattr(wt.get("dtype"), "__name__", wt.get("dtype"))) if wt else "?"
        a_dt, w_dt = _name(a_dt), _name(w_dt)
        where = "LiteRT builtin" if op["index"] in not_delegated or opts["delegate"] != "xnnpack" else "XNNPACK"
        onnx_name = names.get(out_name, out_name)
        kernel = f"{kind} {a_dt}x{w_dt} ({where})"
        if _DT.get(a_dt) in ("int8", "int16") and _DT.get(w_dt) == "int8":
            rows.append({"name": onnx_name, "op": kind, "precision": _DT[a_dt], "kernel": kernel, "why": None})
        elif _DT.get(w_dt) == "int8":
            rows.append({"name": onnx_name, "op": kind, "precision": "int8 (dynamic)", "kernel": kernel, "why": None})
        else:
            why = ("float island: the op has no TFLite int8 kernel" if onnx_name in islands else
                   "float tensors in the file: no Q/DQ around it in the model (kept FP32 by --keep-fp32 or the "
                   "accuracy repair, or not quantized)")
            rows.append({"name": onnx_name, "op": kind, "precision": _DT.get(a_dt, a_dt), "kernel": kernel, "why": why})
    return rows


def _name(dt: str) -> str:
    dt = dt.replace("<class 'numpy.", "").replace("'>", "")
    return dt
