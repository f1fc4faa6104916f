"""Unstructured magnitude pruning: the smallest |w| of a layer (or of all selected layers) become 0.

Exact: a layer pruned to sparsity S has round(S * size) zeros it did not have before counted in,
ties broken by position (argpartition), so reports and tests can rely on the count.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .layers import Layer


def count(sparsity: float, size: int) -> int:
    return int(round(sparsity * size))


def magnitude(layer: Layer, sparsity: float) -> None:
    """Zero the round(sparsity * size) smallest-magnitude weights of `layer` (previous mask kept)."""
    score = np.abs(layer.w).ravel()
    if layer.mask is not None:
        score = np.where(layer.mask.ravel(), -1.0, score)  # already pruned: first in line
    k = count(sparsity, score.size)
    mask = np.zeros(score.size, bool)
    if k:
        mask[np.argpartition(score, k - 1)[:k]] = True
    layer.mask = mask.reshape(layer.w.shape)
    layer.w[layer.mask] = 0.0


def global_magnitude(layers: Sequence[Layer], sparsity: float) -> dict[str, float]:
    """One |w| threshold over all `layers` (round(sparsity * total) zeros in all); returns each layer's sparsity.

    Raw magnitudes are compared across layers, so layers with small weights (often the wide 1x1
    convs) lose most; per-layer pruning is the default for that reason."""
    scores = np.concatenate([np.abs(ly.w).ravel() for ly in layers])
    k = count(sparsity, scores.size)
    mask = np.zeros(scores.size, bool)
    if k:
        mask[np.argpartition(scores, k - 1)[:k]] = True
    out, pos = {}, 0
    for ly in layers:
        m = mask[pos:pos + ly.w.size].reshape(ly.w.shape)
        pos += ly.w.size
        ly.mask = m if ly.mask is None else (m | ly.mask)
        ly.w[ly.mask] = 0.0
        out[ly.name] = float(ly.mask.mean())
    return out
