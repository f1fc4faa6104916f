"""The NCHW -> NHWC change, done once for the graph.

Every ONNX tensor is materialized in TFLite in one of two layouts: "onnx" (its own axis order) or
"nhwc" (rank 4 only: ONNX axes (0, 2, 3, 1)). Convolutions, pools and resizes want "nhwc"; elementwise
ops, Concat, Pad, Slice, Softmax and reductions follow their input's layout with their axes remapped;
shape ops (Reshape, Flatten, MatMul, ...) want "onnx". A TRANSPOSE is written only where a tensor is
wanted in the layout it was not made in (and not at all when the two orders hold the same bytes, e.g.
[1, C, 1, 1] after global pooling), so a CNN gets one at each end or none.
"""
from __future__ import annotations

import numpy as np

ONNX, NHWC = "onnx", "nhwc"
TO_NHWC = (0, 2, 3, 1)


def perm(layout: str, rank: int) -> tuple[int, ...]:
    """TFLite tensor = ONNX tensor.transpose(perm)."""
    if layout == NHWC and rank == 4:
        return TO_NHWC
    return tuple(range(rank))


def shape(onnx_shape, layout: str) -> tuple[int, ...]:
    p = perm(layout, len(onnx_shape))
    return tuple(onnx_shape[i] for i in p)


def axis(onnx_axis: int, rank: int, layout: str) -> int:
    """Where ONNX axis `onnx_axis` sits in the TFLite tensor."""
    a = onnx_axis % rank if rank else 0
    return perm(layout, rank).index(a)


def data(array: np.ndarray, layout: str, rank: int | None = None) -> np.ndarray:
    """A constant laid out for a tensor of `rank` (numpy broadcasting first prepends ones)."""
    a = np.asarray(array)
    rank = a.ndim if rank is None else rank
    if a.ndim < rank and layout == NHWC and rank == 4:
        a = a.reshape((1,) * (rank - a.ndim) + a.shape)
    if a.ndim == 4 and layout == NHWC:
        a = a.transpose(TO_NHWC)
    return np.ascontiguousarray(a)


def same_bytes(onnx_shape, a: str, b: str) -> bool:
    """True when the tensor in layout `a` and in layout `b` is the same byte sequence (only size-1
    axes move), so a RESHAPE (or nothing) stands in for a TRANSPOSE."""
    pa, pb = perm(a, len(onnx_shape)), perm(b, len(onnx_shape))
    return [i for i in pa if onnx_shape[i] != 1] == [i for i in pb if onnx_shape[i] != 1]


def between(src: str, dst: str, rank: int) -> tuple[int, ...]:
    """The TRANSPOSE perm taking a tensor in layout `src` to layout `dst`."""
    ps, pd = perm(src, rank), perm(dst, rank)
    inv = np.argsort(ps)
    return tuple(int(inv[i]) for i in pd)
