"""Cross-backend comparison: `edgec.compare(...)` and the `edgec compare` command.

sweep.py runs the cells, cache.py decides what a resumed sweep may reuse, bench.py times the cells
interleaved, render.py writes the markdown/PNG/HTML forms, multi.py merges several models into one
report, command.py is the CLI verb.
"""
from edgec.core.compare.multi import compare
from edgec.core.compare.sweep import ROW_KEYS, STATUSES, CompareReport

__all__ = ["compare", "CompareReport", "ROW_KEYS", "STATUSES"]
