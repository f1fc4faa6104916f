"""Cross-backend comparison: `edgec.compare(...)` and the `edgec compare` command.

sweep.py runs the cells, cache.py decides what a resumed sweep may reuse, bench.py times the cells
interleaved, render.py writes the markdown/PNG/HTML forms, command.py is the CLI verb.
"""
from edgec.core.lazy import exports

__getattr__, __dir__ = exports(globals(), {  # imported on first use: the CLI verb lives in this package
    name: "edgec.core.compare.sweep" for name in ("ROW_KEYS", "STATUSES", "CompareReport", "compare")})

__all__ = ["compare", "CompareReport", "ROW_KEYS", "STATUSES"]
