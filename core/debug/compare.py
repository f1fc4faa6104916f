"""Layerwise comparison: the FP32 graph on onnxruntime vs the artifact on its own runtime, tensor by tensor.

Per compared tensor (one the backend's `intermediates` hook could expose, keyed by its ONNX name):
  total error  artifact vs FP32: cosine, NMSE = sum((a - r)^2) / sum(r^2), SQNR = -10 log10(NMSE), max |a - r|
  own error    artifact vs its segment (layers.py) run in FP32 on the artifact's own frontier values: what
               this layer adds over its inputs; the layer whose own SQNR is lowest is the one to look at.
Statistics are streamed over the samples (no tensor is kept), so a few hundred images of a large model fit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import onnx

from edgec.core import progress

from .layers import Segment, float_tensors, segment_model, segments, tensor_types

EPS = 1e-30


@dataclass
class _Acc:
    err: float = 0.0
    ref: float = 0.0
    dot: float = 0.0
    a2: float = 0.0
    max_abs: float = 0.0
    own_err: float = 0.0
    own_ref: float = 0.0
    own_max: float = 0.0
    samples: int = 0
    mismatch: str | None = None

    def add(self, a: np.ndarray, r: np.ndarray, own: np.ndarray | None) -> None:
        a = a.astype(np.float64, copy=False).ravel()
        r = r.astype(np.float64, copy=False).ravel()
        d = a - r
        self.err += float(d @ d)
        self.ref += float(r @ r)
        self.dot += float(a @ r)
        self.a2 += float(a @ a)
        self.max_abs = max(self.max_abs, float(np.abs(d).max(initial=0.0)))
        if own is not None:
            o = own.astype(np.float64, copy=False).ravel()
            e = a - o
            self.own_err += float(e @ e)
            self.own_ref += float(o @ o)
            self.own_max = max(self.own_max, float(np.abs(e).max(initial=0.0)))
        self.samples += 1


def _db(nmse: float) -> float | None:
    """SQNR in dB; None for an exact tensor (no error: infinite SQNR, which JSON cannot say)."""
    return None if nmse <= 0 else round(-10.0 * math.log10(nmse), 2)


@dataclass
class LayerReport:
    layers: list[dict]
    exposure: dict = field(default_factory=dict)
    not_compared: list[str] = field(default_factory=list)


def _session(model: onnx.ModelProto, threads: int | None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads or 1
    so.inter_op_num_threads = 1
    # No fusion: the reference must compute exactly the ONNX graph, layer by layer.
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    from edgec.core import ort_session

    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"], **ort_session.kwargs())


def reference_with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    from onnx import helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    types = tensor_types(model)
    for n in names:
        if n not in have and n not in {i.name for i in m.graph.input}:
            m.graph.output.append(helper.make_tensor_value_info(n, types.get(n, onnx.TensorProto.FLOAT), None))
    return m


def compare_layers(fp32: onnx.ModelProto, runner, data, *, threads: int | None = 1,
                   plain=None) -> LayerReport:
    """Compare `runner` (a backend's intermediates Runner, with `.exposed`) with `fp32` on `data`.

    `fp32` must be the model the artifact was compiled from (optimized, node names as the quantizer
    set them), so tensor and node names match. `plain`: the artifact's ordinary Runner; when given,
    the outputs of both are compared so the report says whether exposing tensors changed the result."""
    candidates = float_tensors(fp32)
    exposed = dict(getattr(runner, "exposed", {}) or {})
    outputs = [o.name for o in fp32.graph.output]
    compared = [t for t in candidates if t in exposed or t in outputs]
    not_compared = [t for t in candidates if t not in compared]
    segs = segments(fp32, compared)
    types = tensor_types(fp32)
    inputs = {i.name for i in fp32.graph.input}
    ref = _session(reference_with_outputs(fp32, compared), threads)
    ref_names = [o.name for o in ref.get_outputs()]
    seg_sessions = {t: _session(segment_model(fp32, s, types), threads)
                    for t, s in segs.items() if s.nodes and s.frontier}
    accs = {t: _Acc() for t in compared}
    fidelity = _Acc() if plain is not None else None
    for sample in progress.bar(data, total=len(data), desc="debug layers", unit="sample"):
        feeds = sample.feeds
        r = dict(zip(ref_names, ref.run(None, {k: v for k, v in feeds.items() if k in inputs})))
        r.update({k: v for k, v in feeds.items() if k in inputs})
        a = runner.run(feeds)
        if plain is not None:
            p = plain.run(feeds)
            for o in outputs:
                if o in a and o in p:
                    fidelity.add(np.asarray(a[o]), np.asarray(p[o]), None)
        for t in compared:
            acc = accs[t]
            if t not in a:
                acc.mismatch = acc.mismatch or "the runtime returned no value"
                continue
            av, rv = np.asarray(a[t]), np.asarray(r[t])
            if av.size != rv.size:
                acc.mismatch = f"shape {list(av.shape)} vs FP32 {list(rv.shape)}"
                continue
            own = None
            sess = seg_sessions.get(t)
            if sess is not None:
                own = _own(sess, segs[t], a, feeds, rv.shape)
            elif segs[t].op == "input":
                own = rv  # an input's only error is its own (its quantization)
            acc.add(av.reshape(rv.shape), rv, own)
    layers = [_entry(segs[t], accs[t], exposed.get(t, t)) for t in compared]
    exposure = {"runtime_names": len(exposed), "compared": len(compared), "note": getattr(runner, "note", "")}
    if fidelity is not None and fidelity.samples:
        exposure["outputs_cosine_vs_artifact"] = round(fidelity.dot / math.sqrt(max(fidelity.a2 * fidelity.ref, EPS)), 6)
        exposure["outputs_max_abs_vs_artifact"] = fidelity.max_abs
    return LayerReport(layers, exposure, not_compared)


def _own(sess, seg: Segment, a: Mapping[str, np.ndarray], feeds, shape) -> np.ndarray | None:
    ins = {}
    for f in seg.frontier:
        v = a.get(f, feeds.get(f))
        if v is None:
            return None
        ins[f] = np.asarray(v, dtype=np.float32) if np.asarray(v).dtype == np.float64 else np.asarray(v)
    try:
        return sess.run(None, ins)[0].reshape(shape)
    except Exception:  # a frontier value of another layout or shape: no own error for this tensor
        return None


def _entry(seg: Segment, acc: _Acc, runtime_name: str) -> dict:
    nmse = acc.err / max(acc.ref, EPS) if acc.samples else None
    cos = acc.dot / math.sqrt(max(acc.a2 * acc.ref, EPS)) if acc.samples else None
    own = acc.own_err / max(acc.own_ref, EPS) if acc.samples and acc.own_ref > 0 else None
    e = {"tensor": seg.tensor, "node": seg.node, "op": seg.op, "layer": seg.layer, "frontier": seg.frontier,
         "runtime_tensor": runtime_name, "samples": acc.samples,
         "cosine": None if cos is None else round(cos, 6), "nmse": nmse, "sqnr_db": None if nmse is None else _db(nmse),
         "max_abs_err": acc.max_abs if acc.samples else None,
         "own_nmse": own, "own_sqnr_db": None if own is None else _db(own),
         "own_max_abs_err": acc.own_max if own is not None else None}
    if acc.mismatch:
        e["not_compared"] = acc.mismatch
    if nmse is not None and nmse > 1.0:
        # More error than signal: the runtime's value is not this tensor at its FP32 scale (e.g. OpenVINO holds
        # a concat input before the dequantization multiply it moved past the concat). Not ranked.
        e["suspect"] = "exposed value is not the FP32 tensor's scale (NMSE > 1): the runtime may hold it before a " \
                       "dequantization step; not ranked"
    return e


def worst(layers: list[dict], n: int = 5) -> list[dict]:
    """The tensors whose own added error is largest (NMSE, so layers of any scale compare)."""
    scored = [e for e in layers if e.get("own_nmse") is not None and not e.get("suspect")]
    return sorted(scored, key=lambda e: -e["own_nmse"])[:n]


def layer_ranking(layers: list[dict]) -> list[str]:
    """Weighted layers (what --keep-fp32 keeps) ordered by the largest own error of their segments."""
    best: dict[str, float] = {}
    for e in layers:
        if e.get("layer") and e.get("own_nmse") is not None and not e.get("suspect"):
            best[e["layer"]] = max(best.get(e["layer"], 0.0), e["own_nmse"])
    return sorted(best, key=lambda k: -best[k])


def tensor_ranking(layers: list[dict]) -> list[str]:
    """Quantized tensors (the runtime reads them after a Q/DQ) ordered by the own error of their
    segments: what --float-tensors returns to float, taking that segment's rounding and int8 weights
    with it (float_tensors.py), i.e. the error this list ranks by."""
    scored = [e for e in layers if e.get("own_nmse") and not e.get("suspect")
              and "quantizelinear" in str(e.get("runtime_tensor")).lower()]
    return [e["tensor"] for e in sorted(scored, key=lambda e: -e["own_nmse"])]
