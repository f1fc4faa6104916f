"""Which kernels the compiled model really runs, read from OpenVINO's runtime (execution) graph.

A Q/DQ model that OpenVINO could not fuse still "works" but runs FakeQuantize + FP32 convolutions; the
only place that shows it is the runtime graph's per-node `runtimePrecision`, so the manifest carries a
summary of it and users can see whether INT8 really ran.
"""
from __future__ import annotations

from collections import Counter

# Runtime-graph bookkeeping nodes: they hold data or glue, not compute.
_SKIP = {"Const", "Input", "Output", "Parameter", "Result"}
# The layers that hold almost all FLOPs; their precision is what "INT8 ran" means.
COMPUTE = {"Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul", "Gemm",
           "BinaryConvolution", "RNNCell", "RNNSeq", "ScaledDotProductAttention"}
_NAMES = {"i8": "I8", "u8": "I8", "bf16": "BF16", "f16": "FP16", "f32": "FP32"}
MAX_LISTED = 20


def _rt(op, key: str) -> str:
    info = op.get_rt_info()
    return info[key].astype(str) if key in info else ""


def summarize(compiled_model) -> dict:
    runtime = compiled_model.get_runtime_model()
    by_precision: Counter = Counter()
    compute: Counter = Counter()
    not_int8: list[str] = []
    layer_types: Counter = Counter()
    for op in runtime.get_ordered_ops():
        kind = _rt(op, "layerType")
        if kind in _SKIP:
            continue
        prec = _NAMES.get(_rt(op, "runtimePrecision"), _rt(op, "runtimePrecision").upper() or "?")
        by_precision[prec] += 1
        layer_types[f"{kind}:{prec}"] += 1
        if kind in COMPUTE:
            compute[prec] += 1
            if prec != "I8":
                not_int8.append(_rt(op, "originalLayersNames") or op.get_friendly_name())
    n_compute = sum(compute.values())
    return {
        "layers_by_precision": dict(sorted(by_precision.items())),
        "compute_layers_by_precision": dict(sorted(compute.items())),
        "int8_compute_fraction": round(compute["I8"] / n_compute, 4) if n_compute else 0.0,
        "layer_types": dict(sorted(layer_types.items())),
        "compute_layers_not_int8": not_int8[:MAX_LISTED] + ([f"... {len(not_int8) - MAX_LISTED} more"]
                                                            if len(not_int8) > MAX_LISTED else []),
    }
