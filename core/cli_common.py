"""What every verb's argparse handler shares: value coercion, JSON on stdout, plain-text tables.

Its own module so that verbs registered from elsewhere (core/compare/command.py, plugins' verbs) use
the same helpers without importing core/cli.py, which imports them.
"""
from __future__ import annotations

import argparse
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
