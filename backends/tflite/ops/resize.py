"""Resize (nearest, bilinear) as RESIZE_NEAREST_NEIGHBOR / RESIZE_BILINEAR over H and W.

ONNX's coordinate transformations map onto TFLite's two flags: half_pixel / pytorch_half_pixel ->
half_pixel_centers, align_corners -> align_corners, asymmetric -> neither; the tests compare each
accepted combination with onnxruntime."""
from __future__ import annotations

import numpy as np

from .. import layout as L
from ..lower import BO, BOP, S, attr, handler, unsupported


def _s(v):
    return v.decode() if isinstance(v, bytes) else v


_NEAREST = {("asymmetric", "floor"): (False, False), ("half_pixel", "round_prefer_floor"): (False, True),
            ("half_pixel", "round_prefer_ceil"): (False, True), ("pytorch_half_pixel", "round_prefer_floor"): (False, True),
            ("align_corners", "round_prefer_ceil"): (True, False)}
_LINEAR = {"half_pixel": (False, True), "pytorch_half_pixel": (False, True), "align_corners": (True, False),
           "asymmetric": (False, False)}


@handler("Resize", "Upsample")
def resize(g, node):
    n = g.name(node.input[0])
    if g.rank(n) != 4:
        raise unsupported(node, "a non-4-D input")
    in_shape, out_shape = g.shape(n), g.shape(node.output[0])
    if in_shape[:2] != out_shape[:2]:
        raise unsupported(node, "resizing the batch or channel axis")
    mode = _s(attr(node, "mode", "nearest"))
    ctm = _s(attr(node, "coordinate_transformation_mode", "half_pixel" if node.op_type == "Resize" else "asymmetric"))
    if node.op_type == "Upsample":
        ctm = "asymmetric"
    if mode == "nearest":
        nm = _s(attr(node, "nearest_mode", "round_prefer_floor" if node.op_type == "Resize" else "floor"))
        if node.op_type == "Upsample":
            nm = "floor"
        flags = _NEAREST.get((ctm, nm))
        if flags is None:
            raise unsupported(node, f"coordinate_transformation_mode={ctm!r} with nearest_mode={nm!r}")
        code, ot, o = BOP.RESIZE_NEAREST_NEIGHBOR, BO.ResizeNearestNeighborOptions, S.ResizeNearestNeighborOptionsT()
    elif mode in ("linear", "bilinear"):
        flags = _LINEAR.get(ctm)
        if flags is None:
            raise unsupported(node, f"coordinate_transformation_mode={ctm!r}")
        if attr(node, "antialias", 0):
            raise unsupported(node, "attribute antialias=1")
        code, ot, o = BOP.RESIZE_BILINEAR, BO.ResizeBilinearOptions, S.ResizeBilinearOptionsT()
    else:
        raise unsupported(node, f"attribute mode={mode!r}")
    if ctm == "pytorch_half_pixel" and min(out_shape[2:]) == 1:
        raise unsupported(node, "pytorch_half_pixel to an output of size 1")
    o.alignCorners, o.halfPixelCenters = flags
    x = g.inp(node, 0, L.NHWC)
    y, finish = g.same_scale_out(node, n, 0, L.NHWC)
    g.emit(code, [x, g.w.const("size", np.array(out_shape[2:], np.int32))], [y], ot, o)
    finish()
