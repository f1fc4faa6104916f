"""One sweep cell, compile + validate, as a self-contained job: what every executor runs.

`CellJob` carries everything the compile needs as plain, picklable values (paths, options, the cache key)
so the same job runs in-process (executor "local") or as a Ray task on another node (executor "ray").
`run_cell` writes the cell's artifact and its cache sidecar where the job says, which is why the Ray
executor needs the output directory on a path every node sees (see core/compare/ray_executor.py).
"""
from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from edgec.core.benchmark.timing import first_line
from edgec.core.compare import cache
from edgec.core.errors import ValidationFailed

# Statuses a compile can end in; "ok" cells go on to timing.
OUTCOMES = ("ok", "failed_validation", "error")


@dataclass(frozen=True)
class CellJob:
    name: str
    backend: str
    precision: str
    artifact: str
    key: str
    inputs: dict
    compile: dict  # keyword arguments of edgec.core.compiler.compile besides backend/precision/output
    resources: dict = field(default_factory=dict)  # what the cell needs from a node (executor-specific keys)


@dataclass
class CellOutcome:
    name: str
    status: str
    error: str | None = None
    manifest: dict | None = None
    validation: dict | None = None
    compile_seconds: float | None = None
    node: str | None = None  # where it was compiled: "local" or a cluster node's host/ip
    attempts: int = 1


@dataclass(frozen=True)
class TimingCell:
    name: str
    backend: str
    artifact: str
    resources: dict


@dataclass
class TimingGroup:
    """The cells timed together on one node: `node_type` groups comparable hardware, `node` names the one
    machine that timed them, `results` is bench.time_cells' {name: {latency, error, memory}}."""
    node_type: str
    node: str
    results: dict


def run_cell(job: CellJob, node: str = "local") -> CellOutcome:
    """Compile one cell into job.artifact and record it in the cell cache; never raises for the cell's own
    failures (they become the outcome's status), only for an interrupt."""
    from edgec.core import compiler

    artifact = Path(job.artifact)
    cache.forget(artifact)
    out = CellOutcome(job.name, "error", node=node)
    try:
        art = compiler.compile(job.compile["model"], backend=job.backend, precision=job.precision,
                               output=artifact, force=True,
                               **{k: v for k, v in job.compile.items() if k != "model"})
    except ValidationFailed as e:
        m = getattr(e, "manifest", None) or {}
        out.status, out.error = "failed_validation", first_line(e)
        out.validation, out.compile_seconds = m.get("validation"), m.get("compile_seconds")
        # Deterministic for the same key, so cached: a resumed sweep does not redo a known failure.
        cache.store(artifact, job.key, job.inputs, out.status, error=out.error, validation=out.validation,
                    compile_seconds=out.compile_seconds, compiled_on=node)
    except Exception as e:  # any other failure is this cell's row, not the sweep's end; not cached
        out.status, out.error = "error", first_line(e)
    else:
        out.status, out.manifest = "ok", art.manifest
        out.validation, out.compile_seconds = art.manifest.get("validation"), art.manifest.get("compile_seconds")
        cache.store(artifact, job.key, job.inputs, "ok", compiled_on=node)
    return out


def node_label() -> str:
    """The host a cell ran on, for the report (stable across reruns, unlike a worker id)."""
    return socket.gethostname()




def cell_resources(backend, threads: int | None, model_bytes: int) -> dict:
    """What one cell asks of a node: CPUs (the validation thread count), memory (a compile holds the model a
    few times over: source, optimized, quantized, the runtime's copy, plus the toolchain), and whatever the
    backend declares in `cell_resources` (e.g. TensorRT {"GPU": 1}; a site's own {"qairt_sdk": 1})."""
    extra = dict(getattr(backend, "cell_resources", None) or {})
    return {"cpus": max(1, threads or 1), "memory": (1 << 30) + 8 * model_bytes, "custom": extra}


class CellBar:
    """The sweep's one progress bar: cells finished, with done / running / failed counts."""

    def __init__(self, total: int, desc: str = "compare"):
        from edgec.core import progress

        self.done = self.failed = self.running = 0
        self._bar = progress.bar(total=total, desc=desc, unit="cell")
        self._show()

    def set_running(self, n: int) -> None:
        if n != self.running:
            self.running = n
            self._show()

    def finished(self, outcome: CellOutcome) -> None:
        if outcome.status == "ok":
            self.done += 1
        else:
            self.failed += 1
        where = f" on {outcome.node}" if outcome.node else ""
        self.note(f"compare: {outcome.name}{where}: {outcome.status}" + (f": {outcome.error}" if outcome.error else ""))
        self._bar.update(1)
        self._show()

    def note(self, msg: str) -> None:
        """A per-cell line above the bar (progress.say's checkpoint for swallowed interrupts included)."""
        import sys

        from edgec.core import interrupt, progress

        interrupt.check()
        if progress.enabled():
            self._bar.write(f"edgec: {msg}", file=sys.stderr)

    def _show(self) -> None:
        self._bar.set_postfix_str(f"done {self.done}, running {self.running}, failed {self.failed}", refresh=True)

    def close(self) -> None:
        self._bar.close()


__all__ = ["CellJob", "CellOutcome", "CellBar", "TimingCell", "TimingGroup", "cell_resources", "run_cell", "node_label",
           "OUTCOMES"]
