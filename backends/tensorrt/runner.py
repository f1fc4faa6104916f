"""Runners: the engine on a GPU, or (build-only hosts) the exact ONNX the engine was built from.

The GPU runner moves buffers with cuda-bindings (`cuda.bindings.runtime`), NVIDIA's maintained
low-level CUDA bindings: a 7.6 MB wheel with no CUDA toolkit or torch dependency, the same calls
TensorRT's own samples use. Polygraphy's TrtRunner was the alternative, but it imports `tensorrt`
and so cannot drive a TensorRT-RTX engine, and brings its own lazy-import machinery for one use.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from edgec.core.backend import Runner, TensorSpec
from edgec.core.errors import BackendError, InputError


def _check(result, what: str):
    """cuda-bindings returns (error,) or (error, value): raise on an error, return the value."""
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise BackendError(f"CUDA {what} failed: {getattr(err, 'name', err)}")
    return rest[0] if len(rest) == 1 else (tuple(rest) or None)


class EngineRunner(Runner):
    """A deserialized engine with one execution context and one CUDA stream (explicit I/O, enqueueV3)."""

    def __init__(self, trt, plan_path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec], logger,
                 runtime_cache: Path | None = None):
        from cuda.bindings import runtime as cudart

        self.cudart, self.trt = cudart, trt
        self.runtime = trt.Runtime(logger)
        self.engine = self.runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
        if self.engine is None:
            errors = logger.errors()
            why = ((errors[-1] if errors else "").strip().splitlines() or ["no reason logged"])[0][:300]
            raise BackendError(f"TensorRT could not load {plan_path}: {why}"
                               "; engines are tied to a TensorRT version and GPU: rebuild from model.onnx on this machine")
        self.context = self._context(runtime_cache)
        self.inputs, self.outputs = inputs, outputs
        self.stream = _check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)
        self.runtime_cache_path = runtime_cache
        self.where = "engine on GPU"

    def _context(self, cache_path: Path | None):
        """TensorRT-RTX compiles kernels for the GPU at load time; its runtime cache keeps them across loads."""
        self._rt_cache = None
        if cache_path is not None and hasattr(self.engine, "create_runtime_config"):
            rc = self.engine.create_runtime_config()
            cache = rc.create_runtime_cache()
            if cache_path.is_file():
                cache.deserialize(cache_path.read_bytes())
            rc.set_runtime_cache(cache)
            self._rt_cache = cache
            return self.engine.create_execution_context(rc)
        return self.engine.create_execution_context()

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, -1))
        if size < nbytes:
            if ptr:
                _check(self.cudart.cudaFree(ptr), "cudaFree")
            ptr = _check(self.cudart.cudaMalloc(max(nbytes, 1)), "cudaMalloc")
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart, trt, ctx = self.cudart, self.trt, self.context
        H2D, D2H = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        hosts = []
        for spec in self.inputs:
            if spec.name not in feeds:
                raise InputError(f"missing input '{spec.name}' (engine inputs: {', '.join(s.name for s in self.inputs)})")
            dtype = trt.nptype(self.engine.get_tensor_dtype(spec.name))
            x = np.asarray(feeds[spec.name], dtype=dtype, order="C")  # keeps a scalar rank 0
            if not ctx.set_input_shape(spec.name, x.shape):
                raise InputError(f"input '{spec.name}' shape {x.shape} is outside the engine's optimization profile")
            ptr = self._buffer(spec.name, x.nbytes)
            _check(cudart.cudaMemcpyAsync(ptr, x.ctypes.data, x.nbytes, H2D, self.stream), "cudaMemcpyAsync")
            ctx.set_tensor_address(spec.name, ptr)
            hosts.append(x)  # alive until the stream syncs
        outs = {}
        for spec in self.outputs:
            shape = tuple(ctx.get_tensor_shape(spec.name))
            y = np.empty(shape, dtype=trt.nptype(self.engine.get_tensor_dtype(spec.name)))
            ctx.set_tensor_address(spec.name, self._buffer(spec.name, y.nbytes))
            outs[spec.name] = y
        if not ctx.execute_async_v3(int(self.stream)):
            raise BackendError("TensorRT execute_async_v3 failed")
        for name, y in outs.items():
            _check(cudart.cudaMemcpyAsync(y.ctypes.data, self._buffers[name][0], y.nbytes, D2H, self.stream),
                   "cudaMemcpyAsync")
        _check(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return outs

    def inspector_json(self) -> str:
        insp = self.engine.create_engine_inspector()
        insp.execution_context = self.context
        return insp.get_engine_information(self.trt.LayerInformationFormat.JSON)

    def close(self) -> None:
        if self._rt_cache is not None and self.runtime_cache_path is not None:
            try:
                self.runtime_cache_path.parent.mkdir(parents=True, exist_ok=True)
                self.runtime_cache_path.write_bytes(bytes(memoryview(self._rt_cache.serialize())))
            except OSError:
                pass
        for ptr, _ in self._buffers.values():
            self.cudart.cudaFree(ptr)
        self._buffers.clear()
        if getattr(self, "stream", None) is not None:
            self.cudart.cudaStreamDestroy(self.stream)
            self.stream = None
        self.context = self.engine = None


class BuiltFromOnnxRunner(Runner):
    """No GPU here: the exact ONNX handed to the TensorRT builder (model.onnx), on onnxruntime's CPU
    provider with its graph optimizations off, so Q/DQ run as written (TensorRT's int8 kernels compute
    the same DQ -> op -> Q arithmetic, up to accumulation order). Labelled so the manifest never passes
    this off as an engine result."""

    def __init__(self, onnx_path: Path, threads: int | None = None):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        self.threads = threads
        self._names = [o.name for o in self.session.get_outputs()]
        self.where = (f"onnxruntime {ort.__version__} CPUExecutionProvider on model.onnx, the exact network handed to "
                      "the TensorRT builder (no GPU here: the engine was built, not run)")

    def run(self, feeds):
        return dict(zip(self._names, self.session.run(None, dict(feeds))))
