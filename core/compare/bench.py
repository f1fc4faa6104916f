"""Compare's timing: the interleaved round-robin loop of `edgec.core.benchmark.timing` (the one
implementation `edgec benchmark` uses too), summarized into the LatencyStats a report row carries."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from edgec.core.backend import LatencyStats, Runner
from edgec.core.benchmark.timing import first_line, round_robin

__all__ = ["first_line", "interleaved"]


def interleaved(runners: Mapping[str, Runner], feeds: Mapping[str, np.ndarray], *, runs: int, warmup: int,
                threads: int | None) -> tuple[dict[str, LatencyStats], dict[str, str]]:
    """Round-robin `runs` timed inferences per runner after `warmup` untimed ones each.
    Returns ({name: stats}, {name: error})."""
    times, errors, _order = round_robin(runners, feeds, runs=runs, warmup=warmup)
    stats = {}
    for n in runners:
        if n in errors or not times[n]:
            continue
        t = np.asarray(times[n]) * 1e3
        stats[n] = LatencyStats(len(t), warmup, threads, float(np.median(t)), float(np.percentile(t, 90)),
                                float(t.mean()), float(t.min()))
    return stats, errors
