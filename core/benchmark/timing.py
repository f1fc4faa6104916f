"""Timing loops: interleaved round-robin latency, and parallel streams for throughput.

The one implementation behind `edgec benchmark` and `edgec compare`. Interleaving: every round times
each artifact once, so a noisy neighbour (another job, a frequency dip, a page-cache flush) hits all
alike instead of whichever ran during it; the order rotates every round so no artifact always runs
right after the same neighbour.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Mapping

import numpy as np

from edgec.core import progress
from edgec.core.backend import Runner


def first_line(e: BaseException) -> str:
    """The one-line form a report row records: EdgecError messages as-is, others with their type."""
    from edgec.core.errors import EdgecError

    text = (str(e).strip().splitlines() or [""])[0][:300]
    if isinstance(e, EdgecError):
        return text or type(e).__name__
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def device_timed(runner: Runner) -> bool:
    """Runners on a remote or emulated board (TVM RPC) time on the device with TVM's time_evaluator:
    timing them from here would measure the network and the RPC marshalling."""
    return getattr(runner, "where", "host") != "host" and hasattr(runner, "vm")


def _device_times(runner, feeds, runs: int, warmup: int) -> list[float]:
    args = runner._args(feeds)
    runner.vm.set_input("main", *args)
    for _ in range(warmup):
        runner.vm.invoke_stateful("main")
    res = runner.vm.time_evaluator("invoke_stateful", runner.dev, number=1, repeat=runs)("main")
    return [float(x) for x in res.results]


def rotated(names: list, round_no: int) -> list:
    """`names` starting at a different one each round: no artifact is always timed first (or right after
    the same neighbour), so drift and cache warmth fall on every artifact alike."""
    k = round_no % len(names)
    return names[k:] + names[:k]


def round_robin(runners: Mapping[str, Runner], feeds: Mapping[str, np.ndarray], *, runs: int | None = None,
                duration: float | None = None, warmup: int = 5, min_runs: int = 10,
                feeds_by: Mapping[str, Mapping[str, np.ndarray]] | None = None) -> tuple[dict[str, list[float]], dict[str, str], list[list[str]]]:
    """Time `runs` inferences per runner (or rounds until `duration` seconds), after `warmup` untimed ones.

    Returns ({name: [seconds]}, {name: error}, order) where `order` lists each round's sequence (the
    interleaving, for tests and the report). `feeds_by` gives a runner its own inputs (artifacts
    of different input specs); the others take `feeds`. A runner that raises is dropped with its error; the
    others go on. Device-timed runners (see `device_timed`) are measured on their board after the
    host ones, not interleaved: their clock is not this machine's.
    """
    if runs is None and duration is None:
        raise ValueError("give runs or duration")
    names = list(runners)
    feed = {n: (feeds_by or {}).get(n, feeds) for n in names}
    errors: dict[str, str] = {}
    times: dict[str, list[float]] = {n: [] for n in names}
    remote = [n for n in names if device_timed(runners[n])]
    for n in names:
        if n in remote:
            continue
        try:
            for _ in range(warmup):
                runners[n].time_once(feed[n])
        except Exception as e:
            errors[n] = f"benchmark failed: {first_line(e)}"
    live = [n for n in names if n not in errors and n not in remote]
    order: list[list[str]] = []
    t_end = None if duration is None else time.perf_counter() + duration
    total = runs if runs is not None else None
    bar = progress.bar(total=total, desc=f"benchmark {len(live)} artifacts", unit="round")
    r = 0
    try:
        while live:
            if runs is not None and r >= runs:
                break
            if t_end is not None and r >= min_runs and time.perf_counter() >= t_end:
                break
            seq = rotated(live, r)
            order.append(seq)
            for n in seq:
                try:
                    times[n].append(runners[n].time_once(feed[n]))
                except Exception as e:
                    errors[n] = f"benchmark failed: {first_line(e)}"
            live = [n for n in live if n not in errors]
            r += 1
            bar.update(1)
    finally:
        bar.close()
    for n in remote:
        try:
            times[n] = _device_times(runners[n], feed[n], runs or max(r, min_runs), warmup)
        except Exception as e:
            errors[n] = f"benchmark failed: {first_line(e)}"
    return times, errors, order


def threaded_streams(runners: list[Runner], feeds, *, iterations: int | None = None,
                     duration: float | None = None) -> tuple[list[float], float]:
    """`len(runners)` Python threads, one runner each, issuing back-to-back requests (the runtimes release
    the GIL while they compute). Returns (per-request latencies in s, wall seconds)."""
    lock = threading.Lock()
    lat: list[float] = []
    issued = [0]
    errors: list[BaseException] = []
    t_end = None if duration is None else time.perf_counter() + duration

    def take() -> bool:
        with lock:
            if iterations is not None and issued[0] >= iterations:
                return False
            if t_end is not None and time.perf_counter() >= t_end:
                return False
            issued[0] += 1
            return True

    def work(runner):
        try:
            while take():
                dt = runner.time_once(feeds)
                with lock:
                    lat.append(dt)
        except BaseException as e:  # re-raised in the caller's thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(r,), daemon=True) for r in runners]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return lat, wall


def stream_block(runner: Runner, extra: list[Runner], feeds, streams: int, *, iterations: int | None,
                 duration: float | None, threads: int | None) -> tuple[list[float], float, str]:
    """One throughput block: the runtime's own parallel path when the runner has one
    (`Runner.throughput`, OpenVINO's async requests), else threads over `[runner] + extra`."""
    own = runner.throughput(feeds, streams, iterations=iterations, duration=duration, threads=threads)
    if own is not None:
        return own
    lat, wall = threaded_streams([runner] + extra, feeds, iterations=iterations, duration=duration)
    return lat, wall, f"{streams} Python threads, one runner each"


def make_extra(load: Callable[[], Runner], runner: Runner, streams: int) -> list[Runner]:
    """The additional runners a thread-per-stream block needs (none when the runtime has its own path)."""
    if streams <= 1 or getattr(runner, "has_throughput", False):
        return []
    return [load() for _ in range(streams - 1)]
