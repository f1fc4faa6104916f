"""Compare's timing: the interleaved round-robin loop of `edgec.core.benchmark.timing` (the one
implementation `edgec benchmark` uses too), summarized into the LatencyStats a report row carries."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from edgec.core.backend import LatencyStats, Runner
from edgec.core.benchmark.timing import first_line, round_robin

__all__ = ["first_line", "interleaved"]


def interleaved(runners: Mapping[str, Runner], feeds: Mapping[str, np.ndarray], *, runs: int, warmup: int,
                threads: int | None, min_seconds: float = 0.0) -> tuple[dict[str, LatencyStats], dict[str, str]]:
    """Round-robin at least `runs` timed inferences per runner after `warmup` untimed ones each, and rounds
    until `min_seconds` have passed. Returns ({name: stats}, {name: error})."""
    from edgec.core.benchmark.timing import device_timed
    # Board-timed runners (qemu / RPC) repeat as often as the host ones ran: a duration loop over fast host
    # cells would ask the emulated board for thousands of runs.
    if min_seconds > 0 and not any(device_timed(r) for r in runners.values()):
        times, errors, _order = round_robin(runners, feeds, duration=min_seconds, min_runs=runs, warmup=warmup)
    else:
        times, errors, _order = round_robin(runners, feeds, runs=runs, warmup=warmup)
    stats = {}
    for n in runners:
        if n in errors or not times[n]:
            continue
        t = np.asarray(times[n]) * 1e3
        stats[n] = LatencyStats(len(t), warmup, threads, float(np.median(t)), float(np.percentile(t, 90)),
                                float(t.mean()), float(t.min()))
    return stats, errors
