"""Memory of an artifact: peak resident memory of a fresh child process over load + inference, the
increment over a child that only imported the same runtime, the size on disk, and what the runtime
says it allocated.

Each measurement is its own child (`python -m edgec.core.benchmark.memory`), so peaks of several
artifacts never mix and the parent's own imports (every backend, matplotlib) are not counted. The
peak is the kernel's high-water mark of the child's address space, VmHWM in /proc/PID/status, read by
the child at each step (before load, after load, after the runs). Not wait4()'s ru_maxrss: Linux
carries the forking parent's peak across exec into it (a 550 MB pytest parent made every child read
550 MB), while VmHWM belongs to the new address space exec creates.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

KIB = 1024


def _proc_status() -> dict:
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) * KIB
    except OSError:  # not Linux: run_child says peak memory is measured on Linux only
        pass
    return out


def runtime_allocation(runner) -> dict | None:
    """What the runtime itself tells about the model's memory, where it tells anything.

    LiteRT: the sum of its tensor buffers (get_tensor_details; an upper bound of the arena, which reuses
    activation memory). OpenVINO's CPU plugin exposes no allocation figure through its Python API
    (GPU_MEMORY_STATISTICS exists for GPU only), so for it the load increment (RSS after - before
    compile_model) is the figure. Others: None.
    """
    it = getattr(runner, "it", None)
    if it is not None and hasattr(it, "get_tensor_details"):
        total = 0
        for d in it.get_tensor_details():
            shape = d.get("shape")
            if shape is None:
                continue
            total += int(np.prod(shape)) * np.dtype(d["dtype"]).itemsize
        return {"litert_tensor_bytes": int(total)}
    compiled = getattr(runner, "compiled", None)
    if compiled is not None and hasattr(compiled, "get_property"):
        try:
            stats = compiled.get_property("GPU_MEMORY_STATISTICS")
            return {"openvino_gpu_memory_statistics": {str(k): int(v) for k, v in dict(stats).items()}}
        except Exception:
            return None
    return None


def _child(argv: list[str]) -> int:
    """Child side: print one JSON line on stdout."""
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--backend", required=True)
    p.add_argument("--artifact")
    p.add_argument("--feeds")
    p.add_argument("--threads", type=int)
    p.add_argument("--runs", type=int, default=10)
    a = p.parse_args(argv)
    from edgec.core.registry import get_backend

    be = get_backend(a.backend)
    be.available()
    from edgec.core.probe import import_toolchain

    import_toolchain(be.toolchain())  # the runtime modules, as loading would import them: the baseline carries them too
    rec = {"pid": os.getpid(), "before_load": _proc_status()}
    if a.artifact:
        from edgec.core.loader import load

        with np.load(a.feeds) as z:
            feeds = {k: z[k] for k in z.files}
        runner = load(a.artifact, threads=a.threads)
        rec["after_load"] = _proc_status()
        for _ in range(a.runs):
            runner.run(feeds)
        rec["after_runs"] = _proc_status()
        rec["runtime"] = runtime_allocation(runner)
        runner.close()
    sys.stdout.write(json.dumps(rec) + "\n")
    return 0


def run_child(backend: str, artifact: str | None = None, feeds: dict | None = None, threads: int | None = None,
              runs: int = 10, timeout: float = 600) -> dict:
    """Run one child; returns its report plus `peak_rss_bytes` (its final VmHWM) and `child_pid`."""
    cmd = [sys.executable, "-m", "edgec.core.benchmark.memory", "--backend", backend, "--runs", str(runs)]
    if threads:
        cmd += ["--threads", str(threads)]
    from edgec.core.sandbox import child_env

    env = child_env({**os.environ, "EDGEC_PROGRESS": "0"})
    with tempfile.TemporaryDirectory(prefix="edgec-bench-mem-") as d:
        if artifact is not None:
            np.savez(Path(d) / "feeds.npz", **feeds)
            cmd += ["--artifact", str(artifact), "--feeds", str(Path(d) / "feeds.npz")]
        try:
            proc = subprocess.run(cmd, capture_output=True, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"memory child for {artifact or backend} timed out after {timeout:.0f} s") from None
    if proc.returncode != 0:
        last = (proc.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1][:300]
        raise RuntimeError(f"memory child exited {proc.returncode}: {last}")
    rec = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    steps = [rec.get(k) or {} for k in ("before_load", "after_load", "after_runs")]
    peak = max((s.get("VmHWM", 0) for s in steps), default=0)
    if not peak:
        raise RuntimeError("no /proc/self/status in the child: peak memory is measured on Linux only")
    rec["peak_rss_bytes"] = peak
    rec["child_pid"] = rec["pid"]
    return rec


def measure(artifact, backend: str, feeds: dict, threads: int | None, runs: int = 10,
            baselines: dict | None = None) -> dict:
    """Memory figures of one artifact (each from fresh children); `baselines` caches the per-backend child."""
    base_key = (backend, threads)
    if baselines is not None and base_key in baselines:
        base = baselines[base_key]
    else:
        base = run_child(backend, threads=threads)
        if baselines is not None:
            baselines[base_key] = base
    rec = run_child(backend, artifact, feeds, threads, runs)
    before = rec.get("before_load", {}).get("VmRSS")
    after = rec.get("after_load", {}).get("VmRSS")
    return {
        "peak_rss_bytes": rec["peak_rss_bytes"],
        "baseline_peak_rss_bytes": base["peak_rss_bytes"],
        "increment_bytes": rec["peak_rss_bytes"] - base["peak_rss_bytes"],
        "load_increment_bytes": (after - before) if (after is not None and before is not None) else None,
        "runtime_reported": rec.get("runtime"),
        "child_pid": rec["child_pid"],
        "child_rss_bytes": {k: (rec.get(k) or {}).get("VmRSS") for k in ("before_load", "after_load", "after_runs")},
        "runs_in_child": runs,
        "method": "peak RSS (VmHWM) of a fresh child over load + runs; increment over a child that imported "
                  "the same backend and runtime and loaded nothing",
    }


def size_on_disk(manifest: dict) -> int | None:
    files = manifest.get("files")
    return sum(int(f.get("size", 0)) for f in files.values()) if files else None


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
