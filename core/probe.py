"""Cheap toolchain detection: is a module installed, which version, without importing it.

`edgec backends` lists every backend; importing tvm, openvino+nncf or onnx to do it took seconds
(issue 17). `importlib.util.find_spec` finds a top-level module without running it and the installed
distributions' metadata carries their versions; the heavy import waits for a compile that needs it.
A module that is already imported answers with its own version string (OpenVINO's names its build),
except inside `metadata_only()`: a cache key must not depend on what this process happened to import.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import importlib.metadata
import importlib.util
import sys


def installed(module: str) -> bool:
    """Whether a top-level module can be imported (not run: a broken install shows at its first import)."""
    try:
        return importlib.util.find_spec(module.split(".")[0]) is not None
    except (ImportError, ValueError):
        return False


def dist_version(*dists: str) -> str | None:
    """The version of the first of `dists` that is installed."""
    for d in dists:
        try:
            return importlib.metadata.version(d)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


_METADATA_ONLY = contextvars.ContextVar("edgec_probe_metadata_only", default=False)


@contextlib.contextmanager
def metadata_only():
    """Within it, `version` answers from installed metadata only, never from an imported module.

    `Backend.toolchain()` inside it is what a content-hash key may hold (core/compare/cache.py): the same
    in a fresh process as after a compile there. Outside it, a toolchain read after a compile is richer
    (OpenVINO's get_version() names its build, the metadata its release only), which the manifest records;
    a key holding that changed whenever the driver had compiled something first (issue 22).
    """
    token = _METADATA_ONLY.set(True)
    try:
        yield
    finally:
        _METADATA_ONLY.reset(token)


def is_metadata_only() -> bool:
    """Inside `metadata_only()`: toolchain() implementations that ask a loaded library skip the question."""
    return _METADATA_ONLY.get()


def version(module: str, *dists: str, attr: str = "__version__") -> str:
    """`module`'s version: its own attribute when it is imported already (not inside `metadata_only()`),
    else its distribution's (one of `dists`, default the module's name), else "?" (installed without
    metadata)."""
    mod = None if _METADATA_ONLY.get() else sys.modules.get(module)
    if mod is not None:
        v = getattr(mod, attr, None)
        v = v() if callable(v) else v
        if v:
            return str(v)
    return dist_version(*(dists or (module,))) or "?"


@functools.lru_cache(maxsize=1)
def _modules_of() -> dict[str, list[str]]:
    """distribution name -> its top-level modules (the inverse of packages_distributions)."""
    out: dict[str, list[str]] = {}
    for mod, dists in importlib.metadata.packages_distributions().items():
        for d in dists:
            out.setdefault(d.lower().replace("_", "-"), []).append(mod)
    return out


def import_toolchain(names) -> list[str]:
    """Import the modules behind a `Backend.toolchain()` dict's names (distributions or modules):
    what a measurement needs loaded before its baseline. Returns the modules imported."""
    done = []
    for name in names:
        mods = _modules_of().get(name.lower().replace("_", "-")) or ([name] if installed(name) else [])
        for m in mods:
            if m.startswith("_"):
                continue
            try:
                importlib.import_module(m)
                done.append(m)
            except Exception:  # a name that is not a module (llvm), or a broken one: nothing to preload
                pass
    return done


def module_file(module: str, relpath: str):
    """A file inside an installed package, found without importing it (None if absent)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    from pathlib import Path

    for loc in spec.submodule_search_locations:
        p = Path(loc) / relpath
        if p.exists():
            return p
    return None


def release(v: str | None) -> tuple[int, ...]:
    """(1, 24, 2) for "1.24.2.dev0+cpu": the leading numeric release, for minimum-version checks."""
    import re

    m = re.match(r"\d+(?:\.\d+)*", v or "")
    return tuple(int(x) for x in m.group(0).split(".")) if m else ()
