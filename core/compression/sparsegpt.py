"""One-shot second-order pruning with weight reconstruction (SparseGPT, Frantar & Alistarh 2023).

Pruning weight j of a layer whose input has second moment H = E[x x^T] raises its output error
by w_j^2 / [H^-1]_jj (optimal brain surgeon); the remaining weights can absorb it by moving along
row j of H^-1. SparseGPT visits the columns left to right, chooses the mask of each block of
columns by that score, and pushes each pruned weight's error onto the not-yet-visited columns
through the Cholesky factor of H^-1 -- exactly the update GPTQ does for rounding error, so this
module reuses the H that quantization/rounding.py collects (rounding.input_moments) and its
damping. No retraining, one Cholesky per layer (per group for grouped convs).
"""
from __future__ import annotations

import numpy as np

from edgec.core.quantization.rounding import DAMP

from .layers import Layer
from .prune import count

BLOCK = 128  # columns whose mask is chosen together (SparseGPT's Bs): adaptive, but not per column


def _upper_inverse_factor(h: np.ndarray) -> np.ndarray | None:
    """U upper triangular with U^T U = (H + damp)^-1, as gptq_round computes it; None if singular."""
    h = h.astype(np.float64).copy()
    dead = np.diag(h) <= 0
    h[dead, dead] = 1.0
    h += np.eye(h.shape[0]) * DAMP * float(np.mean(np.diag(h)))
    try:
        return np.linalg.cholesky(np.linalg.inv(h)).T
    except np.linalg.LinAlgError:
        return None


def obs_prune(w: np.ndarray, h: np.ndarray, n_zero: int, keep_zero: np.ndarray | None = None,
              block: int = BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """(pruned and reconstructed w, mask) with exactly `n_zero` pruned weights (more if `keep_zero`
    already holds more), minimising tr((w - w') H (w - w')^T) greedily column by column."""
    w = w.astype(np.float64).copy()
    rows, k = w.shape
    u = _upper_inverse_factor(h)
    if u is None:  # no usable H: fall back to magnitude
        score = np.abs(w).ravel()
        mask = np.zeros(w.size, bool)
        if n_zero:
            mask[np.argpartition(score, n_zero - 1)[:n_zero]] = True
        mask = mask.reshape(w.shape)
        return np.where(mask, 0.0, w), mask
    mask = np.zeros_like(w, bool)
    frac = n_zero / w.size
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        w1 = w[:, i1:i2].copy()
        u1 = u[i1:i2, i1:i2]
        score = w1 ** 2 / np.diag(u1)[None, :] ** 2
        if keep_zero is not None:
            score = np.where(keep_zero[:, i1:i2], -1.0, score)
        # Cumulative rounding gives each block its share and the layer exactly n_zero in total.
        nb = int(round(frac * rows * i2)) - int(round(frac * rows * i1))
        m1 = np.zeros(w1.size, bool)
        if nb:
            m1[np.argpartition(score.ravel(), nb - 1)[:nb]] = True
        m1 = m1.reshape(w1.shape)
        err1 = np.zeros_like(w1)
        for j in range(i2 - i1):
            col = w1[:, j]
            q = np.where(m1[:, j], 0.0, col)
            e = (col - q) / u1[j, j]
            w1[:, j:] -= np.outer(e, u1[j, j:])
            w1[:, j] = q
            err1[:, j] = e
        w[:, i1:i2] = w1
        mask[:, i1:i2] = m1
        w[:, i2:] -= err1 @ u[i1:i2, i2:]  # SparseGPT's lazy batch update of the columns still to visit
    return w, mask


def prune(layer: Layer, sparsity: float, h: np.ndarray) -> None:
    """SparseGPT-prune `layer` in place to exactly round(sparsity * size) zeros (h: [G, K, K])."""
    g = layer.groups
    per = layer.w.shape[0] // g
    total = count(sparsity, layer.w.size)
    new_w = np.empty_like(layer.w)
    new_mask = np.empty(layer.w.shape, bool)
    done = 0
    for gi in range(g):
        sl = slice(gi * per, (gi + 1) * per)
        # Each group's share by cumulative rounding, so the layer's total is exact.
        n_g = int(round(total * (gi + 1) / g)) - done
        done += n_g
        keep = layer.mask[sl] if layer.mask is not None else None
        new_w[sl], new_mask[sl] = obs_prune(layer.w[sl], h[gi], n_g, keep)
    layer.w = new_w
    layer.mask = new_mask if layer.mask is None else (new_mask | layer.mask)
    layer.w[layer.mask] = 0.0
