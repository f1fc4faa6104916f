"""The plugin contract, in one module (the pattern of pytest's hookspec.py and pluggy's eggsample).

A backend package exposes a module with `@hookimpl` functions and registers it under the entry-point
group `edgec.backends` in its own pyproject:

    [project.entry-points."edgec.backends"]
    mybackend = "mypackage.edgec_plugin"

The built-in backends register exactly this way (see the repo's pyproject.toml). What a backend object
can do is `edgec.core.backend.Backend`: required `lower`/`load`, optional `calibrate`, `layer_info`,
`quant_flavour`, and for `edgec debug` / `edgec inspect ARTIFACT` the optional `intermediates` and `audit`.
"""
from __future__ import annotations

import pluggy

PROJECT = "edgec"
ENTRY_POINT_GROUP = "edgec.backends"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def edgec_backends() -> list:
    """Return the `edgec.core.backend.Backend` instances this plugin provides.

    Called once per process. Must be cheap and must not import the backend's toolchain: a backend
    whose SDK is missing is still listed, with `available()` saying what is missing and how to
    install it.
    """


@hookspec
def edgec_preprocess_presets() -> dict:
    """Return extra `--preprocess` presets: {name: spec string}, e.g. {"yolo": "scale=1/255,size=640"}."""
