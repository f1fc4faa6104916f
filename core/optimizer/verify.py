"""Safety net of the pipeline: onnx.checker plus numerical equivalence in onnxruntime (or, for
a model onnxruntime cannot load, e.g. an opset newer than it knows, onnx's reference runtime).

Reference outputs come from the original model on seeded random inputs (symbolic dims = 1), run
with onnxruntime's own graph rewrites disabled so that we test our graph, not ORT's. Models whose
weights exceed `large_model_bytes` never go through one in-memory protobuf (2 GB limit): they are
written with external data to a temporary folder and checked / loaded by path.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_ir as ir

# Protobuf cannot serialize a message over 2 GiB; leave headroom for the graph itself.
LARGE_MODEL_BYTES = 1_800_000_000


def weight_bytes(model: ir.Model) -> int:
    return sum(v.const_value.nbytes for v in model.graph.initializers.values()
               if v.const_value is not None)


def random_inputs(model: ir.Model, seed: int, samples: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(samples):
        feed = {}
        for value in model.graph.inputs:
            if value.is_initializer() or value.dtype is None:
                continue
            shape = [d if isinstance(d, int) and d >= 0 else 1 for d in (value.shape or [])]
            dtype = value.dtype.numpy()
            if np.issubdtype(dtype, np.floating):
                arr = rng.standard_normal(shape).astype(dtype)
            elif dtype == np.bool_:
                arr = rng.random(shape) < 0.5
            else:  # small non-negative ints: valid as indices, lengths or class ids
                arr = rng.integers(0, 4, size=shape).astype(dtype)
            feed[value.name] = arr
        feeds.append(feed)
    return feeds


class ModelFile:
    """The model as onnx.checker and onnxruntime take it: bytes, or a path when it is large."""

    def __init__(self, model: ir.Model, large: bool):
        self._tmp = None
        if large:
            self._tmp = tempfile.TemporaryDirectory(prefix="edgec-opt-")
            self.path = os.path.join(self._tmp.name, "model.onnx")
            ir.save(model, self.path, external_data="model.onnx.data")
            self.source = self.path
        else:
            self.proto = ir.serde.serialize_model(model)
            self.source = self.proto.SerializeToString()

    def check(self) -> None:
        onnx.checker.check_model(self.path if self._tmp else self.proto)

    def session(self, ort_optimized: bool = False):
        import onnxruntime as ort

        so = ort.SessionOptions()
        if not ort_optimized:
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.log_severity_level = 4  # a refused model is reported through the exception instead
        return ort.InferenceSession(self.source, so, providers=["CPUExecutionProvider"])

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


def run_any(mf: ModelFile, feeds: list[dict]) -> tuple[list[dict[str, np.ndarray]], str]:
    """Run in onnxruntime, or, when it cannot load the model (an opset newer than it knows, an
    old op version it dropped), in onnx's reference runtime. Each model gets the runtime that
    can run it: the reference runtime has its own bugs (e.g. 3-D BatchNormalization), so it is
    only the fallback."""
    try:
        return run(mf, feeds), "onnxruntime"
    except Exception as ort_error:  # noqa: BLE001
        try:
            return run(mf, feeds, "onnx.reference"), "onnx.reference"
        except Exception:  # noqa: BLE001
            raise ort_error from None


def run(mf: ModelFile, feeds: list[dict], runtime: str = "onnxruntime") -> list[dict[str, np.ndarray]]:
    if runtime == "onnx.reference":
        from onnx.reference import ReferenceEvaluator

        ref = ReferenceEvaluator(mf.path if mf._tmp else mf.proto)
        names, wanted = ref.output_names, set(ref.input_names)
        return [dict(zip(names, ref.run(None, {k: v for k, v in f.items() if k in wanted})))
                for f in feeds]
    sess = mf.session()
    names = [o.name for o in sess.get_outputs()]
    wanted = {i.name for i in sess.get_inputs()}
    return [dict(zip(names, sess.run(None, {k: v for k, v in f.items() if k in wanted})))
            for f in feeds]


@dataclass
class Comparison:
    ok: bool
    max_abs_err: float
    output_scale: float
    reason: str = ""


def compare(ref: list[dict], got: list[dict], rtol: float) -> Comparison:
    err, scale = 0.0, 0.0
    for r, g in zip(ref, got):
        for name, a in r.items():
            if name not in g:
                return Comparison(False, float("inf"), scale, f"output {name!r} disappeared")
            why, e, s = _compare_value(a, g[name], repr(name))
            if why:
                return Comparison(False, float("inf"), scale, why)
            err, scale = max(err, e), max(scale, s)
    ok = err <= rtol * scale + 1e-7
    reason = "" if ok else f"max abs error {err:.3g} > {rtol:g} x output scale {scale:.3g}"
    return Comparison(ok, err, scale, reason)


def _compare_value(a, b, where: str) -> tuple[str, float, float]:
    """(difference or '', max abs error, output scale) for one output: tensors, sequences (ONNX
    Sequence* ops return lists), empty optionals (None) and strings."""
    if a is None or b is None:
        return ("" if a is None and b is None else f"output {where}: optional emptiness differs"), 0.0, 0.0
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        if not (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple))) or len(a) != len(b):
            return f"output {where}: sequence length differs", 0.0, 0.0
        err = scale = 0.0
        for i, (x, y) in enumerate(zip(a, b)):
            why, e, s = _compare_value(x, y, f"{where}[{i}]")
            if why:
                return why, e, s
            err, scale = max(err, e), max(scale, s)
        return "", err, scale
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return f"output {where} shape {b.shape} != {a.shape}", 0.0, 0.0
    if np.issubdtype(a.dtype, np.floating):
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        if not np.array_equal(np.isnan(a64), np.isnan(b64)) or not np.array_equal(np.isinf(a64), np.isinf(b64)):
            return f"output {where}: NaN/inf positions differ", 0.0, 0.0
        fin = np.isfinite(a64)
        if not np.array_equal(a64[np.isinf(a64)], b64[np.isinf(b64)]):
            return f"output {where}: infinities of other sign", 0.0, 0.0
        diff = np.abs(a64[fin] - b64[fin])
        finite = np.abs(a64[fin])
        return "", float(diff.max()) if diff.size else 0.0, float(finite.max()) if finite.size else 0.0
    if a.dtype.kind in "OUS" or b.dtype.kind in "OUS":
        same = np.array_equal(a.astype(str), b.astype(str))
    else:
        same = np.array_equal(a, b)
    return ("" if same else f"output {where} values differ"), 0.0, 0.0


class Verifier:
    """Holds the reference outputs; `check(model)` says whether a rewritten model still matches."""

    def __init__(self, original: ir.Model, *, seed: int, rtol: float, large: bool, samples: int):
        self.large, self.rtol = large, rtol
        self.feeds = random_inputs(original, seed, samples)
        self.samples = samples
        self.reference = None
        self.unavailable = ""
        self.runtime = None
        self.loads = False  # whether onnxruntime can at least load the original (then every rewrite must too)
        mf = ModelFile(original, large)
        try:
            self.reference, self.runtime = run_any(mf, self.feeds)
        except Exception as e:  # noqa: BLE001 - e.g. custom ops, sequence inputs: checker-only verification
            self.unavailable = f"original model does not run in onnxruntime on random inputs ({_short(e)})"
            try:
                mf.session()
                # ... and with onnxruntime's own graph optimizations, as the onnxruntime backend runs it:
                # its folding of an If whose condition we made constant can expose a [1]-for-scalar
                # branch output the unoptimized session never shape-checks (ONNX node test affine_grid)
                mf.session(ort_optimized=True)
                self.loads = True
            except Exception:  # noqa: BLE001
                pass
        finally:
            mf.close()

    def check(self, model: ir.Model, samples: int | None = None) -> Comparison:
        mf = ModelFile(model, self.large)
        try:
            try:
                mf.check()
            except Exception as e:  # noqa: BLE001
                return Comparison(False, float("nan"), 0.0, f"onnx.checker: {_short(e)}")
            if self.reference is None:
                if self.loads:
                    try:
                        mf.session()
                        mf.session(ort_optimized=True)
                    except Exception as e:  # noqa: BLE001
                        return Comparison(False, float("nan"), 0.0, f"onnxruntime cannot load it: {_short(e)}")
                return Comparison(True, float("nan"), 0.0, self.unavailable)
            try:
                got, _ = run_any(mf, self.feeds[:samples])
            except Exception as e:  # noqa: BLE001
                return Comparison(False, float("nan"), 0.0, f"onnxruntime: {_short(e)}")
            return compare(self.reference[: len(got)], got, self.rtol)
        finally:
            mf.close()


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}"
