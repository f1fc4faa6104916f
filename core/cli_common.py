"""What every verb's argparse handler shares: value coercion, JSON on stdout, plain-text tables.

Its own module so that verbs registered from elsewhere (core/compare/command.py, plugins' verbs) use
the same helpers without importing core/cli.py, which imports them.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys


def coerce(v: str):
    """A CLI string as the Python value a backend option expects (bool, None, int, float, else str)."""
    low = v.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for t in (int, float):
        try:
            return t(v)
        except ValueError:
            pass
    return v


def key_value(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--option expects key=value, got {text!r}")
    k, v = text.split("=", 1)
    return k.strip(), coerce(v.strip())


@contextlib.contextmanager
def native_stdout_to_stderr(enabled: bool):
    """Under `--json` the one document must be all of stdout, but native libraries print there behind
    Python's back (onnxruntime-qnn's "# LIBNATIVE: ..." banner broke `edgec benchmark --json`): fd 1 goes to
    stderr for the command, and sys.stdout keeps the real stdout for `dump`. Skipped when sys.stdout is not
    the process's fd 1 (a test's capture), where native output never reached it anyway."""
    try:
        real = enabled and sys.stdout.fileno() == 1
    except (AttributeError, OSError, ValueError):
        real = False
    if not real:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    old, sys.stdout = sys.stdout, os.fdopen(saved, "w", closefd=False)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stdout = old
        os.dup2(saved, 1)
        os.close(saved)


def dump(obj) -> None:
    """The one JSON document a `--json` verb prints on stdout."""
    from edgec.core.manifest import to_json
    sys.stdout.write(to_json(obj) + "\n")


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f} %"


def table(rows: list[list], header: list[str]) -> str:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- numeric options
# Every numeric flag of every verb goes through one of these, so nan, inf, negatives and zero are refused
# the same way everywhere: one line naming the flag (argparse adds it) and the accepted range.

def _number(text: str, kind) -> float:
    import math
    try:
        v = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if kind is float and not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def ranged(kind, lo=None, hi=None, lo_open: bool = False, what: str = ""):
    """An argparse `type` accepting `kind` values in [lo, hi] (`lo_open`: (lo, hi]); `what` names the range."""

    def parse(text: str):
        v = _number(text, kind)
        if (lo is not None and (v < lo or (lo_open and v == lo))) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"{text!r} is out of range: expected {what}")
        return v

    parse.__name__ = what or kind.__name__  # argparse names the type in its messages
    return parse


positive_int = ranged(int, 1, what="an integer >= 1")
nonneg_int = ranged(int, 0, what="an integer >= 0")
percent_points = ranged(float, 0, 100, what="points between 0 and 100")
percent_open = ranged(float, 0, 100, lo_open=True, what="a percentage in (0, 100]")
cosine = ranged(float, -1, 1, what="a cosine between -1 and 1")


class Parser(argparse.ArgumentParser):
    """argparse with the project's error contract: one stderr line, exit 2 (argparse prints usage too)."""

    def error(self, message: str):
        sys.stderr.write(f"edgec: error: {self.prog}: {message} (see `{self.prog} -h`)\n")
        raise SystemExit(2)


def check_range(name: str, value, parse) -> None:
    """The same checks for the Python API (edgec.compile(max_drop=...)), as an InputError."""
    if value is None:
        return
    try:
        parse(str(value))
    except argparse.ArgumentTypeError as e:
        from edgec.core.errors import InputError
        raise InputError(f"{name}={value!r}: {e}") from None
