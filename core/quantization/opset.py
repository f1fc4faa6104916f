"""INT8 for models older than opset 13 (issue #12: every opset-11/12 model failed with "Unrecognized
attribute: axis for operator DequantizeLinear").

Per-channel Q/DQ needs DequantizeLinear's `axis`, which exists from opset 13. So an older model is first
converted to opset 13 with onnx's version converter, and the conversion is kept only when onnx.checker
accepts it and onnxruntime gives the same outputs on seeded random inputs. Where the model cannot be
converted, it stays at its opset and is quantized per-tensor (one scale per weight tensor: coarser, but
what opset 10-12 Q/DQ can say). The report says which happened and why.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx

PER_CHANNEL_OPSET = 13


def model_opset(model: onnx.ModelProto) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def prepare(model: onnx.ModelProto, flavour) -> tuple[onnx.ModelProto, object, dict | None]:
    """(model, flavour, report) ready for Q/DQ insertion; report None when nothing had to change."""
    opset = model_opset(model)
    if opset >= PER_CHANNEL_OPSET or not flavour.per_channel:
        if opset and opset < 10:
            return model, flavour, None  # ORT's quantizer lifts opset < 10 to 11 itself (Q/DQ exist from 10)
        return model, flavour, None
    why = ""
    try:
        from onnx import version_converter

        up = version_converter.convert_version(model, PER_CHANNEL_OPSET)
        onnx.checker.check_model(up)
        why = _same_outputs(model, up)
        if not why:
            return up, flavour, {"opset": {"from": opset, "to": PER_CHANNEL_OPSET, "per_channel": True,
                                           "note": f"converted to opset {PER_CHANNEL_OPSET} for per-channel Q/DQ "
                                                   "(checked: same outputs in onnxruntime)"}}
    except Exception as e:  # noqa: BLE001 - the converter has no adapter for some op/version pairs
        why = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:160]}"
    return model, replace(flavour, per_channel=False), {
        "opset": {"from": opset, "to": opset, "per_channel": False,
                  "note": f"kept at opset {opset} and quantized per-tensor (per-channel Q/DQ needs opset "
                          f"{PER_CHANNEL_OPSET}; converting failed: {why})"}}


def _same_outputs(a: onnx.ModelProto, b: onnx.ModelProto, samples: int = 2) -> str:
    """'' when both models agree on seeded random inputs in onnxruntime, else why not."""
    import onnxruntime as ort

    from edgec.core.model_io import input_specs, random_feeds

    so = ort.SessionOptions()
    so.log_severity_level = 4
    so.intra_op_num_threads = 1
    sa = ort.InferenceSession(a.SerializeToString(), so, providers=["CPUExecutionProvider"])
    sb = ort.InferenceSession(b.SerializeToString(), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for _ in range(samples):
        feeds = random_feeds(input_specs(a), rng)
        for x, y in zip(sa.run(None, feeds), sb.run(None, feeds)):
            x, y = np.asarray(x), np.asarray(y)
            if x.shape != y.shape or (x.dtype.kind == "f" and not np.allclose(x, y, rtol=1e-4, atol=1e-5,
                                                                              equal_nan=True)):
                return "the converted model's outputs differ"
            if x.dtype.kind != "f" and not np.array_equal(x, y):
                return "the converted model's outputs differ"
    return ""
