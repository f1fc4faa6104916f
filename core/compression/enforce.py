"""Keep what compression decided through quantization: pruned weights stay 0, clustered layers
keep their levels.

Clustered weights sit on the INT8 grid, so the quantizer reproduces them exactly (GPTQ rounding
finds zero error on them and moves nothing). Pruned-only weights are not on the grid: GPTQ pushes
rounding error into the pruned positions and would make them non-zero again. This pass, run on the
quantized model, re-applies masks and snaps to the codebook, and reports how many integers it changed
(0 expected for clustered layers; a non-zero count for pruned ones is GPTQ's compensation undone).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from edgec.core.quantization.rounding import _weight_quant


def _layout(ly, a: np.ndarray) -> np.ndarray:
    """A [Cout, K] array of `ly` in its initializer's layout (Layer.to_initializer without the cast)."""
    from edgec.core.quantization.rounding import _attr

    op = ly.node.op_type
    if op == "Conv" or (op == "Gemm" and _attr(ly.node, "transB", 0)):
        return a.reshape(ly.shape)
    return a.T.reshape(ly.shape)


def enforce(qmodel: onnx.ModelProto, result) -> onnx.ModelProto:
    quant = _weight_quant(qmodel)
    inits = {t.name: i for i, t in enumerate(qmodel.graph.initializer)}
    changed = {}
    for ly in result.layers:
        if ly.mask is None and ly.codebook is None:
            continue
        hit = quant.get(ly.name)
        if hit is None:
            continue  # this layer stayed float: its weights are the compressed floats themselves
        t, scale, zp, axis = hit
        if zp is not None and np.any(zp != 0):
            continue  # asymmetric weights: integer 0 is not the value 0
        q = numpy_helper.to_array(t).astype(np.int64)
        if tuple(q.shape) != tuple(ly.shape):
            continue
        new = q.copy()
        if ly.codebook is not None:
            lv = np.sort(ly.codebook)
            i = np.clip(np.searchsorted(lv, new), 1, lv.size - 1)
            new = np.where(np.abs(new - lv[i - 1]) <= np.abs(lv[i] - new), lv[i - 1], lv[i])
        if ly.mask is not None:
            new = np.where(_layout(ly, ly.mask), 0, new)
        n = int(np.sum(new != q))
        changed[ly.name] = n
        if n:
            qmodel.graph.initializer[inits[t.name]].CopyFrom(numpy_helper.from_array(new.astype(numpy_helper.to_array(t).dtype), t.name))
    result.report["enforced_after_quantization"] = {"layers": len(changed), "changed_integers": sum(changed.values()),
                                                   "by_layer": {k: v for k, v in changed.items() if v}}
    return qmodel
