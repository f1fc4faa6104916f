"""Data movement on constant weights folded with numpy before Relax's FoldConstant sees it.

Relax's FoldConstant evaluates each foldable call by legalizing it and building the resulting TIR with
LLVM, one build per distinct shape: EfficientNet-Lite0 has ~65 weight tensors, each reshaped or transposed
by the ONNX frontend and again (OIHW -> HWIO) after ConvertLayout, so the two FoldConstant runs of the
NHWC pipeline built ~200 tiny LLVM modules (with the isnan/where of every Clip bound): 21 of the 22 CPU
seconds of lowering the model to fused TIR (measured at load 5 on 2 cores; 43 s wall). Transposes, reshapes,
dimension changes, casts, per-tensor or per-channel dequantization, isnan/where and float elementwise
arithmetic of constants are exact in numpy, so they are computed here; anything else is left to FoldConstant, which runs afterwards as before.
"""
from __future__ import annotations

import numpy as np

FLOAT_BINARY = {"relax.add": np.add, "relax.subtract": np.subtract, "relax.multiply": np.multiply,
                "relax.divide": np.divide}
# ops whose every argument is a tensor (the others take one tensor plus a shape / attributes)
ALL_ARGS = {*FLOAT_BINARY, "relax.dequantize", "relax.where"}
FOLDED = {*ALL_ARGS, "relax.permute_dims", "relax.reshape", "relax.expand_dims", "relax.squeeze", "relax.astype",
          "relax.isnan"}


def _array(e):
    import tvm

    if isinstance(e, tvm.ir.GenericConst) and isinstance(e.value, tvm.runtime.Tensor):
        return e.value.numpy()
    return None


def _ints(values) -> list[int] | None:
    try:
        return [int(v) for v in values]
    except (TypeError, ValueError):
        return None


def _evaluate(call, args: list[np.ndarray]):
    """numpy result of the call, or None when this op (or these attributes) is not one folded here."""
    op = call.op.name
    a = args[0]
    attrs = call.attrs
    if op == "relax.permute_dims":
        axes = None if attrs.axes is None else _ints(attrs.axes)
        return np.ascontiguousarray(np.transpose(a, axes))
    if op == "relax.reshape":
        shape = _ints(getattr(call.args[1], "values", ()) or ())
        return None if shape is None or int(np.prod(shape)) != a.size else a.reshape(shape)
    if op == "relax.expand_dims":
        axes = _ints(attrs.axis)
        return None if axes is None else np.expand_dims(a, tuple(axes))
    if op == "relax.squeeze":
        axes = None if attrs.axis is None else _ints(attrs.axis)
        return np.squeeze(a, None if axes is None else tuple(axes))
    if op == "relax.astype":
        dtype = str(attrs.dtype)
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            return None
        if dtype not in ("float32", "float64", "int8", "uint8", "int16", "int32", "int64"):
            return None
        if np.issubdtype(a.dtype, np.floating) and dtype.startswith(("int", "uint")):
            return None  # float -> int casts round toward zero in TIR; exactness of edge cases not checked here
        return a.astype(dtype)
    if op == "relax.dequantize" and len(args) == 3:
        scale, zp = args[1], args[2]
        if str(attrs.out_dtype) != "float32" or a.ndim == 0 and (scale.ndim or zp.ndim):
            return None
        axis = int(attrs.axis) % max(a.ndim, 1)
        shape = [1] * a.ndim
        if scale.ndim == 1 and a.ndim:
            shape[axis] = scale.shape[0]
        s = scale.astype(np.float32).reshape(shape if scale.ndim else ())
        z = zp.astype(np.int32).reshape(shape if zp.ndim else ())
        return ((a.astype(np.int32) - z).astype(np.float32) * s).astype(np.float32)
    if op == "relax.isnan":
        return np.isnan(a) if np.issubdtype(a.dtype, np.floating) else None
    if op == "relax.where" and len(args) == 3:
        x, y = args[1], args[2]
        return None if a.dtype != np.bool_ or x.dtype != y.dtype else np.where(a, x, y)
    if op in FLOAT_BINARY and len(args) == 2:
        b = args[1]
        if a.dtype != b.dtype or a.dtype not in (np.float32,):
            return None
        with np.errstate(all="ignore"):
            return FLOAT_BINARY[op](a, b).astype(a.dtype)
    return None


def fold(mod):
    """A copy of `mod` with the calls above folded in every Relax function (when all their tensor arguments
    are constants, directly or through a dataflow variable bound to one)."""
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    @mutator
    class Folder(PyExprMutator):
        def _const(self, e):
            if isinstance(e, relax.Var):
                e = self.lookup_binding(e)
            return _array(e) if e is not None else None

        def visit_call_(self, call):
            call = super().visit_call_(call)
            if not isinstance(call.op, tvm.ir.Op):
                return call
            name = call.op.name
            if name not in FOLDED:
                return call
            tensor_args = [call.args[0]] + (list(call.args[1:]) if name in ALL_ARGS else [])
            arrays = [self._const(a) for a in tensor_args]
            if any(x is None for x in arrays):
                return call
            try:
                out = _evaluate(call, arrays)
            except Exception:  # noqa: BLE001 - anything unexpected is FoldConstant's to fold
                return call
            if out is None:
                return call
            want = call.ty
            if getattr(want, "dtype", None) is not None and str(want.dtype) != str(out.dtype):
                return call
            shape = getattr(want, "shape", None)
            if shape is not None and _ints(getattr(shape, "values", ()) or ()) not in (list(out.shape), None):
                return call
            return relax.const(out, str(out.dtype))

    out = tvm.IRModule(mod.functions, attrs=mod.attrs)
    for gv, f in mod.functions.items():
        if isinstance(f, relax.Function):
            out[gv] = Folder().visit_expr(f)
    return out
