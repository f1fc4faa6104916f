"""Finds backends: a pluggy PluginManager fed from the `edgec.backends` entry points."""
from __future__ import annotations

import functools
import importlib.metadata
import sys

import pluggy

from edgec.core import hookspecs
from edgec.core.backend import Backend
from edgec.core.errors import BackendError, InputError


# Plugins that failed to import or to answer a hook: {entry point or plugin name: one-line reason}.
# A broken third-party plugin must not take the other backends down with it.
BROKEN: dict[str, str] = {}


def _reason(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"


@functools.lru_cache(maxsize=1)
def plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    # What pm.load_setuptools_entrypoints does, one entry point at a time so one failure stays contained.
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if ep.group != hookspecs.ENTRY_POINT_GROUP or pm.get_plugin(ep.name) or pm.is_blocked(ep.name):
                continue
            try:
                pm.register(ep.load(), name=ep.name)
            except Exception as e:
                BROKEN[ep.name] = f"plugin {ep.value} failed to load ({_reason(e)})"
    return pm


def _call_each(hook_name: str):
    """Call a hook on every plugin separately, recording the ones that raise."""
    hook = getattr(plugin_manager().hook, hook_name)
    for impl in reversed(hook.get_hookimpls()):
        try:
            yield impl.function()
        except Exception as e:
            BROKEN[impl.plugin_name] = f"{hook_name}() raised {_reason(e)}"


@functools.lru_cache(maxsize=1)
def _backends() -> dict[str, Backend]:
    found: dict[str, Backend] = {}
    for result in _call_each("edgec_backends"):
        for backend in result or ():
            if not isinstance(backend, Backend):
                print(f"edgec: warning: plugin returned {backend!r}, not an edgec Backend; ignored", file=sys.stderr)
                continue
            if backend.name in found:
                print(f"edgec: warning: backend '{backend.name}' registered twice; keeping the first", file=sys.stderr)
                continue
            found[backend.name] = backend
    return dict(sorted(found.items()))


def all_backends() -> dict[str, Backend]:
    return dict(_backends())


def list_backends() -> list[dict]:
    """Every registered backend with availability, reason and install hint, toolchain, precisions."""
    rows = []
    for name, be in all_backends().items():
        av = be.available()
        row = {"name": name, "description": be.description, "available": av.ok, "can_run": av.ok and av.can_run,
               "precisions": list(be.requirements.precisions), "layout": be.requirements.layout,
               "quantization": be.requirements.quant.__dict__.copy(), "plugin": type(be).__module__}
        if av.ok:
            try:
                row["toolchain"] = be.toolchain()
            except Exception as e:  # a half-installed toolchain must not hide the other backends
                row["toolchain"] = {}
                row["toolchain_error"] = str(e).splitlines()[0] if str(e) else type(e).__name__
        else:
            row["toolchain"] = {}
        if av.reason:
            row["reason"] = av.reason
        if av.hint:
            row["hint"] = av.hint
        rows.append(row)
    for name, reason in sorted(BROKEN.items()):
        if name not in {r["name"] for r in rows}:
            rows.append({"name": name, "description": "broken plugin", "available": False, "can_run": False,
                         "precisions": [], "toolchain": {}, "reason": reason,
                         "hint": f"reinstall or uninstall the package providing '{name}'"})
    return rows


def get_backend(name: str) -> Backend:
    backends = _backends()
    if name not in backends:
        if name in BROKEN:
            raise BackendError(f"backend plugin '{name}' is installed but broken: {BROKEN[name]}; reinstall it")
        known = ", ".join(backends) or "none"
        raise BackendError(f"unknown backend '{name}' (known: {known}); "
                           "a third-party backend must be pip-installed to appear")
    return backends[name]


def require_available(backend: Backend) -> None:
    av = backend.available()
    if not av.ok:
        raise BackendError(f"backend '{backend.name}' is not available: {av.reason}; fix: {av.hint}")


def check_precision(backend: Backend, precision: str) -> None:
    if precision not in backend.requirements.precisions:
        raise InputError(f"backend '{backend.name}' does not support precision '{precision}' "
                         f"(supported: {', '.join(backend.requirements.precisions)})")


def preprocess_presets() -> dict[str, str]:
    presets: dict[str, str] = {}
    for result in _call_each("edgec_preprocess_presets"):
        presets.update(result or {})
    return presets
