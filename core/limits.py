"""How much memory a declared size may claim before edgec allocates it.

A 2 KB model whose initializer declares dims [2^40] made a compile grow to 23 GB until the kernel
killed it; a .npy header can declare the same. Every size a file *declares* is checked, before any
allocation, against the bytes actually present (core/model_guard.py, core/data_guard.py) and against
this limit: half the machine's physical memory, or $EDGEC_MAX_BYTES.
"""
from __future__ import annotations

import os

from edgec.core.errors import InputError


def max_bytes() -> int:
    env = os.environ.get("EDGEC_MAX_BYTES")
    if env:
        try:
            return max(1, int(float(env)))
        except ValueError:
            raise InputError(f"EDGEC_MAX_BYTES={env!r} is not a number of bytes; unset it or give e.g. 8e9") from None
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def human(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def check_bytes(nbytes: int, what: str, fix: str) -> None:
    limit = max_bytes()
    if nbytes > limit:
        raise InputError(f"{what} declares {human(nbytes)}, more than edgec will allocate ({human(limit)}, half the "
                         f"physical memory or $EDGEC_MAX_BYTES); {fix}")


def element_count(dims, what: str, fix: str) -> int:
    """Product of `dims`, refusing negative dims and products past the limit without computing a bignum
    array (Python ints do not overflow, numpy's do)."""
    n = 1
    for d in dims:
        d = int(d)
        if d < 0:
            raise InputError(f"{what} has a negative dimension {d} in {list(dims)}; {fix}")
        n *= d
        if n > (1 << 62):
            break
    return n
