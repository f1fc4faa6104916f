"""TFLite's part of the precision audit: the .tflite file as LiteRT loaded it.

Per CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED / BATCH_MATMUL / TRANSPOSE_CONV op: the element types of
its activation input and weight tensors in the file (int8 x int8 = an integer kernel, float32 x int8 =
a dynamic-range / hybrid kernel, float32 x float32 = float), and whether XNNPACK took it (the DELEGATE
partitions, convert.delegation). Tensors carry the ONNX tensor names, so a layer is named by the ONNX
node that wrote its output (the source model, walking back over a fused Relu/Clip/bias Add).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import numpy as np

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


def audit(backend, artifact_dir: Path, manifest: Mapping, files: tuple[str, str]) -> list[dict]:
    """`files`: the backend's (.tflite, I/O map) names."""
    import json

    from edgec.backends.tflite.convert import delegation
    from edgec.backends.tflite.runner import TFLiteRunner

    recorded = {k: v for k, v in (manifest.get("options") or {}).items() if k in backend.option_defaults}
    opts = backend.validate_options(recorded)
    io = json.loads((Path(artifact_dir) / files[1]).read_text())
    runner = TFLiteRunner(Path(artifact_dir) / files[0], io, threads=1, delegate=opts["delegate"])
    try:
        tensors = {d["index"]: d for d in runner.it.get_tensor_details()}
        ops = runner.ops()
        deleg = delegation(runner)
    finally:
        runner.close()
    not_delegated = {int(s.split(":", 1)[0]) for s in deleg.get("ops_not_delegated", [])}
    islands = {s.split(" (")[0] for s in ((manifest.get("backend_info") or {}).get("float_islands") or [])}
    names = _onnx_names(manifest)
    kept = set(((manifest.get("quantization") or {}).get("kept_fp32")) or [])
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
        base = re.sub(r"_(Quantize|Dequantize)Linear_(Output|Input)$", "", out_name)  # the core's Q/DQ names
        onnx_name = names.get(out_name) or names.get(base) or base
        kernel = f"{kind} {a_dt}x{w_dt} ({where})"
        if _DT.get(a_dt) in ("int8", "int16") and _DT.get(w_dt) == "int8":
            rows.append({"name": onnx_name, "op": kind, "precision": _DT[a_dt], "kernel": kernel, "why": None})
        elif _DT.get(w_dt) == "int8":
            rows.append({"name": onnx_name, "op": kind, "precision": "int8 (dynamic)", "kernel": kernel, "why": None})
        else:
            if onnx_name in kept:
                why = "FP32 weights: kept FP32 (--keep-fp32 or the accuracy repair); its integer neighbours are " \
                      "read through DEQUANTIZE / written through QUANTIZE"
            elif onnx_name in islands:
                why = "float island: not all its tensors are quantized, so no TFLite int8 kernel takes it"
            else:
                why = "float tensors in the file: not quantized"
            rows.append({"name": onnx_name, "op": kind, "precision": _DT.get(a_dt, a_dt), "kernel": kernel, "why": why})
    return rows


def _name(dt: str) -> str:
    dt = dt.replace("<class 'numpy.", "").replace("'>", "")
    return dt


class ExposedRunner:
    """The .tflite on LiteRT's builtin kernels with every tensor preserved (XNNPACK keeps a delegated
    partition's intermediates in its own buffers, so they cannot be read); values dequantized with each
    tensor's scale/zero point and returned in the ONNX layout when the file holds them NHWC."""

    def __new__(cls, path: Path, io: Mapping, names: list[str], onnx_shapes: Mapping[str, tuple]):
        from ai_edge_litert import interpreter as I

        from edgec.backends.tflite.runner import TFLiteRunner

        runner = TFLiteRunner(path, io, threads=1, delegate="none")
        runner.it = I.Interpreter(model_path=str(path), num_threads=1, experimental_preserve_all_tensors=True,
                                  experimental_op_resolver_type=I.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        runner.it.allocate_tensors()
        wanted = set(names)
        exposed: dict[str, dict] = {}
        for d in runner.it.get_tensor_details():
            base = re.sub(r"_(Quantize|Dequantize)Linear_(Output|Input)$", "", d["name"])
            if base in wanted and base not in exposed and d["name"] not in {e["name"] for e in io["inputs"]}:
                exposed[base] = d
        plain_run = runner.run

        def run(feeds):
            out = plain_run(feeds)
            for t, d in exposed.items():
                v = runner.it.get_tensor(d["index"]).copy()
                scale, zp = d["quantization"]
                if v.dtype.kind in "iu" and scale:
                    v = (v.astype(np.float32) - zp) * scale
                want = onnx_shapes.get(t)
                if v.ndim == 4 and want is not None and tuple(v.shape) != tuple(want) and \
                        tuple(v.transpose(0, 3, 1, 2).shape) == tuple(want):
                    v = v.transpose(0, 3, 1, 2)
                out[t] = v
            return out

        runner.run = run
        runner.exposed = {t: d["name"] for t, d in exposed.items()}
        runner.note = ("tflite: every tensor preserved (experimental_preserve_all_tensors) on LiteRT's builtin kernels, "
                       "not XNNPACK, whose delegated tensors cannot be read; int8 tensors dequantized with their own "
                       "scale/zero point")
        return runner


def intermediates(artifact_dir: Path, manifest: Mapping, names: list[str], files: tuple[str, str]):
    import json

    io = json.loads((Path(artifact_dir) / files[1]).read_text())
    return ExposedRunner(Path(artifact_dir) / files[0], io, names, _onnx_shapes(manifest))


def _onnx_shapes(manifest: Mapping) -> dict[str, tuple]:
    """Static shapes of the source model's tensors (the file's NHWC ones are transposed back to them)."""
    import onnx

    src = manifest.get("source")
    if not src or not Path(src).is_file():
        return {}
    m = onnx.shape_inference.infer_shapes(onnx.load(src, load_external_data=False))
    out = {}
    for v in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in v.type.tensor_type.shape.dim]
        out[v.name] = tuple(dims)
    return out
