"""The core graph optimizer: shape inference, folding, fusion, clean-up and fusion annotations.

Built on onnx-ir (the ONNX project's in-memory IR); every pass is one module in `passes/`,
registered by name in `registry`. `optimize` runs them, checks each against the original model
in onnxruntime and rolls back any pass that breaks equivalence.
"""
from edgec.core.graph_stats import model_stats
from edgec.core.optimizer import passes  # noqa: F401  (importing the package registers the built-in passes)
from edgec.core.optimizer.pipeline import DEFAULT_PIPELINE, OptimizeResult, optimize
from edgec.core.optimizer.registry import PassContext, list_passes, register_pass, unregister_pass
from edgec.core.optimizer.report import format_report

__all__ = [
    "DEFAULT_PIPELINE", "OptimizeResult", "PassContext", "format_report", "list_passes",
    "model_stats", "optimize", "register_pass", "unregister_pass",
]
