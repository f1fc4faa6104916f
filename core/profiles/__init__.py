"""Hardware profiles: small versioned JSON files describing an edge target, readable by any backend.

Each `<name>.json` holds the CPU, ISA features, core count and the cross toolchain of one board, plus
backend-specific sections (`tvm_target` is a TVM 0.27 target dict). Fields whose value is "detect"
describe the machine edgec runs on and are filled by the backend that needs them (only it knows how to
ask its compiler). Kept as data rather than code so that a new board is a new file, and so that an
artifact's manifest can record exactly which profile version shaped it.
"""
from __future__ import annotations

import json
from importlib import resources
from typing import Any

from edgec.core.errors import InputError

SCHEMA = 1


def names() -> list[str]:
    """The bundled profile names, sorted."""
    return sorted(p.name[:-5] for p in resources.files(__package__).iterdir() if p.name.endswith(".json"))


def load(name: str) -> dict[str, Any]:
    """The profile called `name` as a dict; a one-line InputError listing the known ones otherwise."""
    if name not in names():
        raise InputError(f"unknown target profile '{name}' (known: {', '.join(names())}); "
                         "or pass a TVM target as a JSON dict, e.g. --target '{\"kind\": \"llvm\", \"mcpu\": \"cortex-a53\", "
                         "\"mtriple\": \"aarch64-linux-gnu\"}'")
    profile = json.loads(resources.files(__package__).joinpath(f"{name}.json").read_text())
    if profile.get("schema") != SCHEMA:
        raise InputError(f"target profile '{name}' has schema {profile.get('schema')!r}; this edgec reads schema {SCHEMA}")
    return profile


def having(section: str) -> list[str]:
    """The profiles with a (non-empty) `section` for one backend, e.g. "qnn" or "tensorrt": the names that
    backend's --target accepts and lists in its errors."""
    return [n for n in names() if load(n).get(section)]
