"""Entropy-constrained quantization (ECQ): weights on a coarse uniform sub-grid of the INT8 grid,
each weight's level chosen to minimise   bits(level) + kappa * (its output error),   column by column
with GPTQ's error feedback.

Why not k-means levels: the size that matters is the entropy-coded one, and for the bell-shaped
weight distributions of conv nets a uniform quantizer followed by an entropy coder sits within
~0.25 bit of the rate-distortion bound, where an N-level Lloyd (k-means) codebook spends its levels
evenly in probability and codes worse at the same error (Gish & Pierce 1968; entropy-constrained
scalar quantization, Chou, Lookabaugh & Gray 1989). The rate term gives the zero level a dead
zone, so pruning comes out of the same decision: no separate sparsity to pick, and the zeros are
where they cost least output error per bit saved.

One knob for the whole model, lambda (bits per unit of relative output error): every layer solves
min R_l + D_l / lambda with D_l = tr(dW H dW^T) / tr(W H W^T), so all layers end at the same slope
dR/dD -- the Lagrangian bit allocation (Shoham & Gersho 1988), which gives each layer the sparsity and
level spacing its sensitivity allows (no per-layer ladder to search). A layer's step follows from
lambda by high-rate theory, D = step^2 / 12 per weight: step = c * sqrt(12 lambda E / (2 ln2 a)),
where a is the mean error weight of one grid unit. `c` (STEP_SCALE) was fitted on EfficientNet-Lite0's
layers at ~3 bits/weight (the low-rate optimum is coarser than the high-rate formula).

Levels are integers on each channel's INT8 grid (scale_c = max|w_c| / qmax, the quantizer's own),
with +-qmax kept on each channel's max-|w| weight, as cluster.py does: the quantizer finds the same
scales and lands on the same integers, so INT8 keeps the entropy-coded size.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from .layers import QMAX, Layer, grid_scale
from .sparsegpt import _upper_inverse_factor

STEP_SCALE = 1.0
GAIN_SAMPLES = 32  # images for the sensitivity pass (one forward pass per layer)
GAIN_PROBE = 0.01  # relative output error injected into a layer to measure its gain
MIN_GAIN = 1e-3
STEP_CANDIDATES = (0.35, 0.5, 0.7, 1.0, 1.4)
PASSES = 2  # bits(level) from the previous pass's histogram; the second pass settles it
BLOCK = 128


def shrink(h: np.ndarray, rows: int | None) -> np.ndarray:
    """H + a diag(H), a = min(1, K / rows): a layer whose H sums fewer input rows than it has inputs
    (a classifier sees one row per image: 32-200 rows for 1280 inputs) gets a rank-deficient H, and
    GPTQ / SparseGPT then fit the weights to those few images. EfficientNet-Lite0's classifier at
    lambda 3e-9: logit NMSE 0.13 with the raw H, 0.017 with the shrunk one (300 held-out images)."""
    if not rows:
        return h
    a = min(1.0, h.shape[-1] / rows)
    return h + a * np.stack([np.diag(np.diag(x)) for x in h])


def sensitivities(model, layers, hs: dict, data) -> dict[str, float]:
    """Each layer's gain g = (logit NMSE) / (its relative output error), measured by adding Gaussian
    noise with relative error GAIN_PROBE to that layer alone. Equal relative errors cost very unequal
    accuracy: on EfficientNet-Lite0 g runs from 0.09 (a mid-network expand conv) to 13 (a project
    conv at a stage boundary, no residual around it)."""
    from edgec.core.quantization.calibration import session

    from .layers import write_back

    feeds = [s.feeds for s in data]

    def logits(m):
        sess = session(m)
        names = [i.name for i in sess.get_inputs()]
        return np.concatenate([np.asarray(sess.run(None, {n: f[n] for n in names})[0], np.float64).reshape(1, -1)
                               for f in feeds])

    ref = logits(model)
    power = max(float(np.mean(ref ** 2)), 1e-30)
    rng = np.random.default_rng(0)
    out = {}
    for ly in layers:
        w0 = ly.w
        dw = rng.standard_normal(w0.shape) * (np.abs(w0).mean(1, keepdims=True) + 1e-12)
        per = w0.shape[0] // ly.groups
        h = hs[ly.name]
        num = sum(float(np.sum((dw[g * per:(g + 1) * per] @ h[g]) * dw[g * per:(g + 1) * per])) for g in range(ly.groups))
        den = sum(float(np.sum((w0[g * per:(g + 1) * per] @ h[g]) * w0[g * per:(g + 1) * per])) for g in range(ly.groups))
        if num <= 0 or den <= 0:
            out[ly.name] = 1.0
            continue
        probe = replace(ly, w=w0 + dw * np.sqrt(GAIN_PROBE * den / num))
        out[ly.name] = float(np.mean((logits(write_back(model, [probe])) - ref) ** 2) / power) / GAIN_PROBE
    return out


def levels_for(step: float, qmax: int = QMAX) -> np.ndarray:
    """Integers round(k * step) strictly inside (-qmax, qmax), plus +-qmax."""
    m = int(np.floor((qmax - 0.5) / step))
    lv = np.round(np.arange(-m, m + 1) * step)
    lv = lv[np.abs(lv) < qmax]
    return np.unique(np.concatenate([lv, [-qmax, qmax, 0]])).astype(np.float64)


def _bits(q: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """-log2 p of each level from its count in q (half a count for an unused level)."""
    idx = np.searchsorted(levels, q.ravel())
    counts = np.bincount(idx, minlength=levels.size).astype(np.float64) + 0.5
    return -np.log2(counts / counts.sum())


def _nearest_idx(x: np.ndarray, levels: np.ndarray) -> np.ndarray:
    i = np.clip(np.searchsorted(levels, x), 1, levels.size - 1)
    return np.where(np.abs(x - levels[i - 1]) <= np.abs(levels[i] - x), i - 1, i)


def _choose(x: np.ndarray, wgt: np.ndarray, levels: np.ndarray, bits: np.ndarray, zero_i: int) -> np.ndarray:
    """Index of the level minimising bits + wgt * (x - level)^2 among the nearest two, their
    outer neighbours and zero (a rarer level further away is never cheaper than these)."""
    hi = np.clip(np.searchsorted(levels, x), 0, levels.size - 1)
    cand = np.stack([hi - 2, hi - 1, hi, hi + 1, np.full_like(hi, zero_i)], 1)
    cand = np.clip(cand, 0, levels.size - 1)
    cost = bits[cand] + wgt[:, None] * (x[:, None] - levels[cand]) ** 2
    return cand[np.arange(x.size), cost.argmin(1)]


def _gptq_rdo(u: np.ndarray, ufac: np.ndarray | None, row_w: np.ndarray, levels: np.ndarray, bits: np.ndarray,
              kappa: float, fixed: np.ndarray, fixed_val: np.ndarray, diag: np.ndarray) -> np.ndarray:
    """One pass over the columns (already in act order). row_w: s_r^2 per row (error weight per grid unit^2)."""
    zero_i = int(np.searchsorted(levels, 0.0))
    x = u.astype(np.float64).copy()
    rows, k = x.shape
    q = np.empty_like(x)
    if ufac is None:  # no usable H: each weight alone, weighted by the diagonal
        for j in range(k):
            qi = levels[_choose(x[:, j], kappa * row_w * diag[j], levels, bits, zero_i)]
            q[:, j] = np.where(fixed[:, j], fixed_val[:, j], qi)
        return q
    for i1 in range(0, k, BLOCK):
        i2 = min(i1 + BLOCK, k)
        x1 = x[:, i1:i2].copy()
        u1 = ufac[i1:i2, i1:i2]
        err1 = np.zeros_like(x1)
        for j in range(i2 - i1):
            d = u1[j, j]
            qi = levels[_choose(x1[:, j], kappa * row_w / (d * d), levels, bits, zero_i)]
            qi = np.where(fixed[:, i1 + j], fixed_val[:, i1 + j], qi)
            e = (x1[:, j] - qi) / d
            x1[:, j:] -= np.outer(e, u1[j, j:])
            q[:, i1 + j] = qi
            err1[:, j] = e
        x[:, i2:] -= err1 @ ufac[i1:i2, i2:]
    return q


def _pick_step(u: np.ndarray, wgt: np.ndarray, fixed: np.ndarray, fixed_val: np.ndarray, kappa: float,
               guess: float, qmax: int) -> float:
    """The step of the candidates around the high-rate `guess` with the lowest Lagrangian cost
    bits + kappa * wgt * err^2 under rate-aware nearest assignment (no error feedback: a cheap proxy
    that ranks the steps the same way; at low rates the high-rate formula alone is off by 2x or more)."""
    best, best_j = guess, np.inf
    x = u[~fixed]
    wx = wgt[~fixed]
    if x.size > 200_000:  # a strided sample ranks the steps as well
        sl = slice(None, None, x.size // 200_000 + 1)
        x, wx = x[sl], wx[sl]
    for f in STEP_CANDIDATES:
        step = float(np.clip(guess * f, 1.0, qmax / 2))
        levels = levels_for(step, qmax)
        zero_i = int(np.searchsorted(levels, 0.0))
        qi = _nearest_idx(x, levels)
        for _ in range(PASSES):
            counts = np.bincount(qi, minlength=levels.size) + 0.5
            bits = -np.log2(counts / counts.sum())
            qi = _choose(x, kappa * wx, levels, bits, zero_i)
        counts = np.bincount(qi, minlength=levels.size) + 0.5
        bits = -np.log2(counts / counts.sum())
        j = float(np.sum(bits[qi]) + kappa * np.sum(wx * (x - levels[qi]) ** 2))
        if j < best_j:
            best, best_j = step, j
    return best


def _gptq_rdo_batched(u: np.ndarray, ufac: np.ndarray, row_w: np.ndarray, levels: np.ndarray, bits: np.ndarray,
                      kappa: float, fixed: np.ndarray, fixed_val: np.ndarray) -> np.ndarray:
    """_gptq_rdo for depthwise convs: one row per group, every group's own factor ([G, K, K]), all
    groups at once (natural column order)."""
    zero_i = int(np.searchsorted(levels, 0.0))
    x = u.astype(np.float64).copy()
    q = np.empty_like(x)
    for j in range(x.shape[1]):
        d = ufac[:, j, j]
        qi = levels[_choose(x[:, j], kappa * row_w / (d * d), levels, bits, zero_i)]
        qi = np.where(fixed[:, j], fixed_val[:, j], qi)
        e = (x[:, j] - qi) / d
        x[:, j:] -= e[:, None] * ufac[:, j, j:]
        q[:, j] = qi
    return q


def quantize(layer: Layer, lam: float, h: np.ndarray | None, per_channel: bool = True, qmax: int = QMAX,
             step_scale: float = STEP_SCALE, factors: dict | None = None) -> dict:
    """ECQ of `layer` in place at slope `lam` (h: [G, K, K]); returns the layer's report entry.

    `factors` caches each group's (order, Cholesky factor) by layer name: a lambda sweep reuses them."""
    w = layer.w
    s = grid_scale(w, per_channel, qmax)
    u = w / s[:, None]
    rows, k = w.shape
    per = rows // layer.groups
    fixed = np.zeros(w.shape, bool)
    fixed_val = np.zeros(w.shape)
    arg = np.abs(w).argmax(1)
    r = np.arange(rows)
    fixed[r, arg] = np.abs(w[r, arg]) > 0
    fixed_val[r, arg] = np.sign(w[r, arg]) * qmax
    if layer.mask is not None:
        fixed |= layer.mask
        fixed_val[layer.mask] = 0.0
    hh = h if h is not None else np.broadcast_to(np.eye(k), (layer.groups, k, k))
    energy = max(sum(float(np.sum((w[g * per:(g + 1) * per] @ hh[g]) * w[g * per:(g + 1) * per]))
                     for g in range(layer.groups)), 1e-30)
    kappa = 1.0 / (lam * energy)
    row_w = s ** 2
    batched = per == 1 and layer.groups > 1
    key = (layer.name, "factors")
    if factors is not None and key in factors:
        fac = factors[key]
    else:
        if batched:  # natural order, one factor per channel
            ufs = [_upper_inverse_factor(hh[g]) for g in range(layer.groups)]
            fac = ("batched", np.stack([uf if uf is not None else np.diag(1 / np.sqrt(np.maximum(np.diag(hh[g]), 1e-30)))
                                        for g, uf in enumerate(ufs)]))
        else:
            fac = []
            for g in range(layer.groups):
                order = np.argsort(-np.diag(hh[g]), kind="stable")
                fac.append((slice(g * per, (g + 1) * per), order, _upper_inverse_factor(hh[g][np.ix_(order, order)]),
                            np.diag(hh[g])[order].astype(np.float64)))
        if factors is not None:
            factors[key] = fac
    # each weight's error weight per grid unit^2: s_r^2 / U_jj^2, GPTQ's cost of a column's rounding error
    if batched:
        wgt = row_w[:, None] / np.einsum("gjj->gj", fac[1]) ** 2
    else:
        wgt = np.empty_like(u)
        for sl, order, uf, diag in fac:
            col = 1.0 / np.diag(uf) ** 2 if uf is not None else diag
            wgt[sl][:, order] = row_w[sl, None] * col[None, :]
    guess = step_scale * np.sqrt(12.0 / (2 * np.log(2) * kappa * max(float(np.mean(wgt)), 1e-30)))
    step = _pick_step(u, wgt, fixed, fixed_val, kappa, float(guess), qmax)
    levels = levels_for(step, qmax)
    q = np.where(fixed, fixed_val, levels[_nearest_idx(u, levels)])
    for _ in range(PASSES):
        bits = _bits(q, levels)
        if batched:
            q = _gptq_rdo_batched(u, fac[1], row_w, levels, bits, kappa, fixed, fixed_val)
            continue
        for sl, order, uf, diag in fac:
            inv = np.argsort(order)
            qg = _gptq_rdo(u[sl][:, order], uf, row_w[sl], levels, bits, kappa, fixed[sl][:, order],
                           fixed_val[sl][:, order], diag)
            q[sl] = qg[:, inv]
    layer.w = s[:, None] * q
    used = np.unique(q)
    layer.codebook = used.astype(np.int64)
    zeros = q == 0
    layer.mask = zeros if layer.mask is None else (layer.mask | zeros)
    p = np.bincount(np.searchsorted(used, q.ravel()), minlength=used.size) / q.size
    entropy = float(-(p[p > 0] * np.log2(p[p > 0])).sum())
    return {"step": "ecq", "lambda": lam, "grid_step": round(step, 2), "levels": int(used.size),
            "sparsity": round(float(zeros.mean()), 4), "entropy_bits": round(entropy, 3)}
