"""ONNX graph -> one TFLite subgraph: tensor bookkeeping, layouts, Q/DQ folding and op dispatch.

The ops themselves live in `ops/` (one module per family), registered by ONNX op type. Each handler
asks this object for its inputs in the layout it wants (`inp`) and for its outputs (`out`); it never
sees the Q/DQ nodes of a quantized model: `quant.fold` has turned them into quantization parameters
on the tensors, so a handler writes an integer kernel when its tensors are integer and a float one
otherwise. A handler registered without int8 support that meets integer tensors runs as a float
island (DEQUANTIZE in, QUANTIZE out), which the manifest's op audit shows.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from ai_edge_litert import schema_py_generated as S

from edgec.core.errors import UnsupportedError
from edgec.core.quantization.graph import input_readers

from . import layout as L
from .writer import ModelWriter, QParams

BOP = S.BuiltinOperator
BO = S.BuiltinOptions
_FLOAT = (np.dtype(np.float32), np.dtype(np.float16))


@dataclass
class Handler:
    fn: object
    int8: object  # bool, or (g, node) -> bool: the TFLite int8 kernel exists and the handler writes it


HANDLERS: dict[str, Handler] = {}


def handler(*op_types: str, int8=True):
    def deco(fn):
        for t in op_types:
            HANDLERS[t] = Handler(fn, int8)
        return fn
    return deco


def unsupported(node, what: str) -> UnsupportedError:
    return UnsupportedError(f"tflite: node '{node.name or node.output[0]}' ({node.op_type}): {what} is not lowered; "
                            "re-export the model without it or use another backend")


def attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


@dataclass
class LowerOptions:
    io_layout: str = "nhwc"
    fp16_weights: bool = False  # fp16: weights stored as float16 + DEQUANTIZE
    io_dtype: str = "float"  # float | int8 | uint8 (int8 models: the file's own I/O type)


@dataclass
class IOEntry:
    name: str  # ONNX name
    tensor: str  # TFLite tensor name
    layout: str
    dtype: str
    shape: list
    onnx_shape: list
    scale: float | None = None
    zero_point: int | None = None

    def to_json(self):
        return {k: v for k, v in self.__dict__.items() if v is not None}


class Lowering:
    def __init__(self, model: onnx.ModelProto, options: LowerOptions, folded):
        self.model = model
        self.opts = options
        self.w = ModelWriter(description="edgec ONNX->TFLite")
        g = model.graph
        self.shapes: dict[str, tuple] = {}
        self.dtypes: dict[str, np.dtype] = {}
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            tt = vi.type.tensor_type
            if tt.HasField("shape"):
                self.shapes[vi.name] = tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in tt.shape.dim)
            if tt.elem_type:
                self.dtypes[vi.name] = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))
        self.consts: dict[str, np.ndarray] = {}
        for t in g.initializer:
            self.consts[t.name] = numpy_helper.to_array(t)
        self.nodes = folded.nodes
        self.qparams: dict[str, QParams] = dict(folded.qparams)  # activations (per tensor)
        self.qconsts: dict[str, tuple[np.ndarray, QParams]] = dict(folded.qconsts)  # integer constants
        for name, (arr, _) in self.qconsts.items():
            self.shapes.setdefault(name, arr.shape)
        for name, dt in folded.dtypes.items():
            self.dtypes[name] = dt
        for n in self.nodes:
            if n.op_type == "Constant":
                v = attr(n, "value")
                if v is not None:
                    self.consts[n.output[0]] = numpy_helper.to_array(v)
        for k, v in self.consts.items():
            self.shapes.setdefault(k, v.shape)
            self.dtypes.setdefault(k, v.dtype)
        self.consumers = input_readers(self.nodes)
        self.graph_outputs = [o.name for o in g.output]
        self.mat: dict[tuple[str, str], int] = {}  # (onnx name, layout) -> tflite tensor
        self.made_in: dict[str, str] = {}  # onnx name -> layout it was produced in
        self.transposed: dict[int, tuple[int, tuple]] = {}  # tflite tensor made by TRANSPOSE: (src, perm)
        self.alias: dict[str, str] = {}
        self.fused: set[int] = set()
        self.float_view: dict[str, str] | None = None
        self.pending_q: list[tuple[int, str, str]] = []
        self.float_islands: list[str] = []
        self.io: dict[str, list[IOEntry]] = {"inputs": [], "outputs": []}

    # ------------------------------------------------------------ tensor queries
    def name(self, n: str) -> str:
        while n in self.alias:
            n = self.alias[n]
        return n

    def shape(self, n: str) -> tuple:
        n = self.name(n)
        if n not in self.shapes or any(d < 0 for d in self.shapes[n]):
            raise UnsupportedError(f"tflite: tensor '{n}' has no static shape after shape inference; "
                                   "give the model static input shapes (or -O batch=N)")
        return self.shapes[n]

    def rank(self, n: str) -> int:
        return len(self.shape(n))

    def is_const(self, n: str) -> bool:
        n = self.name(n)
        return n in self.consts or n in self.qconsts

    def value(self, n: str) -> np.ndarray | None:
        """A constant's float (or integer) value, dequantized when it is stored quantized."""
        n = self.name(n)
        if n in self.consts:
            return self.consts[n]
        if n in self.qconsts:
            q, p = self.qconsts[n]
            return dequantize(q, p)
        return None

    def q(self, n: str) -> QParams | None:
        n = self.name(n)
        if n in self.qparams:
            return self.qparams[n]
        if n in self.qconsts:
            return self.qconsts[n][1]
        return None

    def dtype(self, n: str) -> np.dtype:
        n = self.name(n)
        if n in self.qconsts:
            return self.qconsts[n][0].dtype
        return self.dtypes.get(n, np.dtype(np.float32))

    def layout_of(self, n: str) -> str:
        return self.made_in.get(self.name(n), L.ONNX)

    # ------------------------------------------------------------ tensor creation
    def inp(self, node, i: int, layout: str | None = None, *, quantize_like: str | None = None) -> int:
        """TFLite tensor for input `i` of `node`, in `layout` (None: as it was made)."""
        n = self.name(node.input[i])
        if self.float_view is not None and n in self.float_view and not self.is_const(n):
            n = self.float_view[n]
        if self.is_const(n):  # constants broadcast: laid out for the rank-4 tensor they meet
            lay = layout or L.ONNX
            return self.const_input(n, lay, 4 if lay == L.NHWC else len(self.shape(n)), quantize_like=quantize_like)
        rank = len(self.shape(n))
        if layout is None or rank != 4:
            layout = self.layout_of(n) if rank == 4 and layout is None else (layout if rank == 4 else L.ONNX)
        return self.get(n, layout)

    def const_input(self, n: str, layout: str, rank: int, *, quantize_like: str | None = None) -> int:
        quantized = self.float_view is None and (quantize_like is not None or n in self.qconsts)
        if n in self.qconsts and quantized:
            arr, p = self.qconsts[n]
            laid = L.data(arr, layout, rank)
            axis = p.axis + laid.ndim - arr.ndim  # L.data prepends ones to broadcast
            p = QParams(p.scale, p.zero_point, L.axis(axis, laid.ndim, layout) if arr.ndim else 0)
            return self.w.const(n, laid, p)
        value = self.value(n)
        if quantize_like is not None and self.float_view is None and value.dtype.kind == "f":
            ref = self.q(quantize_like)
            if ref is not None:
                arr, p = quantize_tensor(value, self.dtype(quantize_like))
                return self.w.const(n, L.data(arr, layout, rank), p)
        if value.dtype == np.float64:
            value = value.astype(np.float32)
        if value.dtype == np.int64:
            value = value.astype(np.int32)
        return self.w.const(n, L.data(value, layout, rank))

    def get(self, n: str, layout: str) -> int:
        """An activation in `layout`, transposing (once, cached) from the layout it was made in."""
        key = (n, layout)
        if key in self.mat:
            return self.mat[key]
        src_layout = self.made_in.get(n)
        if src_layout is None:
            raise UnsupportedError(f"tflite: tensor '{n}' is read before any node produces it (unsupported graph)")
        src = self.mat[(n, src_layout)]
        shp = self.shape(n)
        if L.same_bytes(shp, src_layout, layout):
            idx = self.tensor(n + f"/{layout}", L.shape(shp, layout), n)
            self.emit_reshape(src, idx, L.shape(shp, layout))
        else:
            p = L.between(src_layout, layout, len(shp))
            # A chain of transposes collapses into one from the original tensor.
            if src in self.transposed:
                src0, p0 = self.transposed[src]
                p = tuple(p0[j] for j in p)
                src = src0
            idx = self.tensor(n + f"/{layout}", L.shape(shp, layout), n)
            self.emit(BOP.TRANSPOSE, [src, self.w.const(f"{n}/perm", np.array(p, np.int32))], [idx])
            self.transposed[idx] = (src, p)
        self.mat[key] = idx
        return idx

    def tensor(self, label: str, shape, like: str | None = None, dtype=None, quant: QParams | None = None) -> int:
        """A new activation tensor; dtype and quantization follow `like` unless given."""
        if like is not None:
            dtype = dtype or self.dtype(like)
            quant = quant if quant is not None else self.q(like)
        return self.w.tensor(label, shape, dtype or np.float32, quant)

    def out(self, node, i: int = 0, layout: str = L.ONNX, *, name: str | None = None) -> int:
        """The TFLite tensor node output `i` is written to (its layout recorded for the readers)."""
        n = self.name(name or node.output[i])
        rank = len(self.shape(n))
        layout = layout if rank == 4 else L.ONNX
        if self.float_view is not None and n in self.float_view:
            real = n
            n = self.float_view[n]
            idx = self.w.tensor(n, L.shape(self.shape(real), layout), np.float32)
            self.pending_q.append((idx, real, layout))
            return idx
        idx = self.tensor(n, L.shape(self.shape(n), layout), n)
        self.mat[(n, layout)] = idx
        self.made_in[n] = layout
        return idx

    def alias_output(self, node, i: int, src: str) -> None:
        """Output `i` is the same tensor as `src` (Identity, a no-op Reshape)."""
        self.alias[node.output[i]] = self.name(src)

    def weight(self, n: str) -> tuple[np.ndarray, QParams | None]:
        """A weight's stored integers and parameters (int8 / hybrid kernels) or its float value."""
        n = self.name(n)
        if self.float_view is None and n in self.qconsts:
            return self.qconsts[n]
        v = self.value(n)
        if v is None:
            raise UnsupportedError(f"tflite: weight '{n}' is not a constant (computed weights are not lowered)")
        return v.astype(np.float32), None

    def weight_tensor(self, label: str, arr: np.ndarray, q: QParams | None) -> int:
        """A constant operand of a weighted op; fp16 stores float16 with a DEQUANTIZE, as TFLite's
        converter does (XNNPACK folds the pair back to fp32 weights when it packs them)."""
        if q is not None or arr.dtype.kind != "f":
            return self.w.const(label, arr, q)
        if self.opts.fp16_weights:
            h = self.w.const(label + "/fp16", arr.astype(np.float16))
            f = self.w.tensor(label, arr.shape, np.float32)
            self.emit(BOP.DEQUANTIZE, [h], [f])
            return f
        return self.w.const(label, arr.astype(np.float32))

    # ------------------------------------------------------------ emission helpers
    def emit(self, code, inputs, outputs, options_type=0, options=None) -> int:
        return self.w.op(code, inputs, outputs, options_type, options)

    def emit_reshape(self, src: int, dst: int, shape) -> None:
        o = S.ReshapeOptionsT()
        o.newShape = [int(d) for d in shape]
        self.emit(BOP.RESHAPE, [src, self.w.const("shape", np.array(shape, np.int32))], [dst], BO.ReshapeOptions, o)

    def requantize_to(self, src: int, src_q: QParams | None, target_q: QParams | None, shape, label: str,
                      dtype) -> int:
        """`src` re-expressed with `target_q` (a QUANTIZE int8 -> int8) when the scales differ."""
        if src_q is None or target_q is None or src_q.same(target_q):
            return src
        idx = self.w.tensor(label + "/requant", shape, dtype, target_q)
        self.emit(BOP.QUANTIZE, [src], [idx])
        return idx

    def same_scale_out(self, node, in_name: str, i: int = 0, layout: str = L.ONNX) -> tuple[int, callable]:
        """For ops whose TFLite int8 kernel needs output scale == input scale (pools, shape ops): the
        tensor to write, and a function to call after the op that re-quantizes into the real output."""
        real = self.out(node, i, layout)
        qi, qo = self.q(in_name), self.q(node.output[i])
        if self.float_view is not None or qi is None or qo is None or qi.same(qo):
            return real, lambda: None
        shp = self.w.tensors[real].shape
        tmp = self.w.tensor(self.name(node.output[i]) + "/in_scale", shp, self.dtype(in_name), qi)
        return tmp, lambda: self.emit(BOP.QUANTIZE, [tmp], [real])

    def fused_activation(self, node, i: int = 0):
        """(fusedActivationFunction, name of the tensor the op should write): a Relu / Relu6 / Clip that
        alone reads this output is folded into the producing op, as TFLite's converter does."""
        out = node.output[i]
        readers = self.consumers.get(out, [])
        if len(readers) != 1 or out in self.graph_outputs:
            return S.ActivationFunctionType.NONE, out
        act = readers[0]
        code = activation_code(self, act)
        if code is None or self.name(act.input[0]) != self.name(out):
            return S.ActivationFunctionType.NONE, out
        if (self.q(out) is None) != (self.q(act.output[0]) is None):
            return S.ActivationFunctionType.NONE, out
        self.fused.add(id(act))
        self.alias[out] = act.output[0]
        return code, act.output[0]

    # ------------------------------------------------------------ the walk
    def run(self) -> bytes:
        inputs = self._graph_inputs()
        for node in self.nodes:
            if id(node) in self.fused or node.op_type == "Constant":
                continue
            h = HANDLERS.get(node.op_type)
            if h is None:
                raise UnsupportedError(f"tflite: node '{node.name or node.output[0]}' has op type {node.op_type!r}, which the "
                                       f"TFLite backend does not lower (supported: {', '.join(sorted(HANDLERS))})")
            if node.domain not in ("", "ai.onnx"):
                raise unsupported(node, f"domain {node.domain!r}")
            self._dispatch(node, h)
        outputs = self._graph_outputs()
        return self.w.finish(inputs, outputs)

    def _dispatch(self, node, h: Handler) -> None:
        acts = [self.name(x) for x in list(node.input) + list(node.output) if x and not self.is_const(x)]
        acts = [x for x in acts if self.dtype(x).kind == "f" or self.q(x) is not None]
        quantized = [x for x in acts if self.q(x) is not None]
        int8 = h.int8(self, node) if callable(h.int8) else h.int8
        if int8 == "any" or not quantized or (int8 and len(quantized) == len(acts)):
            h.fn(self, node)
            return
        # Float island: integer tensors are read through DEQUANTIZE and written through QUANTIZE.
        self.float_islands.append(f"{node.name} ({node.op_type})")
        view = {}
        for x in quantized:
            view[x] = x + "/float"
            self.shapes[x + "/float"] = self.shapes[x]
        for x in node.input:
            x = self.name(x)
            if x in quantized and not self.is_const(x) and x in self.made_in:
                lay = self.made_in[x]
                f = self.w.tensor(x + "/float", L.shape(self.shape(x), lay), np.float32)
                self.emit(BOP.DEQUANTIZE, [self.get(x, lay)], [f])
                self.mat[(x + "/float", lay)] = f
                self.made_in[x + "/float"] = lay
        self.float_view = view
        self.pending_q = []
        try:
            h.fn(self, node)
        finally:
            self.float_view = None
        for idx, real, lay in self.pending_q:
            dst = self.tensor(real, L.shape(self.shape(real), lay), real)
            self.emit(BOP.QUANTIZE, [idx], [dst])
            self.mat[(real, lay)] = dst
            self.made_in[real] = lay

    def _graph_inputs(self) -> list[int]:
        init = set(self.consts)
        out = []
        for vi in self.model.graph.input:
            if vi.name in init:
                continue
            shp = self.shape(vi.name)
            lay = L.NHWC if len(shp) == 4 and self._wants_nhwc(vi.name) and self.opts.io_layout == "nhwc" else L.ONNX
            idx = self.tensor(vi.name, L.shape(shp, lay), vi.name)
            self.mat[(vi.name, lay)] = idx
            self.made_in[vi.name] = lay
            idx = self._uint8_edge(idx, vi.name, into=True)
            out.append(idx)
            self.io["inputs"].append(self._io_entry(vi.name, idx, lay))
        return out

    def _wants_nhwc(self, name: str) -> bool:
        """An image input read by convolutions (possibly after elementwise preprocessing), not a
        rank-4 tensor the graph itself transposes or reshapes."""
        readers = self.consumers.get(name, [])
        return bool(readers) and all(r.op_type not in ("Transpose", "Reshape", "Flatten", "MatMul", "Gemm")
                                     for r in readers)

    def _graph_outputs(self) -> list[int]:
        out = []
        for name in self.graph_outputs:
            n = self.name(name)
            made = self.made_in.get(n)
            if made is None:
                raise UnsupportedError(f"tflite: graph output '{name}' is not computed by any lowered node")
            want = made if self.opts.io_layout == "nhwc" else L.ONNX
            idx = self._uint8_edge(self.get(n, want), name, into=False)
            out.append(idx)
            self.io["outputs"].append(self._io_entry(name, idx, want))
        return out

    def _uint8_edge(self, idx: int, name: str, into: bool) -> int:
        """-O io=uint8: a uint8 twin of an int8 graph input/output (zero point + 128, same scale) joined
        by a QUANTIZE, as TFLite's converter writes inference_input_type=uint8."""
        t = self.w.tensors[idx]
        if self.opts.io_dtype != "uint8" or t.type != S.TensorType.INT8 or t.quantization is None:
            return idx
        q = QParams(tuple(t.quantization.scale), tuple(z + 128 for z in t.quantization.zeroPoint))
        u = self.w.tensor(name + "/uint8", t.shape, np.uint8, q)
        self.emit(BOP.QUANTIZE, [u] if into else [idx], [idx] if into else [u])
        return u

    def _io_entry(self, name: str, idx: int, lay: str) -> IOEntry:
        t = self.w.tensors[idx]
        q = t.quantization
        scale = float(q.scale[0]) if q is not None and q.scale else None
        zp = int(q.zeroPoint[0]) if q is not None and q.zeroPoint else None
        from .writer import TYPE_NAMES
        return IOEntry(name, t.name, lay, TYPE_NAMES[t.type], list(t.shape), list(self.shape(name)), scale, zp)


def activation_code(g: Lowering, node):
    """The fusedActivationFunction a standalone activation node amounts to, or None."""
    A = S.ActivationFunctionType
    if node.op_type == "Relu":
        return A.RELU
    if node.op_type == "Clip":
        lo, hi = clip_bounds(g, node)
        if lo is None:
            return None
        return {(0.0, 6.0): A.RELU6, (0.0, float("inf")): A.RELU, (-1.0, 1.0): A.RELU_N1_TO_1}.get((lo, hi))
    return None


def clip_bounds(g: Lowering, node):
    """(min, max) of a Clip as floats, or (None, None) when they are not constants."""
    lo, hi = attr(node, "min", -np.inf), attr(node, "max", np.inf)
    for i in (1, 2):
        if len(node.input) > i and node.input[i]:
            v = g.value(node.input[i])
            if v is None:
                return None, None
            if i == 1:
                lo = float(np.asarray(v).reshape(()))
            else:
                hi = float(np.asarray(v).reshape(()))
    return float(lo), float(hi)


def dequantize(q: np.ndarray, p: QParams) -> np.ndarray:
    scale, zp = p.broadcast(q.ndim)
    return ((q.astype(np.float32) - zp) * scale).astype(np.float32)


def quantize_tensor(value: np.ndarray, dtype) -> tuple[np.ndarray, QParams]:
    """A float constant as a per-tensor asymmetric integer constant (operands the core left float)."""
    dtype = np.dtype(dtype)
    info = np.iinfo(dtype)
    lo, hi = min(float(value.min()), 0.0), max(float(value.max()), 0.0)
    scale = (hi - lo) / (info.max - info.min) or 1.0
    zp = int(np.clip(round(info.min - lo / scale), info.min, info.max))
    q = np.clip(np.round(value / scale) + zp, info.min, info.max).astype(dtype)
    return q, QParams((scale,), (zp,))
