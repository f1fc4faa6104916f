"""INT8 static quantization: calibrate -> constrain ranges -> (bias correction) -> Q/DQ -> (max_drop repair)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from edgec.core.backend import QuantFlavour
from edgec.core.errors import InputError

from . import parts_cache as pc
from .calibration import bounded_outputs, collect
from .qdq import check_flavour, constrain_ranges, full_range_weights, insert_qdq, levels
from .repair import Evaluator, apply_bias, bias_deltas, max_drop_repair
from .rounding import apply_rounding, optimise_rounding

BIAS_CORRECTION_SAMPLES = 64
ROUNDING_SAMPLES = 32  # H = E[x x^T] of a 1x1/3x3 conv input is well estimated from 32 images x HxW positions


@dataclass
class Int8Parts:
    """Everything calibration decides, from which any "these layers stay FP32" variant is built.

    Repairs (the core's, a backend's own) build many candidates from one calibration; they take this
    object instead of re-running the sequence, so a candidate with nothing kept is byte for byte
    the model quantize() returns. `report` holds the calibration, flavour, weight_rounding and
    bias_correction entries of the quantization report."""

    model: onnx.ModelProto
    flavour: QuantFlavour
    ranges: dict
    excluded: list[str]
    rounding: dict[str, np.ndarray] = field(default_factory=dict)
    deltas: dict[str, np.ndarray] = field(default_factory=dict)
    report: dict = field(default_factory=dict)

    def build(self, keep: Sequence[str] = ()) -> onnx.ModelProto:
        """The Q/DQ model with `excluded` and `keep` in FP32. Kept layers get neither Q/DQ nor their
        bias delta (the delta corrects the layer's own quantization error, which an FP32 layer has not)."""
        skip = list(self.excluded) + [k for k in keep if k not in self.excluded]
        return apply_rounding(insert_qdq(apply_bias(self.model, self.deltas, skip=skip), self.ranges, self.flavour,
                                         exclude=skip), self.rounding)


def prepare_int8(model: onnx.ModelProto, calibration, *, flavour: QuantFlavour, method: str, percentile: float,
                 samples: int | None = None, cache_dir=None, excluded: Sequence[str] = (),
                 bias_correction: bool = True, weight_rounding: bool = False, progress: bool = True) -> Int8Parts:
    """Calibrate `model` (node names set, see graph.ensure_node_names) and derive ranges, the GPTQ
    rounding table (when `weight_rounding`) and bias deltas (when `bias_correction`)."""
    check_flavour(flavour)
    if calibration is None:
        raise InputError("int8 needs calibration data; pass --calib DATA (100-500 representative inputs) "
                         "or use --precision int8-dynamic, which needs none")
    if samples is not None and samples < 1:
        raise InputError(f"--calib-samples {samples} must be at least 1")
    excluded = list(excluded)
    data = calibration.take(samples)
    cal = collect(model, data, cache_dir=cache_dir, progress=progress)
    ranges = constrain_ranges(model, cal.ranges(method, percentile, levels(flavour.activation_dtype),
                                                  bounded_outputs(model)), flavour)
    report: dict = {
        "calibration": {"data_sha256": cal.data_sha256, "method": method, "samples": cal.samples, "cache": cal.cache,
                        **({"percentile": percentile} if method == "percentile" else {})},
        "flavour": {k: getattr(flavour, k) for k in flavour.__dataclass_fields__}}
    parts = Int8Parts(model, flavour, ranges, excluded, report=report)
    if weight_rounding:
        # The grid (scales) comes from ORT's quantizer; only the integers change, so every later
        # insert_qdq of the same weights (bias correction, repair candidates) can take the table.
        n_r = min(ROUNDING_SAMPLES, len(data))
        report["weight_rounding"] = {"method": "gptq", "samples": n_r}
        parts.rounding = pc.cached("gptq", pc.parts_key("gptq", cal.model_sha256, cal.data_sha256, n_r, ranges, flavour, excluded),
                                   lambda: optimise_rounding(model, insert_qdq(model, ranges, flavour, exclude=excluded),
                                                             data.take(n_r), reduce_range=flavour.reduce_range,
                                                             full_range=set(full_range_weights(model, flavour)),
                                                             moments=pc.moments(model, cal, data.take(n_r),
                                                                                report["weight_rounding"])),
                                   report["weight_rounding"])
        report["weight_rounding"]["layers"] = len(parts.rounding)
    if bias_correction:
        n_bc = min(BIAS_CORRECTION_SAMPLES, len(data))
        report["bias_correction"] = {"samples": n_bc}
        key = pc.parts_key("bias", cal.model_sha256, cal.data_sha256, n_bc, ranges, flavour, excluded,
                           pc.table_digest(parts.rounding))
        parts.deltas = pc.cached("bias", key, lambda: bias_deltas(model, ranges, flavour, excluded, data.take(n_bc),
                                                                  progress=progress, rounding=parts.rounding),
                                 report["bias_correction"])
        report["bias_correction"]["layers"] = len(parts.deltas)
    return parts


def quantize_int8(model: onnx.ModelProto, report: dict, *, flavour: QuantFlavour, calibration, method: str,
                  percentile: float, samples: int | None, cache_dir, excluded: list[str], bias_correction: bool,
                  max_drop: float | None, validation, progress: bool,
                  weight_rounding: bool | None = None, min_agreement: float | None = None) -> onnx.ModelProto:
    repair = max_drop is not None or min_agreement is not None
    if repair and validation is None:
        what = "max_drop" if max_drop is not None else "min_agreement"
        raise InputError(f"{what} needs validation data to measure the drop; pass --val DATA "
                         "(labelled data gives top-1, unlabelled gives agreement with FP32)")
    if min_agreement is not None and not 0 < min_agreement <= 100:
        raise InputError(f"min_agreement {min_agreement} is a percentage of top-1 agreement with FP32; pass e.g. 99")
    parts = prepare_int8(model, calibration, flavour=flavour, method=method, percentile=percentile, samples=samples,
                         cache_dir=cache_dir, excluded=excluded, bias_correction=bias_correction,
                         weight_rounding=bool(weight_rounding or (weight_rounding is None and repair)),
                         progress=progress)
    report.update(parts.report)
    q = pc.cached_model(parts, parts.build)  # ORT's quantizer takes seconds per call: the same parts, the same model

    if repair:
        evaluator = Evaluator(model, validation, progress=progress)
        q, md, sens = max_drop_repair(model, q, evaluator, max_drop, progress=progress, min_agreement=min_agreement)
        report["max_drop"] = md
        report["sensitivity"] = sens
        report["kept_fp32"] = sorted(set(excluded) | set(md["kept_fp32"]))
    return q
