"""The .tflite file itself: tensors, buffers, operator codes and operators, packed with the schema's
object API (`ai_edge_litert.schema_py_generated`) and `flatbuffers`.

Why our own builder and not a converter: the only ONNX -> TFLite converters (onnx2tf, onnx2tflite)
pin tensorflow and a dozen exact versions or are not on the package index; the schema is all a
writer needs. Facts the runtime insists on: buffer 0 is the empty sentinel, each operator code sets
`builtinCode` and (clamped to 127) `deprecatedBuiltinCode`, constant data is 16-byte aligned (the
TFLite converter's alignment; XNNPACK packs weights straight from the mapped file).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ai_edge_litert import schema_py_generated as S

TENSOR_TYPES = {np.dtype(np.float32): S.TensorType.FLOAT32, np.dtype(np.float16): S.TensorType.FLOAT16,
                np.dtype(np.int32): S.TensorType.INT32, np.dtype(np.uint8): S.TensorType.UINT8,
                np.dtype(np.int64): S.TensorType.INT64, np.dtype(np.bool_): S.TensorType.BOOL,
                np.dtype(np.int16): S.TensorType.INT16, np.dtype(np.int8): S.TensorType.INT8}
TYPE_NAMES = {v: k.name for k, v in TENSOR_TYPES.items()}
OP_NAMES = {v: k for k, v in vars(S.BuiltinOperator).items() if not k.startswith("_")}


@dataclass(frozen=True)
class QParams:
    """Affine quantization of one tensor: real = scale * (q - zero_point); `axis` for per-channel."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int = 0

    def broadcast(self, ndim: int) -> tuple[np.ndarray, np.ndarray]:
        """(scale, zero_point) as float32 arrays that broadcast against a tensor of rank `ndim`."""
        scale = np.asarray(self.scale, np.float32)
        zp = np.asarray(self.zero_point, np.float32)
        if scale.size > 1:
            shape = [1] * ndim
            shape[self.axis] = -1
            scale, zp = scale.reshape(shape), zp.reshape(shape)
        return scale, zp

    def same(self, other: "QParams | None") -> bool:
        return other is not None and np.allclose(self.scale, other.scale, rtol=1e-6, atol=0) and \
            tuple(self.zero_point) == tuple(other.zero_point)


class _AlignedBuffer(S.BufferT):
    def Pack(self, builder):
        data = None
        if self.data is not None:
            payload = self.data
            builder.StartVector(1, len(payload), 16)
            builder.head = builder.head - len(payload)
            builder.Bytes[builder.head:builder.head + len(payload)] = payload
            builder.vectorNumElems = len(payload)
            data = builder.EndVector()
        S.BufferStart(builder)
        if data is not None:
            S.BufferAddData(builder, data)
        return S.BufferEnd(builder)


class ModelWriter:
    """One subgraph; tensors and operators are appended in emission order, so the same ONNX gives
    the same bytes."""

    def __init__(self, description: str = "edgec"):
        self.description = description
        self.tensors: list[S.TensorT] = []
        self.buffers: list[S.BufferT] = [S.BufferT()]  # buffer 0: the empty sentinel
        self.opcodes: dict[int, int] = {}
        self.codes: list[S.OperatorCodeT] = []
        self.operators: list[S.OperatorT] = []
        self._const_cache: dict[tuple, int] = {}
        self._names: set[str] = set()

    def unique(self, name: str) -> str:
        base, i = name, 1
        while name in self._names:
            name = f"{base}_{i}"
            i += 1
        self._names.add(name)
        return name

    def tensor(self, name: str, shape, dtype, quant: QParams | None = None, data: np.ndarray | None = None,
               signature=None) -> int:
        t = S.TensorT()
        t.name = self.unique(name)
        t.shape = [int(d) for d in shape]
        if signature is not None and any(int(d) < 0 for d in signature):
            t.shapeSignature = [int(d) for d in signature]
        t.type = TENSOR_TYPES[np.dtype(dtype)]
        if data is not None:
            b = _AlignedBuffer()
            b.data = np.ascontiguousarray(data, dtype=dtype).tobytes()
            self.buffers.append(b)
            t.buffer = len(self.buffers) - 1
        else:
            t.buffer = 0
        if quant is not None:
            q = S.QuantizationParametersT()
            q.scale = [float(s) for s in quant.scale]
            q.zeroPoint = [int(z) for z in quant.zero_point]
            q.quantizedDimension = int(quant.axis)
            t.quantization = q
        self.tensors.append(t)
        return len(self.tensors) - 1

    def const(self, name: str, data: np.ndarray, quant: QParams | None = None) -> int:
        """A constant tensor; identical constants (shape, dtype, bytes, quantization) share one tensor."""
        data = np.asarray(data)
        key = (data.dtype.str, data.shape, data.tobytes(), quant)
        if key not in self._const_cache:
            self._const_cache[key] = self.tensor(name, data.shape, data.dtype, quant, data)
        return self._const_cache[key]

    def op(self, code: int, inputs, outputs, options_type: int = 0, options=None) -> int:
        if code not in self.opcodes:
            oc = S.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, 127)
            oc.version = 1
            self.codes.append(oc)
            self.opcodes[code] = len(self.codes) - 1
        o = S.OperatorT()
        o.opcodeIndex = self.opcodes[code]
        o.inputs = [int(i) for i in inputs]
        o.outputs = [int(i) for i in outputs]
        if options is not None:
            o.builtinOptionsType = options_type
            o.builtinOptions = options
        self.operators.append(o)
        return len(self.operators) - 1

    def finish(self, inputs, outputs) -> bytes:
        import flatbuffers

        sg = S.SubGraphT()
        sg.tensors, sg.operators, sg.name = self.tensors, self.operators, "main"
        sg.inputs, sg.outputs = [int(i) for i in inputs], [int(i) for i in outputs]
        m = S.ModelT()
        m.version = 3
        m.description = self.description
        m.operatorCodes = self.codes
        m.subgraphs = [sg]
        m.buffers = self.buffers
        builder = flatbuffers.Builder(1024 + sum(len(b.data or b"") + 16 for b in self.buffers))
        builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


def read(data: bytes) -> S.ModelT:
    """The schema's own reader: what the tests and the manifest audit use to list what was written."""
    return S.ModelT.InitFromPackedBuf(bytearray(data), 0)


def audit(data: bytes) -> dict:
    """Per-op types and per-tensor dtypes of a .tflite, read back from the file."""
    m = read(data)
    sg = m.subgraphs[0]
    codes = [OP_NAMES.get(max(c.builtinCode, c.deprecatedBuiltinCode), str(c.builtinCode)) for c in m.operatorCodes]
    ops: dict[str, int] = {}
    for o in sg.operators:
        ops[codes[o.opcodeIndex]] = ops.get(codes[o.opcodeIndex], 0) + 1
    dtypes: dict[str, int] = {}
    act: dict[str, int] = {}
    for t in sg.tensors:
        name = TYPE_NAMES.get(t.type, str(t.type))
        dtypes[name] = dtypes.get(name, 0) + 1
        if t.buffer == 0 or m.buffers[t.buffer].data is None:
            act[name] = act.get(name, 0) + 1
    return {"operators": len(sg.operators), "op_types": dict(sorted(ops.items())),
            "tensor_dtypes": dict(sorted(dtypes.items())), "activation_dtypes": dict(sorted(act.items()))}
