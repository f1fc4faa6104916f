"""Typed parsing of backend options (`-O key=value`), shared by every backend.

Options arrive as strings from the CLI or as Python values from the API, so each parser accepts both and
fails with one line naming the backend, the option and what it accepts.
"""
from __future__ import annotations

from typing import Any, Iterable

from edgec.core.errors import InputError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def as_bool(backend: str, name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise InputError(f"{backend} option {name}={value!r} is not a boolean; use true or false")


def as_number(backend: str, name: str, value: Any, kind=int, minimum: float = 0):
    import math
    what = "an integer" if kind is int else "a number"
    if isinstance(value, bool) or (kind is int and isinstance(value, float) and not value.is_integer()):
        raise InputError(f"{backend} option {name}={value!r} is not {what}; pass -O {name}=N with N >= {minimum}")
    try:
        n = kind(value)
    except (TypeError, ValueError, OverflowError):  # int(nan) is ValueError, int(inf) OverflowError
        raise InputError(f"{backend} option {name}={value!r} is not {what}; pass -O {name}=N with N >= {minimum}") from None
    if not math.isfinite(n) or n < minimum:
        raise InputError(f"{backend} option {name}={value!r} must be >= {minimum} (and finite); pass -O {name}=N "
                         f"with N >= {minimum}")
    return n


def as_choice(backend: str, name: str, value: Any, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    text = str(value).strip().lower()
    if text not in choices:
        raise InputError(f"{backend} option {name}={value!r} is not one of {', '.join(choices)}; pass "
                         f"-O {name}=<one of them>")
    return text
