"""Pipeline choice: convolutions in NHWC with HWIO weights before legalization.

With channels innermost, every convolution's output-channel loop is contiguous in its output, its
weights and (for depthwise) its input, so one schedule shape -- vectorize along output channels --
serves pointwise (a GEMM), depthwise (any stride) and the dense stem alike (see schedules/). In NCHW
the vector axis would be the image width: strided for stride-2 depthwise convs and not a multiple of
the vector width at 7x7 or 14x14.

Relax's ConvertLayout cannot see through the ONNX frontend's Clip, which it emits as `call_tir` of
TOPI maximum/minimum with a scalar bound: every ReLU6 would be wrapped in a pair of transposes and
split from its convolution's fusion group. `clip_as_relax_ops` turns those calls back into Relax
`maximum`/`minimum` ops, which ConvertLayout and FuseOps understand. Relax's `quantize`/`dequantize`
have no layout inference either (every activation Q/DQ pair of an int8 model sat between two transposes,
12 ms of a 26 ms EfficientNet-Lite0 run), so `qdq_as_elementwise` spells per-tensor Q/DQ as the same
elementwise arithmetic their legalization emits.
"""
from __future__ import annotations

import re

_CLIP_FUNC = re.compile(r"^(maximum|minimum)\d*$")


def clip_as_relax_ops(mod):
    """Replace `call_tir(maximum|minimum, (x, scalar))` by `R.maximum|R.minimum(x, scalar)`.

    Only calls whose PrimFunc is TOPI's elementwise max/min with a 0-d second operand are touched (the
    frontend's Clip); anything else is left as it is."""
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    call_tir = tvm.ir.Op.get("relax.call_tir")

    def scalar_minmax(call) -> str | None:
        gv = call.args[0]
        m = _CLIP_FUNC.match(gv.name_hint)
        if m is None or not isinstance(mod.functions.get(gv), tvm.tirx.PrimFunc):
            return None
        args = call.args[1].fields if isinstance(call.args[1], relax.Tuple) else ()
        if len(args) != 2:
            return None
        x, bound = (a.ty for a in args)
        if getattr(bound, "ndim", -1) != 0 or _shape(x) is None or _shape(x) != _shape(call.ty):
            return None
        return m.group(1)

    @mutator
    class Rewriter(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if call.op.same_as(call_tir) and isinstance(call.args[0], tvm.ir.GlobalVar):
                kind = scalar_minmax(call)
                if kind:
                    x, bound = call.args[1].fields
                    return (relax.op.maximum if kind == "maximum" else relax.op.minimum)(x, bound)
            return call

    return relax.transform.DeadCodeElimination()(_rewrite_relax_functions(mod, Rewriter))


def qdq_as_elementwise(mod):
    """Per-tensor (0-d scale and zero point) `quantize`/`dequantize` as Relax elementwise ops, term for
    term what `legalize_ops/qdq.py` computes: quantize = astype(max(min(round(x / s) + zp, hi), lo)),
    dequantize = astype(astype(q, int32) - zp, float32) * s. Per-channel ones are left as they are."""
    import numpy as np
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    quantize, dequantize = tvm.ir.Op.get("relax.quantize"), tvm.ir.Op.get("relax.dequantize")

    def scalar(e) -> bool:
        return getattr(e.ty, "ndim", -1) == 0

    @mutator
    class Rewriter(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if not (call.op.same_as(quantize) or call.op.same_as(dequantize)) or len(call.args) != 3:
                return call
            x, scale, zp = call.args
            out_dtype = str(call.attrs.out_dtype)
            if not (scalar(scale) and scalar(zp)):
                return call
            R = relax.op
            if call.op.same_as(quantize):
                if str(x.ty.dtype) != "float32" or not out_dtype.startswith(("int", "uint")):
                    return call
                info = np.iinfo(out_dtype)
                v = R.add(R.round(R.divide(x, R.astype(scale, "float32"))), R.astype(zp, "float32"))
                v = R.maximum(R.minimum(v, relax.const(float(info.max), "float32")), relax.const(float(info.min), "float32"))
                return R.astype(v, out_dtype)
            if out_dtype != "float32" or not str(x.ty.dtype).startswith(("int", "uint")):
                return call
            return R.multiply(R.astype(R.subtract(R.astype(x, "int32"), R.astype(zp, "int32")), "float32"),
                              R.astype(scale, "float32"))

    return _rewrite_relax_functions(mod, Rewriter)


def _rewrite_relax_functions(mod, rewriter):
    """A copy of `mod` with every Relax function visited by a fresh `rewriter` (a PyExprMutator)."""
    import tvm
    from tvm import relax

    out = tvm.IRModule(mod.functions, attrs=mod.attrs)
    for gv, f in mod.functions.items():
        if isinstance(f, relax.Function):
            out[gv] = rewriter().visit_expr(f)
    return out


def _shape(ty):
    try:
        return [int(d) for d in ty.shape], str(ty.dtype)
    except (TypeError, AttributeError, ValueError):
        return None


def to_nhwc(mod):
    """Convolutions to NHWC/HWIO, layout changes folded into the constant weights and cancelled between
    neighbouring ops; only the graph's input and output keep one transpose each."""
    from tvm import relax

    from edgec.backends.tvm.constfold import fold

    # weight Q/DQ folds here, before the rewrite below; numpy first (constfold.py: FoldConstant builds
    # one LLVM module per folded call, ~130 for EfficientNet-Lite0)
    mod = relax.transform.FoldConstant()(fold(mod))
    mod = qdq_as_elementwise(clip_as_relax_ops(mod))
    mod = relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "HWIO"]})(mod)
    return relax.transform.FoldConstant()(fold(mod))
