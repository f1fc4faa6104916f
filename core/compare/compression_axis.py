"""compare's compression axis: each `--compress SPEC` adds a variant of every backend x precision cell,
compiled with those compression steps, next to the uncompressed cells.

A SPEC is the compile flags of core/compression/command.py written as key=value pairs joined by commas:
`prune=0.5`, `cluster=16,cluster-method=nearest`, `prune=0.5,cluster=16`, `ecq=3e-9`,
`prune-channels=0.3`, `low-rank=0.95`. They go through the same argparse flags and checks as
`edgec compile`, so a SPEC means exactly what the flags mean there, errors included.
"""
from __future__ import annotations

import argparse
from typing import Mapping, Sequence

from edgec.core.errors import InputError


def _parser() -> argparse.ArgumentParser:
    from edgec.core.compression.command import add_step_flags

    class _Raise(argparse.ArgumentParser):
        def error(self, message):
            raise InputError(f"--compress: {message}")

    p = _Raise(prog="--compress", add_help=False)
    add_step_flags(p)
    return p


def parse_spec(spec: str) -> tuple[str, list[dict]]:
    """(variant name, steps as JSON dicts) for one SPEC."""
    from edgec.core.compression.command import steps_from_args

    argv, names = [], []
    for item in (x.strip() for x in spec.split(",")):
        if not item:
            continue
        key, _, value = item.partition("=")
        key = key.strip().replace("_", "-")
        argv.append(f"--{key}")
        if value.strip():
            argv.append(value.strip())
        names.append(key + value.strip())
    if not argv:
        raise InputError("--compress needs a SPEC such as prune=0.5, cluster=16 or prune=0.5,cluster=16")
    steps = steps_from_args(_parser().parse_args(argv))
    if not steps:
        raise InputError(f"--compress {spec!r} names no compression step (prune, cluster, ecq, prune-channels, "
                         "low-rank)")
    return "+".join(names), [s.to_json() for s in steps]


def grid_with_variants(backends: Sequence[str], precisions: Sequence[str], specs: Sequence[str],
                       base_cells: Sequence[Mapping] | None = None) -> list[dict]:
    """The uncompressed cells (the grid, or `base_cells`), then each of them once per SPEC."""
    base = [dict(c) for c in base_cells] if base_cells is not None else [
        {"backend": b, "precision": p} for b in backends for p in precisions]
    parsed = [parse_spec(s) for s in specs]
    names = [n for n, _ in parsed]
    if len(set(names)) != len(names):
        raise InputError(f"--compress given twice with the same SPEC ({', '.join(names)})")
    out = list(base)
    for name, steps in parsed:
        for c in base:
            extra = dict(c.get("compile") or {})
            if extra.get("compression"):
                raise InputError(f"cell {c['backend']} {c['precision']} already has compression; --compress adds it")
            out.append({**c, "variant": "-".join(x for x in (c.get("variant"), name) if x),
                        "compile": {**extra, "compression": steps}})
    return out
