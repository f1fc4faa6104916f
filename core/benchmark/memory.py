"""Memory of an artifact: peak resident memory of a fresh child process over load + inference, the
increment over a child that only imported the same runtime, the size on disk, and what the runtime
says it allocated.

Each measurement is its own child (`python -m edgec.core.benchmark.memory`), so peaks of several
artifacts never mix and the parent's own imports (every backend, matplotlib) are not counted. The
peak is the kernel's: ru_maxrss from wait4() on the child, in the parent; the child also reports its
VmHWM / VmRSS from /proc at each step (before load, after load, after the runs).
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
    except OSError:  # not Linux: the parent's wait4 figure still stands
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
    be.toolchain()  # imports the runtime module, as loading would: the baseline carries it too
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
    """Run one child; returns its report plus `peak_rss_bytes`, the kernel's peak (ru_maxrss from wait4)."""
    import time

    cmd = [sys.executable, "-m", "edgec.core.benchmark.memory", "--backend", backend, "--runs", str(runs)]
    if threads:
        cmd += ["--threads", str(threads)]
    env = {**os.environ, "EDGEC_PROGRESS": "0"}
    with tempfile.TemporaryDirectory(prefix="edgec-bench-mem-") as d:
        if artifact is not None:
            np.savez(Path(d) / "feeds.npz", **feeds)
            cmd += ["--artifact", str(artifact), "--feeds", str(Path(d) / "feeds.npz")]
        with open(Path(d) / "out", "wb") as out, open(Path(d) / "err", "wb") as err:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
            deadline = time.monotonic() + timeout
            while True:  # wait4 rather than Popen.wait: only wait4 hands back the child's own rusage
                pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline:
                    proc.kill()
                    os.wait4(proc.pid, 0)
                    proc.returncode = -9
                    raise RuntimeError(f"memory child for {artifact or backend} timed out after {timeout:.0f} s")
                time.sleep(0.02)
            proc.returncode = os.waitstatus_to_exitcode(status)
        text = (Path(d) / "out").read_text()
        errtext = (Path(d) / "err").read_text(errors="replace")
    if proc.returncode != 0:
        last = (errtext.strip().splitlines() or ["?"])[-1][:300]
        raise RuntimeError(f"memory child exited {proc.returncode}: {last}")
    rec = json.loads(text.strip().splitlines()[-1])
    rec["peak_rss_bytes"] = int(ru.ru_maxrss) * KIB  # Linux reports KiB
    rec["child_pid"] = pid
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
        "child_vm_hwm_bytes": (rec.get("after_runs") or {}).get("VmHWM"),
        "runs_in_child": runs,
        "method": "peak RSS (wait4 ru_maxrss) of a fresh child over load + runs; increment over a child that "
                  "imported the same backend and runtime and loaded nothing",
    }


def size_on_disk(manifest: dict) -> int | None:
    files = manifest.get("files")
    return sum(int(f.get("size", 0)) for f in files.values()) if files else None


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
