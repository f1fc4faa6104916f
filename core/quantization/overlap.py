"""Run a pass's numpy bookkeeping on a second thread while onnxruntime computes the next sample (issue 17).

Calibration and the layer-statistics pass alternate an onnxruntime run (C++, the GIL released) with
numpy work on its outputs (histogram binning, H = x x^T, im2col means) that runs on one core. In turn,
one core idled for most of the numpy half; overlapped, the numpy of sample k runs while onnxruntime
computes sample k+1. The consumer is one thread taking items in order, so every sum is made in the
same order as before and the results are identical. EDGEC_OVERLAP=0 turns it off.
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Sequence


def enabled() -> bool:
    return os.environ.get("EDGEC_OVERLAP", "1") != "0" and (os.cpu_count() or 1) > 1


def consume(items: Iterable, fn: Callable | Sequence[Callable], depth: int = 2) -> None:
    """fn(item) for every item, in order, on a worker thread, with at most `depth` items waiting (each
    holds a sample's fetched activations); exceptions surface here, the first one wins.

    A list of functions (`shards`) gets one worker each, every worker seeing every item in order: a
    pass whose bookkeeping splits by tensor (each shard owns its tensors' sums) then uses both cores
    while onnxruntime waits for the slower shard (the layer-statistics pass is that bound on 2 cores)."""
    fns = [fn] if callable(fn) else list(fn)
    if not enabled():
        for item in items:
            for f in fns:
                f(item)
        return
    pending: deque = deque()
    pools = [ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgec-overlap") for _ in fns]
    try:
        for item in items:
            pending.append([pool.submit(f, item) for pool, f in zip(pools, fns)])
            while len(pending) > depth:
                for fut in pending.popleft():
                    fut.result()
        while pending:
            for fut in pending.popleft():
                fut.result()
    finally:
        for futs in pending:
            for fut in futs:
                fut.cancel()
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)


def shards(weights: Sequence[float], n: int = 2) -> list[list[int]]:
    """Indices split into `n` groups of about equal total weight (greedy, largest first)."""
    n = max(1, min(n, len(weights)))
    groups: list[list[int]] = [[] for _ in range(n)]
    load = [0.0] * n
    for i in sorted(range(len(weights)), key=lambda i: -weights[i]):
        j = load.index(min(load))
        groups[j].append(i)
        load[j] += weights[i]
    return [sorted(g) for g in groups if g]


def workers() -> int:
    return int(os.environ.get("EDGEC_OVERLAP_WORKERS", "2")) if enabled() and (os.cpu_count() or 1) >= 2 else 1


def session_options(so) -> None:
    """onnxruntime's pool threads spin after each run by default and would take the core the consumer
    thread is working on; an overlapped pass makes them sleep instead."""
    if enabled() or os.environ.get("EDGEC_NOSPIN") == "1":
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
