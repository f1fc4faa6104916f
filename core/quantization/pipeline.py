"""`quantize()`: the one entry point the compile flow calls for fp16, int8 and int8-dynamic."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import onnx

from edgec.core.backend import QuantFlavour
from edgec.core.errors import InputError

from .graph import ensure_node_names, split_keep_list
from .placement import placement

PRECISIONS = ("fp16", "int8", "int8-dynamic")
# "auto" = minmax for outputs of range-limited ops (Clip/ReLU6, Sigmoid, ...), mse for everything else.
# Measured with bias correction on imagenet_eval500 (agreement with FP32): EfficientNet-Lite0 auto 99.0,
# minmax 98.8, mse 98.4, percentile-99.99 97.2 (no BC); SqueezeNet 1.1 (no Clip, so auto = mse) 95.2-95.4
# vs minmax 95.0, percentile 94.4 (differences under 1 point are a handful of images); entropy 98.4 / 95.6
# (histogram.range_entropy says why it once clipped far too much).
DEFAULT_METHOD = "auto"
METHODS = ("auto", "minmax", "percentile", "entropy", "mse")


@dataclass
class QuantResult:
    model: onnx.ModelProto
    report: dict = field(default_factory=dict)


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    return m


def quantize(model: onnx.ModelProto, precision: str, *, flavour: QuantFlavour = QuantFlavour(),
             calibration=None, method: str = DEFAULT_METHOD, percentile: float = 99.99,
             samples: int | None = None, cache_dir: Path | None = None, keep_fp32: Sequence[str] = (),
             fp32_io: bool = True, bias_correction: bool = True, max_drop: float | None = None,
             validation=None, progress: bool = True, weight_rounding: bool | None = None,
             min_agreement: float | None = None, float_tensors: Sequence[str] = ()) -> QuantResult:
    """Quantize an FP32 ONNX model; see the package docstring for the report layout.

    `max_drop` (points of the validation metric: top-1 with labels, else 100 - agreement) and
    `min_agreement` (% top-1 agreement with FP32) are accuracy demands on `validation`; either or both
    make int8 return the activation tensors that cost most to float until a conservative estimate
    meets them (repair.max_drop_repair).

    `weight_rounding` (int8 only) rounds weights to minimise each layer's output error on the
    calibration data (GPTQ, rounding.py) instead of round-to-nearest; the scales are unchanged.
    None (the default) = GPTQ: it lowers the logit error (SqueezeNet 1.1 NMSE 8.0e-4 -> 7.0e-4,
    EfficientNet-Lite0 5.0e-3 -> 3.9e-3) and, on ONNX Runtime's 7-bit weight grid of a host without
    VNNI, lifted EfficientNet-Lite0's top-1 agreement on imagenet_eval500 from 97.8 to 98.6 % (+-0.5,
    n=500; issue 17; OpenVINO's core calibrator chose it for the stem conv, backends/openvino/core_int8.py). Its cost,
    50-90 % more calibration time, is paid once per (model, data, flavour): parts_cache.py keeps the
    table. False = round-to-nearest.

    `float_tensors` (int8): activation tensors whose Q/DQ pair is removed after quantization, with the
    weighted layers that read or write them back in FP32 (float_tensors.py, the max_drop repair's unit;
    `--float-tensors`, what `edgec debug --bisect` prints)."""

    if method not in METHODS:
        raise InputError(f"unknown calibration method {method!r}; use one of {', '.join(METHODS)}")
    if precision not in PRECISIONS:
        raise InputError(f"precision {precision!r} cannot be quantized; use one of {', '.join(PRECISIONS)}")
    t0 = time.perf_counter()
    model = ensure_node_names(_copy(model))
    keep_names, keep_ops = split_keep_list(model, keep_fp32)
    excluded = sorted(keep_names | {n.name for n in model.graph.node if n.op_type in keep_ops})
    report: dict = {"precision": precision, "calibration": None, "kept_fp32": excluded}

    if precision == "fp16":
        from .fp16 import convert_fp16

        out = convert_fp16(model, keep_fp32=keep_fp32, fp32_io=fp32_io)
        report["fp32_io"] = fp32_io
    elif precision == "int8-dynamic":
        from .qdq import check_flavour, weight_only

        check_flavour(flavour)
        out = weight_only(model, flavour, exclude=excluded)
        report["mode"] = "weight-only"
    else:
        from .int8 import quantize_int8

        out = quantize_int8(model, report, flavour=flavour, calibration=calibration, method=method,
                            percentile=percentile, samples=samples, cache_dir=cache_dir, excluded=excluded,
                            bias_correction=bias_correction, max_drop=max_drop, validation=validation,
                            progress=progress, weight_rounding=True if weight_rounding is None else weight_rounding,
                            min_agreement=min_agreement)
        from .float_tensors import quantized_activations
        report["quantized_activations"] = quantized_activations(out)  # what --float-tensors accepts (edgec debug)
    if float_tensors and precision == "int8":
        from .float_tensors import float_tensors as restore_float, quantized_activations

        have = set(quantized_activations(out))
        missing = [t for t in float_tensors if t not in have]
        if missing:
            raise InputError(f"float tensor {missing[0]!r} is not a quantized activation of the int8 model "
                             f"(e.g. {', '.join(sorted(have)[:3])}); name tensors `edgec debug` lists")
        out, nodes = restore_float(out, model, list(float_tensors))
        report["float_tensors"] = list(float_tensors)
        report["kept_fp32"] = sorted(set(report["kept_fp32"]) | set(nodes))
    elif float_tensors:
        raise InputError(f"--float-tensors applies to --precision int8, not {precision}")
    report["placement"] = placement(model, out)
    report["seconds"] = round(time.perf_counter() - t0, 2)
    return QuantResult(out, report)
