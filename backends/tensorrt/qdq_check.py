"""The Q/DQ rules TensorRT's ONNX parser enforces, checked on the ONNX before it reaches the builder.

TensorRT's explicit quantization takes symmetric quantization only: every QuantizeLinear /
DequantizeLinear has a constant, positive scale and a zero point of 0 in a signed 8-bit (or FP8/INT4)
type. TensorRT-RTX 1.7 rejects a uint8 zero point and an int32 DequantizeLinear (the int32 bias the
ONNX Runtime QDQ format stores: "input has type Int32 but must have type FP8, FP4, Int4, Int8, or
UInt8"), after a page of log. Checked here, the user gets one line naming the node instead, and a
model from another tool (onnxruntime's quantizer, NNCF) is caught as well as our own.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from edgec.core.errors import UnsupportedError

_T = onnx.TensorProto
_OK_TYPES = {_T.INT8: "int8", _T.FLOAT8E4M3FN: "float8e4m3fn", _T.INT4: "int4"}
_FIX = ("re-quantize it with edgec (--precision int8 on the FP32 model: symmetric int8, float bias) or with "
        "TensorRT's ModelOpt")


def _type_name(t: int) -> str:
    return _T.DataType.Name(t).lower()


def check(model: onnx.ModelProto) -> int:
    """Raise UnsupportedError on the first Q/DQ node TensorRT would reject; return the Q/DQ node count."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    consts = {n.output[0]: n for n in g.node if n.op_type == "Constant" and n.output}
    elem: dict[str, int] = {t.name: t.data_type for t in g.initializer}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        if vi.type.HasField("tensor_type"):
            elem.setdefault(vi.name, vi.type.tensor_type.elem_type)

    def value(name: str):
        if name in inits:
            return numpy_helper.to_array(inits[name])
        c = consts.get(name)
        if c is not None:
            for a in c.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        return None

    count = 0
    for node in g.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        count += 1
        where = f"{node.op_type} '{node.name or node.output[0]}'"
        scale = value(node.input[1]) if len(node.input) > 1 else None
        if scale is None:
            raise UnsupportedError(f"TensorRT cannot take {where}: its scale '{node.input[1]}' is computed at run "
                                   f"time; TensorRT needs a constant scale ({_FIX})")
        if not np.all(np.asarray(scale, np.float64) > 0):
            raise UnsupportedError(f"TensorRT cannot take {where}: its scale has a value <= 0; {_FIX}")
        zp_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if zp_name is not None:
            zp_type = elem.get(zp_name)
            if zp_type is None and zp_name in consts:
                zp_type = next((a.t.data_type for a in consts[zp_name].attribute if a.name == "value"), None)
            if zp_type is not None and zp_type not in _OK_TYPES:
                raise UnsupportedError(f"TensorRT cannot take {where}: zero point type {_type_name(zp_type)}; "
                                       f"TensorRT quantizes to signed int8 (or fp8/int4) only; {_FIX}")
            zp = value(zp_name)
            if zp is not None and np.any(np.asarray(zp).astype(np.int64) != 0):
                raise UnsupportedError(f"TensorRT cannot take {where}: a non-zero zero point (asymmetric "
                                       f"quantization); TensorRT quantization is symmetric; {_FIX}")
            if node.op_type == "QuantizeLinear" and zp_type is not None:
                elem[node.output[0]] = zp_type  # what a following DequantizeLinear reads
        if node.op_type == "DequantizeLinear":
            x_type = elem.get(node.input[0])
            if x_type is None and zp_name is None and node.input[0] in inits:
                x_type = inits[node.input[0]].data_type
            if x_type is not None and x_type not in _OK_TYPES:
                raise UnsupportedError(f"TensorRT cannot take {where}: its input '{node.input[0]}' is "
                                       f"{_type_name(x_type)} (TensorRT dequantizes int8/fp8/int4 only; an int32 "
                                       f"bias must stay float); {_FIX}")
        elif zp_name is None:
            raise UnsupportedError(f"TensorRT cannot take {where}: without a zero point ONNX quantizes to uint8; "
                                   f"TensorRT needs an int8 zero point of 0; {_FIX}")
    return count
