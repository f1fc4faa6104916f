"""Weight quantization helpers for the weight-only path (the static path uses ORT's quantizer)."""
from __future__ import annotations

import numpy as np



def channel_axis(op_type: str, rank: int, trans_b: int = 0) -> int:
    """Output-channel axis of a weight: Conv (incl. depthwise) 0, ConvTranspose 1, Gemm by transB, MatMul last."""
    if op_type == "ConvTranspose":
        return 1
    if op_type == "Gemm":
        return 0 if trans_b else 1
    if op_type == "MatMul":
        return rank - 1
    return 0


def symmetric_scales(w: np.ndarray, axis: int | None, qmax: int = 127) -> np.ndarray:
    """Max-abs symmetric scales, per channel along `axis` or per tensor.

    (An MSE search over clipping thresholds was tried and lost agreement on SqueezeNet 1.1, 97.2 vs
    98.4 % weight-only: clipped outlier weights carry signal.)"""
    w = w.astype(np.float32)
    rows = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1) if axis is not None else w.reshape(1, -1)
    amax = np.abs(rows).max(1)
    return (np.where(amax > 0, amax, 1.0) / qmax).astype(np.float32)
