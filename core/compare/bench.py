"""Compare's timing: the interleaved round-robin loop of `edgec.core.benchmark.timing` (the one
implementation `edgec benchmark` uses too), summarized into the LatencyStats a report row carries."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from edgec.core.backend import LatencyStats, Runner
from edgec.core.benchmark.stats import blocks
from edgec.core.benchmark.timing import first_line, round_robin

__all__ = ["first_line", "interleaved", "time_cells"]


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
                                float(t.mean()), float(t.min()), [float(np.median(b)) for b in blocks(t)])
    return stats, errors


def time_cells(cells: Sequence[tuple[str, str, str]], feeds: Mapping[str, np.ndarray], *, threads: int | None,
               runs: int, warmup: int, memory: bool, min_seconds: float = 0.0) -> dict[str, dict]:
    """Load every (name, backend, artifact dir) here, time them interleaved, then (optionally) each one's
    memory in a fresh child. Runs wherever the caller is: in the driver (local executor) or inside one
    Ray task pinned to a node (ray executor), so every number in one result comes from one host.

    Returns {name: {"latency": LatencyStats | None, "error": str | None, "memory": dict | None}}.
    """
    import edgec
    from edgec.core import progress

    # "where" names what ran the timed inferences when it is not this host's CPU (a board, a simulator): such a
    # latency is labelled and never put in a ratio with host latencies.
    out = {name: {"latency": None, "error": None, "memory": None, "where": "host"} for name, _, _ in cells}
    runners: dict[str, Runner] = {}
    try:
        from edgec.core.manifest import read_manifest

        for name, _backend, artifact in cells:
            try:
                manifest = read_manifest(Path(artifact))
            except Exception:
                manifest = None
            if board_cell(manifest):
                out[name]["where"] = manifest["backend_info"]["validation_ran_on"]
                # A board (TVM RPC server) serves one session at a time: each board cell is timed on the board
                # from its own child process, whose session ends with it (see time_in_child).
                progress.say(f"compare: timing {name} on its board")
                try:
                    out[name]["latency"] = time_in_child(artifact, feeds, runs=runs, warmup=warmup, threads=threads)
                except Exception as e:
                    out[name]["error"] = f"benchmark failed: {first_line(e)}"
                continue
            try:
                runners[name] = edgec.load(artifact, threads=threads)
                out[name]["where"] = getattr(runners[name], "where", "host")
            except Exception as e:
                out[name]["error"] = f"load failed: {first_line(e)}"
        progress.say(f"compare: timing {len(runners)} cells interleaved, >= {runs} runs each and >= {min_seconds:g} s "
                     f"after {warmup} warm-up, threads={threads}")
        stats, errors = interleaved(runners, feeds, runs=runs, warmup=warmup, threads=threads, min_seconds=min_seconds)
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
def board_cell(manifest: dict | None) -> bool:
    """An artifact that runs on a board over TVM RPC (its validation ran there, not on this host)."""
    where = ((manifest or {}).get("backend_info") or {}).get("validation_ran_on")
    return bool(where) and where != "host"


def time_in_child(artifact, feeds: Mapping[str, np.ndarray], *, runs: int, warmup: int, threads: int | None,
                  timeout: float = 900) -> LatencyStats:
    """Time one board artifact in a fresh process: a TVM RPC server serves one session at a time and an
    in-process session is not always released on close, so a second board cell would wait forever; a
    child's session ends with the child."""
    import json
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="edgec-board-") as tmp:
        f = Path(tmp) / "feeds.npz"
        np.savez(f, **{k: np.asarray(v) for k, v in feeds.items()})
        from edgec.core.sandbox import child_env

        out = subprocess.run([sys.executable, "-m", "edgec.core.compare.bench", str(artifact), str(f), str(runs),
                              str(warmup), str(threads or 0)], capture_output=True, text=True, timeout=timeout,
                             env=child_env())
    if out.returncode != 0:
        raise RuntimeError((out.stderr.strip().splitlines() or ["board timing failed"])[-1])
    d = json.loads(out.stdout.strip().splitlines()[-1])
    return LatencyStats(**d)


def _child_main(argv) -> int:
    import json

    from edgec.core.loader import load

    artifact, feeds_path, runs, warmup, threads = argv
    z = np.load(feeds_path, allow_pickle=False)
    feeds = {k: z[k] for k in z.files}
    r = load(artifact, threads=int(threads) or None)
    try:
        stats, errors = interleaved({"a": r}, feeds, runs=int(runs), warmup=int(warmup), threads=int(threads) or None)
    finally:
        r.close()
    if errors:
        raise SystemExit(errors["a"])
    print(json.dumps(stats["a"].to_json()))
    return 0


if __name__ == "__main__":
    import sys
    raise SystemExit(_child_main(sys.argv[1:]))
