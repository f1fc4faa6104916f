"""Package attributes imported on first use (PEP 562).

`edgec backends` and `edgec --help` import the packages that hold the CLI verbs; a package __init__
that imports its implementation eagerly would drag onnx, numpy and toolchains into them. A package
names its public attributes and their modules here instead; `from pkg import submodule` is unaffected.
"""
from __future__ import annotations

import importlib


def exports(namespace: dict, names: dict[str, str]):
    """(__getattr__, __dir__) for a package whose public `names` map to the modules defining them."""

    def __getattr__(name: str):
        if name not in names:
            raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(names[name]), name)
        namespace[name] = value  # later lookups skip this function
        return value

    def __dir__():
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__
