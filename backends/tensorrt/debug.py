"""TensorRT's parts of `edgec debug` and the precision audit.

audit: per convolution / matmul layer of the strongly typed network TensorRT's ONNX parser built from
  the artifact's model.onnx (recorded at build, manifest backend_info.layers, network.layer_table): INT8
  where DequantizeLinear of int8 feeds both its input and its weights, which the builder fuses into an
  INT8 kernel; else the layer's own type. It is the network-level precision: the per-kernel precision
  after fusion is in the engine inspector, which needs a GPU (engine_inspector.json when one was there).
intermediates: marking tensors as engine outputs needs a GPU to run the engine; without one, say so.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from edgec.core.errors import UnsupportedError

COMPUTE = {"CONVOLUTION", "DECONVOLUTION", "MATRIX_MULTIPLY", "FULLY_CONNECTED"}
_P = {"INT8": "int8", "FP8": "fp8", "INT4": "int4", "FLOAT": "fp32", "FP32": "fp32", "HALF": "fp16", "FP16": "fp16",
      "BF16": "bf16"}


def audit(artifact_dir: Path, manifest: Mapping) -> list[dict]:
    layers = (manifest.get("backend_info") or {}).get("layers") or []
    rows = []
    for r in layers:
        if r.get("type") not in COMPUTE:
            continue
        p = _P.get(str(r.get("precision")).upper(), str(r.get("precision")).lower())
        why = None if p in ("int8", "int4", "fp8") else (
            "no int8 DequantizeLinear on both its input and its weights in the network (kept FP32 by --keep-fp32 "
            "or the accuracy repair, or not quantized)")
        rows.append({"name": r["name"], "op": r["type"], "precision": p,
                     "kernel": "network layer (before fusion; the engine inspector needs a GPU)", "why": why})
    return rows


def intermediates(backend, artifact_dir: Path, manifest: Mapping, names, threads=None):
    av = backend.available()
    if not av.can_run:
        raise UnsupportedError(f"tensorrt: intermediate tensors are marked engine outputs, and running the engine "
                               f"needs a GPU ({av.reason}); run `edgec debug` on a machine with one")
    raise UnsupportedError("tensorrt: marking intermediate tensors as engine outputs is not implemented yet; "
                           "the audit (edgec inspect) works")
