"""Hardware profiles for `edgec auto`: what a device is, which backends target it, what to try first there.

They live in core/profiles/hardware/<name>.json, beside (not among) the board/TVM target profiles of
core/profiles/*.json: those are read by backends as `--target` values (`profiles.names()` lists them for
TVM, TensorRT and QNN), and an `mcu` or `x86` there would become a TVM target it is not. A hardware
profile names its board profile where it has one (`board_profile`), so both stay one fact each. Data, not
code, so a new device class is a new file, and versioned, so an auto report records which table chose.
"""
from __future__ import annotations

import json
from importlib import resources
from typing import Any

from edgec.core.backend import PRECISIONS
from edgec.core.errors import InputError

SCHEMA = 1
_DIR = "hardware"
_REQUIRED = ("name", "version", "description", "targets", "baseline", "techniques", "calib_methods", "constraints")
LATENCY_SOURCES = ("device", "proxy")


def _folder():
    return resources.files("edgec.core.profiles").joinpath(_DIR)


def names() -> list[str]:
    return sorted(p.name[:-5] for p in _folder().iterdir() if p.name.endswith(".json"))


def load(name: str) -> dict[str, Any]:
    """The hardware profile `name`, checked; a one-line InputError naming the known ones otherwise."""
    if name not in names():
        raise InputError(f"unknown hardware '{name}' (known: {', '.join(names())}); pass --hardware one of them, "
                         "or add core/profiles/hardware/<name>.json")
    prof = json.loads(_folder().joinpath(f"{name}.json").read_text())
    check(prof, name)
    return prof


def check(prof: dict, name: str = "?") -> None:
    """Schema check, so a hand-edited profile fails with the field at fault, not deep inside the search."""
    def bad(what):
        raise InputError(f"hardware profile '{name}': {what} (fix core/profiles/hardware/{name}.json)")
    if prof.get("schema") != SCHEMA:
        bad(f"schema {prof.get('schema')!r}; this edgec reads schema {SCHEMA}")
    missing = [k for k in _REQUIRED if k not in prof]
    if missing:
        bad(f"missing {', '.join(missing)}")
    if not prof["targets"]:
        bad("no targets")
    for t in prof["targets"]:
        if "backend" not in t or t.get("latency") not in LATENCY_SOURCES:
            bad(f"target {t!r} needs 'backend' and 'latency' in {LATENCY_SOURCES}")
    for t in prof["techniques"]:
        if t.get("precision") not in PRECISIONS:
            bad(f"technique {t!r}: precision must be one of {', '.join(PRECISIONS)}")
    if prof["constraints"].get("integer_only") and any(t["precision"] != "int8" for t in prof["techniques"]):
        bad("integer_only but a technique is not int8")
