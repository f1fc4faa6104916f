"""Cross-backend comparison: `edgec.compare(...)` and the `edgec compare` command.

sweep.py runs the cells, cache.py decides what a resumed sweep may reuse, bench.py times the cells
interleaved, render.py writes the markdown/PNG/HTML forms, multi.py merges several models into one
report, command.py is the CLI verb.
"""
from edgec.core.lazy import exports

# Imported on first use: the CLI verb lives in this package. `compare` takes one model or several (multi.py).
__getattr__, __dir__ = exports(globals(), {
    **{name: "edgec.core.compare.sweep" for name in ("ROW_KEYS", "STATUSES", "CompareReport")},
    "compare": "edgec.core.compare.multi"})

__all__ = ["compare", "CompareReport", "ROW_KEYS", "STATUSES"]
