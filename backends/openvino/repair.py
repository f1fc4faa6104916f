"""`--max-drop` with calibrator=core: keep layers in FP32 by accuracy gained per microsecond lost.

The core's earlier max_drop returned layers to FP32 in order of sensitivity alone, scored on
onnxruntime (the core's repair now returns activation tensors to float, picking the order by
onnxruntime latency). On OpenVINO sensitivity order is expensive: the most sensitive layers of
MobileNet-style networks are the stem and the first blocks, which run at 112x112 where an FP32
kernel costs most (EfficientNet-Lite0: 3 kept layers = +5 % latency). Here:

* cost of a layer = its FP32 kernel time minus its I8 kernel time, read from OpenVINO's own per-node
  profiling (PERF_COUNT) of the FP32 and the all-INT8 model on this CPU, 1 thread;
* gain of a layer = the core's sensitivity (output NMSE when only that layer is quantized);
* candidates are tried in order of gain / cost and scored on OpenVINO itself (the runtime that will
  execute the artifact), accepted only when the measured drop falls, until the budget is met.

The base model and every candidate come from the core's building blocks (calibration histograms,
ranges, GPTQ rounding table, bias deltas, Q/DQ insertion), so they match `quantize(keep_fp32=...)`;
the sequence mirrors core/quantization/int8.py and has to follow it if that changes.

EfficientNet-Lite0, `--max-drop 0.5` on the unlabelled calib500: kept the first depthwise conv and
block 8's depthwise conv (in-sample agreement 98.8 -> 99.6 %), eval500 99.2 % at 1.01-1.05x NNCF
latency in three benchmark runs. Acceptance counts flipped images on the validation set, so it can
fit near-tied images of that set: with budget 0.4 it reached 99.8 % in-sample and 99.0 % on eval500.
"""
from __future__ import annotations

import time

import numpy as np
import onnx

from edgec.core.backend import LoweringContext, QuantFlavour

PROFILE_RUNS = 30
MAX_FRACTION = 0.3  # past 30 % of layers in FP32 an INT8 artifact is the wrong choice
COST_FLOOR = 0.002  # of the INT8 model's time (and >= 1 us): a layer never counts as free (noise, fusions)


def layer_times(ov_model, feeds: dict, threads: int = 1, runs: int = PROFILE_RUNS) -> dict[str, float]:
    """Median microseconds per runtime node (OpenVINO per-node profiling), by node name."""
    import openvino as ov

    compiled = ov.Core().compile_model(ov_model, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERF_COUNT": True,
                                                        "PERFORMANCE_HINT": "LATENCY",
                                                        "INFERENCE_PRECISION_HINT": "f32"})
    req = compiled.create_infer_request()
    inputs = [feeds[p.get_any_name()] for p in compiled.inputs]
    for _ in range(5):
        req.infer(inputs)
    samples: dict[str, list[float]] = {}
    for _ in range(runs):
        req.infer(inputs)
        for p in req.get_profiling_info():
            samples.setdefault(p.node_name, []).append(p.real_time.total_seconds() * 1e6)
    return {k: float(np.median(v)) for k, v in samples.items()}


def _per_layer(times: dict[str, float], layers: dict[str, list[str]]) -> dict[str, float | None]:
    """Runtime nodes keep the ONNX node's name as prefix ("conv/WithoutBiases"), or, for some ops
    (Gemm -> FullyConnected), take its output tensor's name; `layers` maps node -> those aliases."""
    out = {}
    for n, aliases in layers.items():
        hits = [t for k, t in times.items() if any(k == a or k.startswith(a + "/") for a in aliases)]
        out[n] = sum(hits) if hits else None
    return out


def latency_costs(fp32: onnx.ModelProto, q: onnx.ModelProto, feeds: dict, layers: dict[str, list[str]],
                  threads: int = 1) -> dict:
    """Estimated microseconds that keeping each layer in FP32 adds to the all-INT8 model; `layers`
    maps ONNX node name -> names its runtime nodes may carry (the node's and its output's)."""
    from edgec.backends.openvino import convert

    t32 = layer_times(convert.onnx_to_ov(fp32), feeds, threads)
    t8 = layer_times(convert.onnx_to_ov(q), feeds, threads)
    total8, total32 = sum(t8.values()), sum(t32.values())
    f32, i8 = _per_layer(t32, layers), _per_layer(t8, layers)
    floor = max(COST_FLOOR * total8, 1.0)
    costs = {}
    for n in layers:
        a = f32[n]
        if a is None:  # not profiled under its own name: scale by the whole-model speed-up
            costs[n] = floor
            continue
        b = i8[n] if i8[n] is not None else a * total8 / max(total32, 1e-9)
        costs[n] = max(a - b, floor)
    return {"us": costs, "int8_total_us": total8, "fp32_total_us": total32}


def latency_ratio(base: onnx.ModelProto, model: onnx.ModelProto, feeds: dict, runs: int = 100) -> float:
    """Median per-round latency of `model` / `base` on OpenVINO CPU, 1 thread, interleaved. The
    profiling estimate above prices each layer alone; this also sees what a kept layer does to its
    neighbours (its producer now writes FP32 instead of u8), so the report carries both."""
    import openvino as ov

    from edgec.backends.openvino import convert

    props = {"INFERENCE_NUM_THREADS": 1, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    reqs = [ov.Core().compile_model(convert.onnx_to_ov(m), "CPU", props).create_infer_request() for m in (base, model)]
    inputs = [feeds[p.get_any_name()] for p in reqs[0].model_inputs]
    times: list[list[float]] = [[], []]
    for i in range(runs + 5):
        for k in ((0, 1) if i % 2 else (1, 0)):
            t0 = time.perf_counter()
            reqs[k].infer(inputs)
            if i >= 5:
                times[k].append(time.perf_counter() - t0)
    return float(np.median(np.array(times[1]) / np.array(times[0])))


class OVScorer:
    """Drop vs FP32 of a Q/DQ model run by OpenVINO CPU on the evaluator's samples (its FP32 reference
    and labels come from onnxruntime, as in the core's Evaluator)."""

    def __init__(self, evaluator, threads: int | None = None):
        self.ev, self.threads = evaluator, threads

    def outputs(self, model: onnx.ModelProto) -> np.ndarray:
        import openvino as ov

        from edgec.backends.openvino import convert

        props = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if self.threads:
            props["INFERENCE_NUM_THREADS"] = self.threads
        compiled = ov.Core().compile_model(convert.onnx_to_ov(model), "CPU", props)
        req = compiled.create_infer_request()
        names = [p.get_any_name() for p in compiled.inputs]
        outs = []
        for f in self.ev.feeds:
            o = req.infer([f[n] for n in names])[compiled.outputs[0]]
            outs.append(np.array(o).reshape(np.shape(o)[0], -1))
        return np.concatenate(outs)

    def drop(self, model: onnx.ModelProto) -> tuple[float, float, float]:
        """(drop in metric points, agreement in % or cosine x 100, output NMSE vs FP32). The NMSE goes into
        the report: on a few hundred images agreement moves by whole near-tied images, NMSE does not."""
        out = self.outputs(model)
        ref = self.ev.ref
        nmse = float(np.mean((out - ref) ** 2) / (float(np.mean(ref ** 2)) or 1.0))
        if self.ev.metric == "cosine":
            from edgec.core.quantization.repair import _cosine

            agree = 100.0 * float(np.mean(_cosine(out, ref)))
        else:
            agree = 100.0 * float((out.argmax(1) == ref.argmax(1)).mean())
        return self.ev.ref_score - self.ev.score(out), agree, nmse


def rank(sens: list[dict], costs: dict[str, float]) -> list[dict]:
    """Sensitivity rows, best accuracy gain per microsecond first."""
    rows = [dict(r, cost_us=round(costs.get(r["node"], 0.0), 1),
                 gain_per_us=r["nmse"] / costs[r["node"]] if costs.get(r["node"]) else 0.0) for r in sens]
    return sorted(rows, key=lambda r: -r["gain_per_us"])


def max_drop(ctx: LoweringContext, flavour: QuantFlavour, weight_rounding: str, budget: float):
    """The quantized ONNX model and the core-layout report for `--max-drop budget` on OpenVINO."""
    from edgec.core import progress
    from edgec.core.errors import InputError
    from edgec.core.quantization.calibration import bounded_outputs, collect
    from edgec.core.quantization.graph import ensure_node_names, weight_param_count, weighted_nodes
    from edgec.core.quantization.int8 import BIAS_CORRECTION_SAMPLES, ROUNDING_SAMPLES
    from edgec.core.quantization.pipeline import DEFAULT_METHOD
    from edgec.core.quantization.placement import placement
    from edgec.core.quantization.qdq import check_flavour, constrain_ranges, insert_qdq, levels
    from edgec.core.quantization.repair import Evaluator, apply_bias, bias_deltas, sensitivity
    from edgec.core.quantization.rounding import apply_rounding, optimise_rounding

    check_flavour(flavour)
    if ctx.calibration is None:
        raise InputError("int8 needs calibration data; pass --calib DATA (100-500 representative inputs)")
    if ctx.validation is None:
        raise InputError("max_drop needs validation data to measure the drop; pass --val DATA "
                         "(labelled data gives top-1, unlabelled gives agreement with FP32)")
    t0 = time.perf_counter()
    show = progress.enabled()
    model = onnx.ModelProto()
    model.CopyFrom(ctx.source_model)
    model = ensure_node_names(model)
    method = ctx.calib_method or DEFAULT_METHOD
    ctx.progress("calibrating (histograms are cached per model and data)")
    data = ctx.calibration.take(ctx.calib_samples)
    cal = collect(model, data, progress=show)
    ranges = constrain_ranges(model, cal.ranges(method, 99.99, levels(flavour.activation_dtype),
                                                  bounded_outputs(model)), flavour)
    report: dict = {"precision": "int8", "kept_fp32": [],
                    "calibration": {"data_sha256": cal.data_sha256, "method": method, "samples": cal.samples,
                                    "cache": cal.cache},
                    "flavour": {k: getattr(flavour, k) for k in flavour.__dataclass_fields__},
                    "requested_by": f"openvino backend: weight_rounding={weight_rounding}, latency-aware max_drop"}
    rounding: dict = {}
    if weight_rounding == "gptq":
        n_r = min(ROUNDING_SAMPLES, len(data))
        rounding = optimise_rounding(model, insert_qdq(model, ranges, flavour), data.take(n_r))
        report["weight_rounding"] = {"method": "gptq", "layers": len(rounding), "samples": n_r}
    n_bc = min(BIAS_CORRECTION_SAMPLES, len(data))
    deltas = bias_deltas(model, ranges, flavour, [], data.take(n_bc), progress=show, rounding=rounding)
    report["bias_correction"] = {"layers": len(deltas), "samples": n_bc}

    def build(keep: list[str]) -> onnx.ModelProto:
        return apply_rounding(insert_qdq(apply_bias(model, deltas, skip=keep), ranges, flavour, exclude=keep),
                              rounding)

    q = build([])
    evaluator = Evaluator(model, ctx.validation, progress=show)
    scorer = OVScorer(evaluator, ctx.threads)
    ctx.progress("measuring the INT8 model on OpenVINO")
    initial, agree0, nmse0 = scorer.drop(q)
    steps = [{"layer": None, "accepted": True, "drop": round(initial, 3), "agreement": round(agree0, 2),
              "nmse": round(nmse0, 6)}]
    kept: list[str] = []
    best, drop = q, initial
    ranked: list[dict] = []
    costs: dict = {"us": {}, "int8_total_us": 0.0}
    if initial > budget:
        layers = {n.name: [n.name, n.output[0]] for n in weighted_nodes(model)}
        ctx.progress("profiling FP32 and INT8 kernels per layer (OpenVINO PERF_COUNT, 1 thread)")
        costs = latency_costs(model, q, evaluator.feeds[0], layers)
        sens = sensitivity(model, ranges, flavour, deltas, [], evaluator, progress=show, rounding=rounding)
        ranked = rank(sens, costs["us"])
        for row in ranked[:max(1, int(MAX_FRACTION * len(ranked)))]:
            cand = build(kept + [row["node"]])
            cand_drop, agree, nmse = scorer.drop(cand)
            accepted = cand_drop < drop  # an FP32 layer that does not lower the drop costs speed for nothing
            steps.append({"layer": row["node"], "accepted": accepted, "drop": round(cand_drop, 3),
                          "agreement": round(agree, 2), "nmse": round(nmse, 6), "cost_us": row["cost_us"]})
            if accepted:
                kept.append(row["node"])
                best, drop = cand, cand_drop
            if drop <= budget:
                break
    total = weight_param_count(model, [n.name for n in weighted_nodes(model)]) or 1
    t8 = costs["int8_total_us"] or 1.0
    report["max_drop"] = {
        "budget": budget, "metric": evaluator.metric, "scored_on": "openvino CPU",
        "ranking": "sensitivity NMSE / (FP32 - I8 kernel time)", "validation_samples": len(evaluator.feeds),
        "fp32_score": round(evaluator.ref_score, 3), "initial_drop": round(initial, 3), "final_drop": round(drop, 3),
        "met": bool(drop <= budget), "kept_fp32": kept,
        "kept_weight_share": round(weight_param_count(model, kept) / total, 4),
        "estimated_latency_vs_all_int8": round(1 + sum(costs["us"].get(k, 0.0) for k in kept) / t8, 3),
        "steps": steps}
    if kept:
        report["max_drop"]["latency_vs_all_int8"] = round(latency_ratio(q, best, evaluator.feeds[0]), 3)
    report["sensitivity"] = ranked
    report["kept_fp32"] = kept
    report["placement"] = placement(model, best)
    report["seconds"] = round(time.perf_counter() - t0, 2)
    return best, report
