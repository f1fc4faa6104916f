"""INT8 static quantization: calibrate -> constrain ranges -> (bias correction) -> Q/DQ -> (max_drop repair)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from edgec.core.backend import QuantFlavour
from edgec.core.errors import InputError

from . import parts_cache as pc
from .calibration import bounded_outputs, collect, float_activations
from .qdq import check_flavour, constrain_ranges, full_range_weights, insert_qdq, levels
from .graph import weighted_nodes
from .layer_stats import LayerStats, analytic_deltas, input_qdq
from .repair import BIAS_OPS, Evaluator, apply_bias, bias_deltas, max_drop_repair
from .rounding import _layers, apply_rounding, optimise_rounding

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
    key_ranges: dict | None = None  # `ranges` as the quantizer uses them (prepare_int8): for cache keys

    def build(self, keep: Sequence[str] = ()) -> onnx.ModelProto:
        """The Q/DQ model with `excluded` and `keep` in FP32. Kept layers get neither Q/DQ nor their
        bias delta (the delta corrects the layer's own quantization error, which an FP32 layer has not)."""
        skip = list(self.excluded) + [k for k in keep if k not in self.excluded]
        return apply_rounding(insert_qdq(apply_bias(self.model, self.deltas, skip=skip), self.ranges, self.flavour,
                                         exclude=skip), self.rounding)


def prepare_int8(model: onnx.ModelProto, calibration, *, flavour: QuantFlavour, method: str, percentile: float,
                 samples: int | None = None, cache_dir=None, excluded: Sequence[str] = (),
                 bias_correction: bool = True, weight_rounding: bool = False, progress: bool = True,
                 all_tensors: bool = True) -> Int8Parts:
    """Calibrate `model` (node names set, see graph.ensure_node_names) and derive ranges, the GPTQ
    rounding table (when `weight_rounding`) and bias deltas (when `bias_correction`).

    `all_tensors=False` skips the histograms ONNX Runtime's quantizer never reads for this flavour and
    exclusion list (folded_inputs); a repair that builds candidates with more layers kept FP32 needs
    them all (the default)."""
    check_flavour(flavour)
    if calibration is None:
        raise InputError("int8 needs calibration data; pass --calib DATA (100-500 representative inputs) "
                         "or use --precision int8-dynamic, which needs none")
    if samples is not None and samples < 1:
        raise InputError(f"--calib-samples {samples} must be at least 1")
    excluded = list(excluded)
    data = calibration.take(samples)
    folded = folded_inputs(model, flavour, excluded)
    cal = collect(model, data, cache_dir=cache_dir, progress=progress,
                  tensors=None if all_tensors or not folded else [t for t in float_activations(model) if t not in folded])
    found = cal.ranges(method, percentile, levels(flavour.activation_dtype), bounded_outputs(model))
    if not all_tensors:
        found.update({t: found[o] for t, o in folded.items() if o in found})
    ranges = constrain_ranges(model, found, flavour)
    # The ranges ONNX Runtime's quantizer actually uses (folded inputs take their activation's): what
    # GPTQ tables, bias deltas and the Q/DQ model depend on, so what their cache keys hold, the same
    # with or without `all_tensors`.
    key_ranges = {**ranges, **{t: ranges[o] for t, o in folded.items() if o in ranges and t in ranges}}
    report: dict = {
        "calibration": {"data_sha256": cal.data_sha256, "method": method, "samples": cal.samples, "cache": cal.cache,
                        **({"percentile": percentile} if method == "percentile" else {})},
        "flavour": {k: getattr(flavour, k) for k in flavour.__dataclass_fields__}}
    parts = Int8Parts(model, flavour, ranges, excluded, report=report, key_ranges=key_ranges)
    grid: dict = {}

    def qdq_model():  # ORT's Q/DQ model of the FP32 weights: GPTQ's grid and every layer's input Q/DQ
        if "qm" not in grid:
            grid["qm"] = insert_qdq(model, ranges, flavour, exclude=excluded)
        return grid["qm"]

    n_r = min(ROUNDING_SAMPLES, len(data)) if weight_rounding else 0
    n_bc = min(BIAS_CORRECTION_SAMPLES, len(data)) if bias_correction else 0
    # One FP32 pass over the first max(n_r, n_bc) samples serves both GPTQ's H and bias correction
    # (layer_stats.py); it runs only if a cache below misses.
    stats = LayerStats(model, data, _layers(model), h_samples=n_r, mean_samples=n_bc,
                       qparams=lambda: input_qdq(qdq_model()), progress=progress)
    if weight_rounding:
        # The grid (scales) comes from ORT's quantizer; only the integers change, so every later
        # insert_qdq of the same weights (bias correction, repair candidates) can take the table.
        report["weight_rounding"] = {"method": "gptq", "samples": n_r}
        # The exact table first (a re-run needs no Q/DQ model for it); else per layer: a layer's integers
        # depend on its weights, H and grid only (optimise_rounding), so a compile with other layers kept
        # in float or another --calib-method rounds only what changed ("partial").
        per_layer: dict = {}
        parts.rounding = pc.cached(
            "gptq", pc.parts_key("gptq", cal.model_sha256, cal.data_sha256, n_r, key_ranges, flavour, excluded),
            lambda: pc.gptq_table(pc.parts_key("gptq-layers", cal.model_sha256, cal.data_sha256, n_r, {}, flavour, ()),
                                  lambda known, grids: optimise_rounding(
                                      model, qdq_model(), data.take(n_r), reduce_range=flavour.reduce_range,
                                      full_range=set(full_range_weights(model, flavour)),
                                      moments=pc.moments(model, cal, data.take(n_r), report["weight_rounding"],
                                                         compute=stats.moments),
                                      known=known, grids=grids),
                                  per_layer),
            report["weight_rounding"])
        if "cache" in per_layer:
            report["weight_rounding"]["cache"] = per_layer["cache"]
        report["weight_rounding"]["layers"] = len(parts.rounding)
    if bias_correction:
        report["bias_correction"] = {"samples": n_bc}
        key = pc.parts_key("bias", cal.model_sha256, cal.data_sha256, n_bc, key_ranges, flavour, excluded,
                           pc.table_digest(parts.rounding))
        parts.deltas = pc.cached("bias", key, lambda: _bias(model, ranges, flavour, excluded, data.take(n_bc), parts.rounding,
                                                            stats, qdq_model, progress),
                                 report["bias_correction"])
        report["bias_correction"]["layers"] = len(parts.deltas)
    return parts


def folded_inputs(model: onnx.ModelProto, flavour: QuantFlavour, excluded) -> dict[str, str]:
    """{Clip/Relu input: its output} for the activations whose input range ONNX Runtime's quantizer
    replaces by the output's (base_quantizer.adjust_tensor_ranges: a quantized Clip or Relu that is its
    input's only reader), so calibrating the input is wasted: a third of EfficientNet-Lite0's
    activations, the widest ones (each expand and depthwise conv output), ~40 % of calibration.
    Only the "weighted" placement, whose quantized op types are ours (qdq.WEIGHTED_PLACEMENT)."""
    if flavour.placement != "weighted":
        return {}
    from .graph import input_readers
    from .qdq import WEIGHTED_PLACEMENT

    readers = input_readers(model.graph.node)
    skip = set(excluded)
    out = {}
    for node in model.graph.node:
        if (node.op_type in ("Clip", "Relu") and node.op_type in WEIGHTED_PLACEMENT and node.name not in skip
                and node.input and node.output and len(readers.get(node.input[0], ())) == 1):
            out[node.input[0]] = node.output[0]
    return out


def _bias(model, ranges, flavour, excluded, data, rounding, stats: LayerStats, qdq_model, progress) -> dict:
    """Bias deltas from the layer-input column means (layer_stats.analytic_deltas); the layers that
    cannot be expressed so take repair.bias_deltas' twin pass."""
    targets = [n.name for n in weighted_nodes(model) if n.op_type in BIAS_OPS and n.name not in set(excluded)]
    if not targets:
        return {}
    deltas, left = analytic_deltas(qdq_model(), stats.layers, stats.means(), rounding, targets)
    if left:
        deltas.update(bias_deltas(model, ranges, flavour, excluded, data, progress=progress, rounding=rounding,
                                  only=set(left)))
    return deltas


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
                         progress=progress, all_tensors=repair)
    report.update(parts.report)
    q = pc.cached_model(parts, parts.build)  # ORT's quantizer takes seconds per call: the same parts, the same model

    if repair:
        evaluator = Evaluator(model, validation, progress=progress)
        q, md, sens = max_drop_repair(model, q, evaluator, max_drop, progress=progress, min_agreement=min_agreement)
        report["max_drop"] = md
        report["sensitivity"] = sens
        report["kept_fp32"] = sorted(set(excluded) | set(md["kept_fp32"]))
    return q
