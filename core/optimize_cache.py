"""The graph optimizer's result, remembered per (model, opset range, optimizer code) (issue 17).

The optimizer (core/optimizer) rewrites the same FP32 model the same way on every compile and then
verifies it on onnxruntime; on EfficientNet-Lite0 that is 2-7 s of each compile, for every backend,
precision and flag. Its output depends only on the model bytes, the backend's opset range, and the
optimizer's own code and its runtime versions, which is the key. Models whose weights live in external
data files are not cached (their bytes are not in the ModelProto).
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from edgec.core import cache

KIND = "optimized"


@functools.lru_cache(maxsize=1)
def _code() -> str:
    return cache.code_key(Path(__file__).resolve().parent / "optimizer")


def _uses_external_data(model) -> bool:
    return any(t.data_location == 1 for t in model.graph.initializer)  # onnx.TensorProto.EXTERNAL


def optimize(model, opset_range, run_passes, progress):
    """(optimized ModelProto, report) from the cache, else from `run_passes` (core.optimizer.optimize)."""
    import onnx

    from edgec.core.probe import version

    data = model.SerializeToString() if not _uses_external_data(model) else None
    key = None
    if data is not None and cache.enabled():
        key = cache.key(KIND, _code(), hashlib.sha256(data).hexdigest(), list(opset_range or ()),
                        version("onnx"), version("onnxruntime"), version("onnx_ir", "onnx-ir"))
        hit = cache.load_blob(KIND, key)
        if hit is not None:
            out = onnx.ModelProto()
            out.ParseFromString(hit[0])
            return out, {**hit[1], "cache": "hit"}
    res = run_passes(model, opset_range=opset_range, progress=progress)
    if key is not None and not getattr(res, "large", False):
        cache.save_blob(KIND, key, res.model.SerializeToString(), res.report)
    return res.model, ({**res.report, "cache": "miss"} if key is not None else res.report)
