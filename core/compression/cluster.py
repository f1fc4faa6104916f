"""Weight clustering / sharing on the INT8 grid: each layer keeps at most N distinct integer levels.

TF-MOT clusters float weights into N float centroids per layer. With per-channel INT8 after it,
those N floats become up to N x Cout integers (each channel has its own scale), so the sharing
that makes the weights compressible is gone. Here the centroids are integers on each channel's
INT8 grid (scale_c = max|w_c| / 127, what ORT's quantizer and the backends' s8 weights compute), and
the weights become w = scale_c * level: the quantizer then finds the same scales and lands every
weight exactly on its level, so a clustered layer has <= N distinct int8 values after quantization,
guaranteed. Two levels are fixed: +-127, the extreme of every channel (forced onto each channel's
max-|w| weight, which keeps scale_c unchanged), and 0 when the layer is pruned (sparsity is kept).

The levels are a 1-D k-means (Lloyd on sorted values with prefix sums: about 50 ms for the 1.3 M-weight
classifier of EfficientNet-Lite0, where scikit-learn's KMeans took 5 s). Assignment is nearest-level,
or, with calibration data, GPTQ's column-by-column update with the levels as the grid (each weight's
assignment error is pushed onto the weights not yet assigned through the Cholesky factor of H^-1).
"""
from __future__ import annotations

import numpy as np

from .layers import QMAX, Layer, grid_scale
from .sparsegpt import _upper_inverse_factor


def kmeans_1d(values: np.ndarray, k: int, fixed: np.ndarray, iters: int = 30) -> np.ndarray:
    """k levels (floats) for `values`: `fixed` levels stay, the others move (Lloyd), linear init.

    Linear initialisation (Han et al., Deep Compression) keeps levels for the rare large weights,
    which density-based init starves."""
    fixed = np.unique(np.asarray(fixed, np.float64))
    free = k - fixed.size
    if free <= 0 or values.size == 0:
        return fixed[:k] if fixed.size else np.zeros(1)
    v = np.sort(values.astype(np.float64))
    cs = np.concatenate([[0.0], np.cumsum(v)])
    lo, hi = v[0], v[-1]
    c_free = np.linspace(lo, hi, free + 2)[1:-1] if free > 0 else np.empty(0)
    for _ in range(iters):
        cents = np.concatenate([fixed, c_free])
        is_fixed = np.r_[np.ones(fixed.size, bool), np.zeros(free, bool)]
        order = np.argsort(cents, kind="stable")
        cents, is_fixed = cents[order], is_fixed[order]
        edges = (cents[1:] + cents[:-1]) / 2
        idx = np.concatenate([[0], np.searchsorted(v, edges), [v.size]])
        n = np.diff(idx)
        sums = cs[idx[1:]] - cs[idx[:-1]]
        moved = np.where(n > 0, sums / np.maximum(n, 1), cents)[~is_fixed]
        if np.allclose(moved, np.sort(c_free)):
            break
        c_free = moved
    return np.sort(np.concatenate([fixed, c_free]))


def codebook(u: np.ndarray, mask: np.ndarray | None, n: int, qmax: int = QMAX) -> np.ndarray:
    """<= n integer levels in [-qmax, qmax] for the grid values `u` ([Cout, K], |u| <= qmax)."""
    fixed = [-qmax, qmax] + ([0] if mask is not None and mask.any() else [])
    vals = u[~mask] if mask is not None else u.ravel()
    levels = np.unique(np.clip(np.round(kmeans_1d(vals, n, np.array(fixed, np.float64))), -qmax, qmax))
    return levels.astype(np.int64)


def _nearest(x: np.ndarray, levels: np.ndarray) -> np.ndarray:
    i = np.clip(np.searchsorted(levels, x), 1, levels.size - 1)
    lo, hi = levels[i - 1], levels[i]
    return np.where(np.abs(x - lo) <= np.abs(hi - x), lo, hi)


def cluster(layer: Layer, n: int, h: np.ndarray | None = None, per_channel: bool = True, qmax: int = QMAX) -> None:
    """Cluster `layer` in place onto <= n levels of its INT8 grid; data-aware when h ([G, K, K]) is given.
    `qmax` is the grid's extreme: 127, or 64 for a backend that quantizes weights to 7 bits
    (QuantFlavour.reduce_range), so the quantizer still lands on the same levels."""
    if n < 4 and not (n >= 3 and layer.mask is None):
        from edgec.core.errors import InputError
        raise InputError(f"--cluster {n}: at least 3 levels are needed (+-127 and one more; 4 with pruning, "
                         "which keeps 0)")
    w = layer.w
    s = grid_scale(w, per_channel, qmax)
    u = w / s[:, None]
    levels = codebook(u, layer.mask, n, qmax)
    # Each channel's max-|w| weight keeps its +-127: that is what holds the channel's scale fixed.
    arg = np.abs(w).argmax(1) if per_channel else None
    forced = np.zeros(w.shape, bool)
    if per_channel:
        forced[np.arange(w.shape[0]), arg] = np.abs(w[np.arange(w.shape[0]), arg]) > 0
    else:
        flat = np.abs(w).argmax()
        forced.flat[flat] = True
    sign_ext = np.sign(u) * qmax
    zero = layer.mask if layer.mask is not None else np.zeros(w.shape, bool)
    if h is None:
        q = _nearest(u, levels)
    else:
        q = np.empty_like(u)
        per = w.shape[0] // layer.groups
        for g in range(layer.groups):
            sl = slice(g * per, (g + 1) * per)
            q[sl] = _assign_obs(u[sl], h[g], levels, zero[sl], forced[sl], sign_ext[sl])
    q = np.where(forced, sign_ext, q)
    q = np.where(zero, 0.0, q)
    layer.w = s[:, None] * q
    layer.codebook = levels


def _assign_obs(u: np.ndarray, h: np.ndarray, levels: np.ndarray, zero: np.ndarray, forced: np.ndarray,
                ext: np.ndarray) -> np.ndarray:
    """GPTQ onto `levels` in grid units (the per-row scale factors out of the objective row by row)."""
    order = np.argsort(-np.diag(h), kind="stable")  # act order, as gptq_round
    ufac = _upper_inverse_factor(h[np.ix_(order, order)])
    if ufac is None:
        return _nearest(u, levels)
    x = u[:, order].astype(np.float64).copy()
    z, f, e_ = zero[:, order], forced[:, order], ext[:, order]
    q = np.empty_like(x)
    for j in range(x.shape[1]):
        qj = np.where(z[:, j], 0.0, np.where(f[:, j], e_[:, j], _nearest(x[:, j], levels)))
        q[:, j] = qj
        err = (x[:, j] - qj) / ufac[j, j]
        x[:, j + 1:] -= np.outer(err, ufac[j, j + 1:])
    return q[:, np.argsort(order)]
