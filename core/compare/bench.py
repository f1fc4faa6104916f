"""Compare's timing: the interleaved round-robin loop of `edgec.core.benchmark.timing` (the one
implementation `edgec benchmark` uses too), summarized into the LatencyStats a report row carries."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from edgec.core.backend import LatencyStats, Runner
from edgec.core.benchmark.timing import first_line, round_robin

__all__ = ["first_line", "interleaved", "time_cells"]


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


def time_cells(cells: Sequence[tuple[str, str, str]], feeds: Mapping[str, np.ndarray], *, threads: int | None,
               runs: int, warmup: int, memory: bool) -> dict[str, dict]:
    """Load every (name, backend, artifact dir) here, time them interleaved, then (optionally) each one's
    memory in a fresh child. Runs wherever the caller is: in the driver (local executor) or inside one
    Ray task pinned to a node (ray executor), so every number in one result comes from one host.

    Returns {name: {"latency": LatencyStats | None, "error": str | None, "memory": dict | None}}.
    """
    import edgec
    from edgec.core import progress

    out = {name: {"latency": None, "error": None, "memory": None} for name, _, _ in cells}
    runners: dict[str, Runner] = {}
    try:
        for name, _backend, artifact in cells:
            try:
                runners[name] = edgec.load(artifact, threads=threads)
            except Exception as e:
                out[name]["error"] = f"load failed: {first_line(e)}"
        progress.say(f"compare: timing {len(runners)} cells interleaved, {runs} runs each after {warmup} warm-up, "
                     f"threads={threads}")
        stats, errors = interleaved(runners, feeds, runs=runs, warmup=warmup, threads=threads)
    finally:
        for r in runners.values():
            try:
                r.close()
            except Exception:
                pass
    for name in runners:
        out[name]["error"] = errors.get(name)
        out[name]["latency"] = stats.get(name)
    if memory:
        from edgec.core.benchmark.memory import measure

        baselines: dict = {}
        for name, backend, artifact in cells:
            if out[name]["latency"] is None:
                continue
            progress.say(f"compare: memory of {name} in a fresh process")
            try:
                out[name]["memory"] = measure(Path(artifact), backend, feeds, threads, 10, baselines)
            except Exception as e:  # memory is a column, not a reason to drop a validated, timed cell
                out[name]["memory"] = {"error": first_line(e)}
    return out
