"""A compiled OpenVINO model behind edgec's `Runner` interface, keyed by the ONNX tensor names."""
from __future__ import annotations

import time
from typing import Mapping, Sequence

import numpy as np

from edgec.core.backend import Runner, TensorSpec
from edgec.core.errors import InputError

_OV_TO_NUMPY = {"f32": "float32", "f16": "float16", "bf16": "float32", "f64": "float64", "i64": "int64",
                "i32": "int32", "i16": "int16", "i8": "int8", "u8": "uint8", "u16": "uint16", "u32": "uint32",
                "u64": "uint64", "boolean": "bool"}


def _spec(port, name: str) -> TensorSpec:
    ps = port.get_partial_shape()
    shape = () if ps.rank.is_dynamic else tuple(d.get_length() if d.is_static else "?" for d in ps)
    return TensorSpec(name, _OV_TO_NUMPY.get(port.get_element_type().get_type_name(), "float32"), shape)


def _match(ports, names: Sequence[str] | None, optional: bool = False) -> list[tuple[str, object]]:
    """Pair each wanted ONNX name with the compiled port carrying it (OpenVINO keeps ONNX tensor names
    as port names). Position is the fallback only when the counts agree (names lost in a transformation).
    With `optional` (inputs), a name with no port is an input the graph never reads, which OpenVINO
    drops: it stays in the artifact's interface, and its feed is accepted and ignored."""
    ports = list(ports)
    if not names:
        return [(p.get_any_name(), p) for p in ports]
    pairs = []
    for i, name in enumerate(names):
        port = next((p for p in ports if name in p.get_names()), None)
        if port is None and len(ports) == len(names):
            port = ports[i]
        if port is None and not optional:
            raise InputError(f"OpenVINO model has no tensor '{name}'; the artifact does not match its manifest")
        pairs.append((name, port))
    return pairs


class OpenVINORunner(Runner):
    def __init__(self, compiled_model, config, input_names=None, output_names=None, compile_s: float = 0.0,
                 input_dtypes: Mapping[str, str] | None = None):
        self.compiled = compiled_model
        self.config = config
        self.threads = config.threads
        self.compile_s = compile_s
        self._in = _match(compiled_model.inputs, input_names, optional=True)
        self._out = _match(compiled_model.outputs, output_names)
        dtypes = dict(input_dtypes or {})
        self.inputs = [_spec(p, n) if p is not None else TensorSpec(n, dtypes.get(n, "float32"), ()) for n, p in self._in]
        self.outputs = [_spec(p, n) for n, p in self._out]
        self._request = compiled_model.create_infer_request()

    def _feeds(self, feeds: Mapping[str, np.ndarray]) -> dict:
        missing = [s.name for s in self.inputs if s.name not in feeds]
        if missing:
            raise InputError(f"missing input '{missing[0]}' (model inputs: {', '.join(s.name for s in self.inputs)})")
        # np.require, not ascontiguousarray: that one turns a 0-d (scalar) input into shape [1].
        return {port: np.require(feeds[name], spec.dtype, "C")
                for (name, port), spec in zip(self._in, self.inputs) if port is not None}

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = self._request.infer(self._feeds(feeds))
        # Copies: the request reuses its output buffers on the next call.
        return {name: np.array(result[port]) for name, port in self._out}

    def time_once(self, feeds: Mapping[str, np.ndarray]) -> float:
        """Time the inference alone: inputs prepared beforehand, outputs left in OpenVINO's buffers."""
        prepared = self._feeds(feeds)
        t0 = time.perf_counter()
        self._request.infer(prepared, share_inputs=True, share_outputs=True)
        return time.perf_counter() - t0

    def close(self) -> None:
        self._request = None
        self.compiled = None
