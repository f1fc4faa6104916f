"""Where a sweep's cells run. An executor takes cells in and gives outcomes back; the sweep (sweep.py) keeps
planning, the cell cache lookup, rows and the report, so `compare` and anything built on its sweep
(`edgec auto`) switch executors with one argument.

The interface, duck-typed (LocalExecutor here, RayExecutor in ray_executor.py):

- `compile(jobs) -> iterator of CellOutcome`: one outcome per CellJob, in completion order. A cell's own
  failure is an outcome with status error / failed_validation, never an exception.
- `time(cells, feeds, *, threads, runs, warmup, memory) -> [TimingGroup]`: every cell that can run on a
  node type is timed there, interleaved with the others, on ONE node of that type; a group's numbers are
  only ever compared with each other (speedups are within a group).
- `offers(resources) -> bool`: whether a cell needing these (e.g. {"GPU": 1}) can be placed somewhere,
  for backends that build here but run only elsewhere.
- `describe() -> dict` (into the report's meta), `close()`.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Mapping, Sequence

from edgec.core.compare.bench import time_cells
from edgec.core.compare.cell import CellBar, CellJob, CellOutcome, TimingCell, TimingGroup, node_label, run_cell
from edgec.core.compare.flags import EXECUTORS, add_arguments, executor_kwargs
from edgec.core.errors import InputError

__all__ = ["EXECUTORS", "LocalExecutor", "TimingCell", "TimingGroup", "open_executor", "add_arguments",
           "executor_kwargs", "merge_timing"]


class LocalExecutor:
    """Every cell in this process, one after another (the default)."""

    name = "local"

    def compile(self, jobs: Sequence[CellJob]) -> Iterator[CellOutcome]:
        bar = CellBar(len(jobs))
        host = node_label()
        try:
            for job in jobs:
                bar.set_running(1)
                out = run_cell(job, node=host)
                bar.set_running(0)
                bar.finished(out)
                yield out
        finally:
            bar.close()

    def time(self, cells: Sequence[TimingCell], feeds: Mapping, *, threads, runs: int, warmup: int,
             memory: bool, min_seconds: float = 0.0) -> list[TimingGroup]:
        res = time_cells([(c.name, c.backend, c.artifact) for c in cells], feeds, threads=threads, runs=runs,
                         warmup=warmup, memory=memory, min_seconds=min_seconds)
        return [TimingGroup("local", node_label(), res)]

    def offers(self, resources: Mapping) -> bool:
        return False

    def describe(self) -> dict:
        return {"name": "local", "host": node_label()}

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_executor(executor="local", ray_address: str | None = None, **ray_options):
    """An executor from its name (an executor object passes through). Returns (executor, owned): owned
    ones are closed by the caller that opened them."""
    if not isinstance(executor, str):
        if ray_address is not None:
            raise InputError("--ray-address applies to --executor ray only, not to an executor object")
        return executor, False
    if executor == "local":
        if ray_address is not None:
            raise InputError("--ray-address needs --executor ray")
        return LocalExecutor(), True
    if executor == "ray":
        from edgec.core.compare.ray_executor import RayExecutor
        return RayExecutor(address=ray_address, **ray_options), True
    raise InputError(f"unknown executor '{executor}' (choose from {', '.join(EXECUTORS)})")


def merge_timing(groups: Iterable[TimingGroup]) -> dict[str, tuple[TimingGroup, dict]]:
    """Each cell's result from the first group that timed it (groups come in node-type order)."""
    chosen: dict[str, tuple[TimingGroup, dict]] = {}
    for g in groups:
        for name, res in g.results.items():
            chosen.setdefault(name, (g, res))
    return chosen
