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
from typing import Callable, Iterable


def enabled() -> bool:
    return os.environ.get("EDGEC_OVERLAP", "1") != "0" and (os.cpu_count() or 1) > 1


def consume(items: Iterable, fn: Callable, depth: int = 2) -> None:
    """fn(item) for every item, in order, on one worker thread, with at most `depth` items waiting
    (each holds a sample's fetched activations); exceptions surface here, the first one wins."""
    if not enabled():
        for item in items:
            fn(item)
        return
    pending: deque = deque()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgec-overlap")
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            while len(pending) > depth:
                pending.popleft().result()
        while pending:
            pending.popleft().result()
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def session_options(so) -> None:
    """onnxruntime's pool threads spin after each run by default and would take the core the consumer
    thread is working on; an overlapped pass makes them sleep instead."""
    if enabled() or os.environ.get("EDGEC_NOSPIN") == "1":
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
