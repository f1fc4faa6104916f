"""Cross-backend comparison: `edgec.compare(...)` and the `edgec compare` command.

sweep.py runs the cells, cache.py decides what a resumed sweep may reuse, bench.py times the cells
interleaved, render.py writes the markdown/PNG/HTML forms, command.py is the CLI verb.
"""
from edgec.core.compare.sweep import ROW_KEYS, STATUSES, CompareReport, compare

__all__ = ["compare", "CompareReport", "ROW_KEYS", "STATUSES"]
