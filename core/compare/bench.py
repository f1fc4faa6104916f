"""Interleaved latency measurement: every round times each cell once, so a noisy neighbour (another job,
a thermal dip, a page-cache flush) hits all cells alike instead of whichever ran during it."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from edgec.core import progress
from edgec.core.backend import LatencyStats, Runner


def first_line(e: BaseException) -> str:
    """The one-line form a report row records: EdgecError messages as-is, others with their type."""
    from edgec.core.errors import EdgecError

    text = (str(e).strip().splitlines() or [""])[0][:300]
    if isinstance(e, EdgecError):
        return text or type(e).__name__
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def interleaved(runners: Mapping[str, Runner], feeds: Mapping[str, np.ndarray], *, runs: int, warmup: int,
                threads: int | None) -> tuple[dict[str, LatencyStats], dict[str, str]]:
    """Round-robin `runs` timed inferences per runner after `warmup` untimed ones each.

    The order rotates every round so no cell always runs right after the same neighbour (cache and
    frequency effects of the previous cell). A runner that raises is dropped with its error; the
    others go on. Returns ({name: stats}, {name: error}).
    """
    names = list(runners)
    errors: dict[str, str] = {}
    times: dict[str, list[float]] = {n: [] for n in names}
    for n in names:
        try:
            for _ in range(warmup):
                runners[n].time_once(feeds)
        except Exception as e:
            errors[n] = f"benchmark failed: {first_line(e)}"
    live = [n for n in names if n not in errors]
    for r in progress.bar(range(runs), total=runs, desc=f"benchmark {len(live)} cells", unit="round"):
        k = r % len(live) if live else 0
        for n in live[k:] + live[:k]:
            if n in errors:
                continue
            try:
                times[n].append(runners[n].time_once(feeds))
            except Exception as e:
                errors[n] = f"benchmark failed: {first_line(e)}"
        live = [n for n in live if n not in errors]
    stats = {}
    for n in names:
        if n in errors or not times[n]:
            continue
        t = np.asarray(times[n]) * 1e3
        stats[n] = LatencyStats(len(t), warmup, threads, float(np.median(t)), float(np.percentile(t, 90)),
                                float(t.mean()), float(t.min()))
    return stats, errors
