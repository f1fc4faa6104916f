"""edgec: compile a trained ONNX model into a calibrated, validated artifact for edge hardware.

The repository root is this package; `core/` is `edgec.core`, `backends/x/` is `edgec.backends.x`.
The public names are imported on first use (core/lazy.py): every `edgec.core.x` import runs this file,
and `edgec backends` / `edgec --help` must not pay for onnx, numpy or a toolchain.
"""
from edgec.core.lazy import exports
from edgec.core.version import __version__

__all__ = ["__version__", "Artifact", "auto", "benchmark", "compare", "compile", "list_backends", "load", "validate"]
__getattr__, __dir__ = exports(globals(), {
    "Artifact": "edgec.core.api", "compile": "edgec.core.api", "load": "edgec.core.api",
    "validate": "edgec.core.api", "list_backends": "edgec.core.registry",
    "compare": "edgec.core.compare", "benchmark": "edgec.core.benchmark",
    "auto": "edgec.core.auto"})
