"""Latency summaries and their noise: percentiles, and a confidence interval on the median from blocks.

CI method (batch medians): the timed sequence is cut into B consecutive blocks (B = 10 by default, fewer
for short runs); each block's median is one observation, and the 95 % interval is the overall median
± t(0.975, B-1) · s/√B, with s the standard deviation of the block medians. Blocks, not single runs,
because consecutive inferences on a shared machine are correlated (a neighbour's burst slows several
in a row); the block medians are close to independent, so their spread is the honest run-to-run noise.
The same blocks, paired across interleaved artifacts, give the interval on a ratio.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

BLOCKS = 10
CI_METHOD = ("95 % CI = median ± t(0.975, B-1)·sd(block medians)/√B over B consecutive blocks of the "
             "timed runs (batch-medians method)")


def t975(df: int) -> float:
    """Student's t 97.5 % quantile (scipy-free: a table, then the normal limit)."""
    table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
             10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000}
    if df in table:
        return table[df]
    below = [k for k in table if k < df]
    return table[max(below)] if df < 60 else 1.96


def blocks(values: Sequence[float], n_blocks: int = BLOCKS) -> list[np.ndarray]:
    v = np.asarray(values, dtype=float)
    b = max(1, min(n_blocks, len(v) // 2 or 1))
    return [x for x in np.array_split(v, b) if len(x)]


def interval(center: float, obs: Sequence[float]) -> list[float] | None:
    """center ± t·sd/√B over the block observations; None when fewer than 3 blocks."""
    obs = np.asarray(obs, dtype=float)
    if len(obs) < 3:
        return None
    half = t975(len(obs) - 1) * float(obs.std(ddof=1)) / math.sqrt(len(obs))
    return [center - half, center + half]


def latency_summary(seconds: Sequence[float], n_blocks: int = BLOCKS) -> dict:
    """min / median / p90 / p99 / max / mean in ms, with the block CI on the median."""
    t = np.asarray(seconds, dtype=float) * 1e3
    if t.size == 0:
        raise ValueError("no timed runs")
    med = float(np.median(t))
    bl = blocks(t, n_blocks)
    return {"runs": int(t.size), "min": float(t.min()), "median": med, "p90": float(np.percentile(t, 90)),
            "p99": float(np.percentile(t, 99)), "max": float(t.max()), "mean": float(t.mean()),
            "median_ci95": interval(med, [np.median(b) for b in bl]), "blocks": len(bl)}


def ratio_summary(ref_seconds: Sequence[float], seconds: Sequence[float], n_blocks: int = BLOCKS) -> dict:
    """Median latency of `seconds` over the reference's, with a CI from paired blocks (interleaved runs
    share blocks, so a slow spell on the machine cancels in each block's ratio)."""
    n = min(len(ref_seconds), len(seconds))
    a, b = np.asarray(ref_seconds[:n], float), np.asarray(seconds[:n], float)
    ratio = float(np.median(b) / np.median(a))
    pairs = [np.median(y) / np.median(x) for x, y in zip(blocks(a, n_blocks), blocks(b, n_blocks))]
    return {"latency_ratio": ratio, "latency_ratio_ci95": interval(ratio, pairs)}
