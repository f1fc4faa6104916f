"""Generic quantization in the core: FP16, INT8 static (Q/DQ) and INT8 dynamic-range (weight-only).

Backends consume it through the `QuantFlavour` they declare (core/backend.py). `quantize()` returns
the quantized model and a JSON-serialisable report:
  calibration  {data_sha256, method, samples, cache: hit|partial|miss|off} or None
  placement    {int8, fp16, fp32: counts, nodes: {node name: precision}}
  kept_fp32    node names the user or max_drop kept in FP32
  sensitivity  [{tensor, fp32_nodes, nmse, gain}] activation tensors by leave-one-out gain (when the repair ran)
  weight_rounding {method: gptq, layers, samples} when weights were rounded for output error
  max_drop     {budget, min_agreement, metric, initial_drop, final_drop, initial_agreement, final_agreement,
                final_estimate, order, searches, float_tensors, kept_fp32, kept_weight_share, steps, met}
                when max_drop or min_agreement is given
"""
from .pipeline import DEFAULT_METHOD, PRECISIONS, QuantResult, quantize
from .placement import format_placement

__all__ = ["quantize", "format_placement", "QuantResult", "PRECISIONS", "DEFAULT_METHOD"]
