"""The CLI's numeric range checks (core/cli_common.py) applied to `edgec.compile`'s keyword arguments,
so the Python API refuses `max_drop=-1` or `min_cosine=nan` with the same one line the CLI gives."""
from __future__ import annotations

from edgec.core.cli_common import check_range, cosine, percent_open, percent_points, positive_int

COMPILE_RANGES = {"calib_samples": positive_int, "val_samples": positive_int, "threads": positive_int,
                  "max_drop": percent_points, "min_agreement": percent_open, "min_cosine": cosine}


def check_compile_options(opts) -> None:
    for name, parse in COMPILE_RANGES.items():
        value = getattr(opts, name, None)
        if isinstance(value, bool):
            check_range(name, "not-a-number", parse)
        check_range(name, value, parse)
