"""One setting every onnxruntime session over an edgec Q/DQ model needs: `disabled_optimizers`.

onnxruntime's graph transformer WeightBiasQuantization (a level-1 optimizer, so on at every level but
"disable") quantizes the FP32 weights of a Conv/Gemm/ConvTranspose that sits between a DequantizeLinear
and a QuantizeLinear (symmetric per-tensor int8, full range) so that its QDQ fusions can run the layer
as QLinearConv. A layer the user, the accuracy repair or `edgec debug --bisect` kept in FP32 would then
not run FP32: on this non-VNNI host those full-range weights also saturate (SqueezeNet INT8, 4 tensors
kept float: 90.00 % agreement with it, 94.33 % without, 300 images). Disabling it changes nothing for
layers the quantizer did quantize (their weights already come through a DequantizeLinear).
Unknown optimizer names are ignored by onnxruntime, so this is safe on versions without it.
"""
from __future__ import annotations

DISABLED_OPTIMIZERS = ("WeightBiasQuantization",)
# Said in the manifest (backend_info.session) for whoever runs the artifact with their own onnxruntime.
NOTE = ("create the InferenceSession with disabled_optimizers=['WeightBiasQuantization'] (Python: "
        "ort.InferenceSession(path, so, providers=..., disabled_optimizers=[...])); otherwise onnxruntime "
        "re-quantizes the FP32 weights of layers kept in FP32 between Q/DQ (symmetric per-tensor int8) and "
        "runs them int8")


def kwargs() -> dict:
    """Keyword arguments for onnxruntime.InferenceSession."""
    return {"disabled_optimizers": list(DISABLED_OPTIMIZERS)}


def manifest_entry() -> dict:
    return {"disabled_optimizers": list(DISABLED_OPTIMIZERS), "note": NOTE}
