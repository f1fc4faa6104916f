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
        return {port: np.require(feeds[name], _np_dtype(feeds[name], spec.dtype), "C")
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

    has_throughput = True
    xml = None
    _tp = None

    def throughput(self, feeds, streams, *, iterations=None, duration=None, threads=None):
        """benchmark_app's throughput mode: the IR recompiled with the THROUGHPUT hint and NUM_STREAMS=streams
        (INFERENCE_NUM_THREADS = threads per stream x streams), `streams` requests kept in flight.

        Each request is waited on in turn and restarted at once (InferRequest.wait releases the GIL), not
        driven by AsyncInferQueue's Python callback: a callback needs the GIL from OpenVINO's thread while
        start_async holds it waiting for a free request, and the two deadlocked here. Latencies are each
        request's own (InferRequest.latency)."""
        import openvino as ov

        if self.xml is None:
            return None
        key = (streams, threads)
        if self._tp is None or self._tp[0] != key:
            core = ov.Core()
            props = {**self.config.properties(), "PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": int(streams)}
            if threads:
                props["INFERENCE_NUM_THREADS"] = int(threads) * int(streams)
            compiled = core.compile_model(core.read_model(str(self.xml)), self.config.device, props)
            ports = _match(compiled.inputs, [n for n, _ in self._in])
            self._tp = (key, compiled, [compiled.create_infer_request() for _ in range(int(streams))], ports)
        _, compiled, requests, ports = self._tp
        arrays = self._feeds(feeds)
        prepared = {port: arrays[old] for (_, port), (_, old) in zip(ports, self._in)}
        lat: list[float] = []
        busy = [False] * len(requests)
        t0 = time.perf_counter()
        t_end = None if duration is None else t0 + duration
        n = 0
        while (iterations is None or n < iterations) and (t_end is None or time.perf_counter() < t_end):
            k = n % len(requests)
            if busy[k]:
                requests[k].wait()
                lat.append(requests[k].latency / 1e3)
            requests[k].start_async(prepared)
            busy[k] = True
            n += 1
        for k, r in enumerate(requests):
            if busy[k]:
                r.wait()
                lat.append(r.latency / 1e3)
        wall = time.perf_counter() - t0
        try:
            got = int(compiled.get_property("NUM_STREAMS"))
        except Exception:
            got = streams
        plural = "s" if streams > 1 else ""
        return lat, wall, f"OpenVINO: {streams} async request{plural} in flight, NUM_STREAMS={got}, THROUGHPUT hint"

    def close(self) -> None:
        self._request = None
        self._tp = None
        self.compiled = None


def _np_dtype(value, name: str):
    """The numpy dtype `name`, or None (keep the feed's) when numpy has no such name: bfloat16 and the
    float8 types are ml_dtypes' dtypes, which numpy cannot look up by their name."""
    if getattr(getattr(value, "dtype", None), "name", None) == name:
        return None
    try:
        return np.dtype(name)
    except TypeError:
        return None
