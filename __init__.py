"""edgec: compile a trained ONNX model into a calibrated, validated artifact for edge hardware.

The repository root is this package; `core/` is `edgec.core`, `backends/x/` is `edgec.backends.x`.
"""
from edgec.core.version import __version__
from edgec.core.api import Artifact, compile, list_backends, load, validate
from edgec.core.compare import compare
from edgec.core.benchmark import benchmark
from edgec.core.auto import auto

__all__ = ["__version__", "Artifact", "auto", "benchmark", "compare", "compile", "list_backends", "load", "validate"]
