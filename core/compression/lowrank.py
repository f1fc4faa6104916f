"""Low-rank factorization of Gemm and 1x1 Conv layers by data-aware SVD (AIMET's SVD family, first member).

A layer y = W x (W: [Cout, K]) becomes y = B (A x) with A: [r, K], B: [Cout, r]. Data-aware: the
rank-r W' minimising the output error E||(W - W') x||^2 = tr((W - W') H (W - W')^T) on calibration
inputs (H = E[x x^T], layers.moments) is the truncated SVD of W L, with L L^T = H, mapped back by
L^-1. The rank of each layer is the smallest that keeps `energy` of that output energy (the
singular values squared), and a layer is factorized only when the two thin layers need at most
MAX_MAC_FRACTION of its MACs; a thin pair is never faster than one wide layer of equal MACs on
these CPU kernels. Without calibration data H = I (plain SVD).

Not here (yet): k x k Conv by spatial / channel SVD, and a per-layer latency measurement on the
target instead of the MAC rule.
"""
from __future__ import annotations

import fnmatch
import time
from typing import Callable, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgec.core.errors import InputError
from edgec.core.quantization.graph import ensure_node_names

MAX_MAC_FRACTION = 0.6
SAMPLES = 32


def _candidates(model: onnx.ModelProto, patterns):
    from .layers import find_layers

    out = []
    for ly in find_layers(model):
        n = ly.node
        ok = (n.op_type == "Gemm" and not any(a.name == "transA" and a.i for a in n.attribute)) or \
             (n.op_type == "Conv" and len(ly.shape) == 4 and ly.shape[2:] == (1, 1) and ly.groups == 1)
        if not ok:
            continue
        if patterns and not any(fnmatch.fnmatchcase(k, p) for p in patterns for k in (ly.name, ly.weight, n.op_type)):
            continue
        out.append(ly)
    return out


def rank_for(s: np.ndarray, energy: float) -> int:
    e = np.cumsum(s ** 2) / max(float(np.sum(s ** 2)), 1e-30)
    return int(np.searchsorted(e, energy) + 1)


def factorize(model: onnx.ModelProto, energy: float, *, calibration=None, patterns: Sequence[str] | None = None,
              samples: int = SAMPLES, progress: Callable[[str], None] | None = None):
    """(model, report); see the module docstring."""
    if not 0 < energy < 1:
        raise InputError(f"--low-rank {energy}: the retained energy is a fraction in (0, 1), e.g. 0.95")
    say = progress or (lambda m: None)
    t0 = time.perf_counter()
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m = ensure_node_names(m)
    layers = _candidates(m, patterns)
    hs: dict = {}
    counts: dict = {}
    if calibration is not None and layers:
        from .layers import moments

        say(f"low-rank: input statistics of {len(layers)} layers on {samples} samples")
        hs, _ = moments(m, layers, calibration.take(samples), counts)
    inits = {t.name: t for t in m.graph.initializer}
    rows = []
    for ly in layers:
        w = ly.w  # [Cout, K]
        cout, k = w.shape
        h = hs.get(ly.name)
        h = h[0] if h is not None else np.eye(k)
        # Shrink towards the identity by k pseudo-rows: a Gemm after global pooling sees one row per
        # image, and with 32 rows for 1280 inputs the bare data-aware SVD kept rank 32 of the classifier
        # (the calibration images' span) and took EfficientNet-Lite0 to 0.2 % top-1.
        n_rows = counts.get(ly.name, 0)
        shrink = k / n_rows if h is not None and n_rows else 0.0
        h = h / max(float(np.trace(h)) / k, 1e-30) + (shrink + 1e-6) * np.eye(k)
        try:
            lch = np.linalg.cholesky(h)
        except np.linalg.LinAlgError:
            lch = np.linalg.cholesky(h + 1e-3 * np.eye(k))
        u, s, vt = np.linalg.svd(w @ lch, full_matrices=False)
        r = rank_for(s, energy)
        row = {"layer": ly.name, "op": ly.node.op_type, "shape": [cout, k], "rank": r,
               "energy_kept": round(float(np.sum(s[:r] ** 2) / np.sum(s ** 2)), 5)}
        if r * (cout + k) > MAX_MAC_FRACTION * cout * k:
            row["factorized"] = False
            rows.append(row)
            continue
        a = np.linalg.solve(lch.T, vt[:r].T).T  # V_r^T L^-1: [r, K]
        b = u[:, :r] * s[:r]                    # [Cout, r]
        _split(m, ly, a.astype(np.float32), b.astype(np.float32), inits)
        row["factorized"] = True
        rows.append(row)
    m = onnx.shape_inference.infer_shapes(m)
    onnx.checker.check_model(m)
    from edgec.core.graph_stats import model_stats

    before, after = model_stats(model), model_stats(m)
    return m, {"technique": "low_rank", "energy": energy, "data_aware": bool(hs), "layers": rows,
               "factorized": sum(r.get("factorized", False) for r in rows),
               "macs_before": before["macs"], "macs_after": after["macs"],
               "params_before": before["parameters"], "params_after": after["parameters"],
               "seconds": round(time.perf_counter() - t0, 2)}


def _split(m: onnx.ModelProto, ly, a: np.ndarray, b: np.ndarray, inits) -> None:
    """Replace ly.node by node(A) -> node(B, bias) in place, keeping the output name."""
    node = ly.node
    g = m.graph
    pos = next(i for i, n in enumerate(g.node) if n.name == node.name)
    mid = f"{node.output[0]}__lowrank"
    an, bn = f"{ly.weight}__lowrank_a", f"{ly.weight}__lowrank_b"
    bias = list(node.input[2:3])
    if node.op_type == "Conv":
        g.initializer.append(numpy_helper.from_array(a[:, :, None, None], an))
        g.initializer.append(numpy_helper.from_array(b[:, :, None, None], bn))
        attrs = {x.name: helper.get_attribute_value(x) for x in node.attribute}
        first = helper.make_node("Conv", [node.input[0], an], [mid], name=node.name + "/lowrank_a", **attrs)
        attrs2 = {k: v for k, v in attrs.items() if k in ("group",)}
        second = helper.make_node("Conv", [mid, bn] + bias, list(node.output), name=node.name, kernel_shape=[1, 1],
                                  **attrs2)
    else:
        alpha = next((x.f for x in node.attribute if x.name == "alpha"), 1.0)
        beta = next((x.f for x in node.attribute if x.name == "beta"), 1.0)
        g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(a.T), an))  # x [N, K] @ A^T
        g.initializer.append(numpy_helper.from_array(b, bn))
        first = helper.make_node("MatMul", [node.input[0], an], [mid], name=node.name + "/lowrank_a")
        second = helper.make_node("Gemm", [mid, bn] + bias, list(node.output), name=node.name, transB=1,
                                  alpha=alpha, beta=beta)
    del g.node[pos]
    g.node.insert(pos, second)
    g.node.insert(pos, first)
    w = inits.pop(ly.weight)
    g.initializer.remove(w)
