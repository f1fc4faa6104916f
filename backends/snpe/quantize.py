"""INT8 for QNN HTP: the core's Q/DQ in the QNN flavour, or onnxruntime's own QNN recipe (the anchor).

Both return (Q/DQ ONNX model, report); the report lands in the manifest's `quantization`.
The core path asks for GPTQ weight rounding by default: HTP runs the same u8 x s8 per-channel grid
as the CPU kernels OpenVINO's measurements chose it on (backends/openvino/core_int8.py), and the
rounding changes only which integer each weight lands on, so the kernels and speed are unchanged.
"""
from __future__ import annotations

import time

from edgec.core.backend import LoweringContext, QuantFlavour


def core(ctx: LoweringContext, flavour: QuantFlavour, gptq: bool):
    from edgec.core import progress
    from edgec.core.quantization import quantize as core_quantize

    ctx.progress(f"quantizing to int8 (qnn flavour: {flavour.activation_dtype} activations, "
                 f"{flavour.weight_dtype} weights, {'GPTQ' if gptq else 'nearest'} rounding)")
    kwargs = {}
    if ctx.calib_method and ctx.calib_method != "auto":
        kwargs["method"] = ctx.calib_method
    q = core_quantize(ctx.source_model, "int8", flavour=flavour, calibration=ctx.calibration,
                      samples=ctx.calib_samples, progress=progress.enabled(), weight_rounding=gptq,
                      max_drop=ctx.max_drop, min_agreement=ctx.min_agreement, validation=ctx.validation,
                      keep_fp32=ctx.keep_fp32, float_tensors=ctx.float_tensors, **kwargs)
    q.report["requested_by"] = f"qnn backend: {'gptq' if gptq else 'nearest'} weight rounding"
    return q.model, q.report


class _Reader:
    """onnxruntime's CalibrationDataReader over an edgec Dataset (streams; no copy of the whole set)."""

    def __init__(self, data):
        self._it = iter(data)

    def get_next(self):
        s = next(self._it, None)
        return None if s is None else s.feeds


def ort_recipe(model, calibration, activations: str = "u8", weights: str = "u8", samples: int | None = None):
    """onnxruntime.quantization.execution_providers.qnn as its documentation uses it: qnn_preprocess_model,
    get_qnn_qdq_config (MinMax calibration, its QNN compatibility overrides), quantize. `weights="u8"`
    is the recipe's default (per-tensor); "s8" asks it for symmetric per-channel weights like ours."""
    import tempfile
    from pathlib import Path

    import onnx
    from onnxruntime.quantization import QuantType, quantize
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config, qnn_preprocess_model

    from edgec.core.quantization.placement import placement

    t0 = time.perf_counter()
    act = QuantType.QUInt16 if activations == "u16" else QuantType.QUInt8
    w = QuantType.QInt8 if weights == "s8" else QuantType.QUInt8
    data = calibration.take(samples)
    with tempfile.TemporaryDirectory(prefix="edgec-qnn-recipe-") as tmp:
        src, pre, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "qdq.onnx"
        onnx.save(model, str(src))
        changed = qnn_preprocess_model(str(src), str(pre))
        start = str(pre if changed else src)
        cfg = get_qnn_qdq_config(start, _Reader(data), activation_type=act, weight_type=w,
                                 per_channel=weights == "s8")
        quantize(start, str(dst), cfg)
        q = onnx.load(str(dst))
    report = {"precision": "int8", "calibrator": "onnxruntime.quantization.execution_providers.qnn",
              "calibration": {"method": "minmax", "samples": len(data), "data_sha256": data.fingerprint()},
              "recipe": {"activation_type": act.name, "weight_type": w.name, "per_channel": weights == "s8",
                         "qnn_preprocess_changed_model": bool(changed)},
              "kept_fp32": [], "placement": placement(model, q), "seconds": round(time.perf_counter() - t0, 2)}
    return q, report
