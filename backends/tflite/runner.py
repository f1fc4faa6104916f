"""A .tflite on LiteRT behind edgec's Runner: the ONNX model's interface (names, NCHW where it was
NCHW, float values) on the outside, the file's own layout and integer I/O on the inside."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Mapping

import numpy as np

from edgec.core.backend import Runner, TensorSpec
from edgec.core.errors import InputError

TO_NCHW = (0, 3, 1, 2)
TO_NHWC = (0, 2, 3, 1)


def litert_version() -> str:
    from importlib.metadata import version

    return version("ai-edge-litert")


def make_interpreter(path: Path, threads: int | None, delegate: str):
    from ai_edge_litert import interpreter as I

    resolver = I.OpResolverType.AUTO if delegate == "xnnpack" else I.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    # LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." on fd 2; keep stderr for edgec.
    fd = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(null, 2)
        it = I.Interpreter(model_path=str(path), num_threads=threads or 1, experimental_op_resolver_type=resolver)
        it.allocate_tensors()
    finally:
        os.dup2(fd, 2)
        os.close(fd)
        os.close(null)
    return it


class TFLiteRunner(Runner):
    def __init__(self, path: Path, io: Mapping, threads: int | None = None, delegate: str = "xnnpack"):
        self.path = Path(path)
        self.threads = threads or 1
        self.delegate = delegate
        self.it = make_interpreter(self.path, self.threads, delegate)
        self._in = list(zip(io["inputs"], self.it.get_input_details()))
        self._out = list(zip(io["outputs"], self.it.get_output_details()))
        self.inputs = [TensorSpec(e["name"], "float32" if e["dtype"] in ("int8", "uint8") else e["dtype"],
                                  tuple(_onnx_shape(e))) for e, _ in self._in]
        self.outputs = [TensorSpec(e["name"], "float32" if e["dtype"] in ("int8", "uint8") else e["dtype"],
                                   tuple(_onnx_shape(e))) for e, _ in self._out]

    def _prepare(self, feeds: Mapping[str, np.ndarray]) -> list[list[np.ndarray]]:
        """Per-sample file-side arrays for each input (the file is built for one batch size)."""
        per_input = []
        n = None
        for e, d in self._in:
            if e["name"] not in feeds:
                raise InputError(f"missing input '{e['name']}' (model inputs: {', '.join(x['name'] for x, _ in self._in)})")
            x = np.asarray(feeds[e["name"]])
            file_shape = tuple(d["shape"])
            onnx_shape = tuple(_onnx_shape(e))
            if x.ndim != len(onnx_shape):
                raise InputError(f"input '{e['name']}' has shape {list(x.shape)}, the model wants {list(onnx_shape)}")
            b = file_shape[0] if file_shape else 1
            chunks = [x] if not file_shape or x.shape[0] == b else [x[i:i + b] for i in range(0, x.shape[0], b)]
            if n is not None and len(chunks) != n:
                raise InputError("inputs have different batch sizes")
            n = len(chunks)
            out = []
            for c in chunks:
                if e["layout"] == "nhwc":
                    c = c.transpose(TO_NHWC)
                want = np.dtype(d["dtype"])
                if want.kind in "iu" and np.asarray(c).dtype.kind == "f" and "scale" in e:
                    info = np.iinfo(want)
                    v = c / e["scale"]  # std::round, as TFLite's QUANTIZE: halves away from zero
                    c = np.clip(np.sign(v) * np.floor(np.abs(v) + 0.5) + e["zero_point"], info.min, info.max)
                c = np.asarray(c, dtype=want, order="C")  # not ascontiguousarray: it makes a scalar [1]
                if c.shape != file_shape:
                    raise InputError(f"input '{e['name']}' has shape {list(x.shape)}, the model wants {list(onnx_shape)}")
                out.append(c)
            per_input.append(out)
        return per_input

    def _invoke(self, arrays) -> None:
        for (_, d), a in zip(self._in, arrays):
            self.it.set_tensor(d["index"], a)
        self.it.invoke()

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        prepared = self._prepare(feeds)
        results: dict[str, list] = {e["name"]: [] for e, _ in self._out}
        for k in range(len(prepared[0]) if prepared else 1):
            self._invoke([p[k] for p in prepared])
            for e, d in self._out:
                y = self.it.get_tensor(d["index"]).copy()
                if y.dtype.kind in "iu" and "scale" in e:
                    y = ((y.astype(np.float32) - e["zero_point"]) * e["scale"]).astype(np.float32)
                if e["layout"] == "nhwc":
                    y = y.transpose(TO_NCHW)
                results[e["name"]].append(y)
        return {k: np.concatenate(v) if len(v) > 1 else v[0] for k, v in results.items()}

    def time_once(self, feeds: Mapping[str, np.ndarray]) -> float:
        prepared = [p[0] for p in self._prepare(feeds)]
        for (_, d), a in zip(self._in, prepared):
            self.it.set_tensor(d["index"], a)
        t0 = time.perf_counter()
        self.it.invoke()
        return time.perf_counter() - t0

    def ops(self) -> list[dict]:
        return self.it._get_ops_details()

    def close(self) -> None:
        self.it = None


def _onnx_shape(e) -> list:
    s = list(e.get("onnx_shape") or e["shape"])
    return s
