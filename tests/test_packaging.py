"""The repo root is the `edgec` package via package-dir; a sub-package missing from pyproject's explicit
list would work in an editable install and vanish from a wheel. Catch that here."""
from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"edgec"}
    for top in ("core", "backends"):
        for init in (REPO / top).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO).as_posix().replace("/", ".")
            found.add(f"edgec.{rel}")
    assert found - listed == set(), f"add to pyproject [tool.setuptools] packages: {sorted(found - listed)}"


def test_builtin_backends_registered_through_entry_points():
    """Built-in backends use the same entry-point group as third parties, nothing private."""
    eps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["edgec.backends"]
    assert eps["onnxruntime"] == "edgec.backends.onnxruntime.plugin"
    import importlib.metadata
    names = {ep.name for ep in importlib.metadata.entry_points(group="edgec.backends")}
    assert set(eps) <= names
