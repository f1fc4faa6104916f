"""Calibration: run the FP32 model once over the data, histogram the float activations, cache the result.

The cache key is (model sha256, data fingerprint): the same model and data give a hit whatever the
method, percentile or flavour, because ranges are derived from the stored histograms. A compile asks
for the tensors it needs (int8.folded_inputs leaves out those the quantizer never reads); a file that
lacks some gets them added by a pass over just those.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from edgec.core.cache import write_atomic
from edgec.core.errors import InputError

from .graph import model_sha256
from .histogram import METHODS, StreamingHistogram

# Ops whose output range is fixed by the op: their observed min/max is the true range (ReLU6 tops out
# at exactly 6), so clipping it as mse/percentile would only add error.
BOUNDED_OPS = ("Clip", "Sigmoid", "Tanh", "Softmax", "HardSigmoid")


def bounded_outputs(model: onnx.ModelProto) -> set[str]:
    return {n.output[0] for n in model.graph.node if n.op_type in BOUNDED_OPS and n.output}

CACHE_VERSION = 4  # 2: a file may hold a subset of the tensors (collect(tensors=...)), plus __empty__; 3: float64 bin edges (fast-histogram); 4: large tensors binned 1 in 4


def default_cache_dir() -> Path:
    env = os.environ.get("EDGEC_CACHE_DIR")
    return Path(env) / "calibration" if env else Path.home() / ".cache" / "edgec" / "calibration"


@dataclass
class Calibration:
    histograms: dict[str, StreamingHistogram]
    samples: int
    data_sha256: str
    model_sha256: str
    cache: str  # "hit" | "miss" | "off"

    def ranges(self, method: str, percentile: float = 99.99, levels: int = 256,
               bounded: set[str] = frozenset()) -> dict[str, tuple[float, float]]:
        """Per-tensor (lo, hi). `bounded` names outputs of range-limited ops (Clip, Sigmoid...): "auto"
        and "entropy" give them their observed min/max, the op's own range."""
        if method not in ("auto", *METHODS):
            raise InputError(f"unknown calibration method {method!r}; use one of auto, {', '.join(METHODS)}")
        if method == "percentile" and not 0 < percentile <= 100:
            raise InputError(f"percentile {percentile} is outside (0, 100]; pass e.g. 99.99")
        out = self._ranges("mse" if method == "auto" else method, percentile, levels)
        if method in ("auto", "entropy"):
            # The op fixes these ranges (ReLU6 tops out at exactly 6), so clipping them only adds error.
            # KL clipped EfficientNet-Lite0's ReLU6 outputs to 3.6-5.9 (agreement with FP32 on
            # calib500[200:] 95.7 % vs 98.3 % with the op's range).
            mm = self._ranges("minmax", percentile, levels)
            out = {k: mm[k] if k in bounded else v for k, v in out.items()}
        return out

    def _ranges(self, method: str, percentile: float, levels: int) -> dict[str, tuple[float, float]]:
        fn = METHODS[method]
        out = {}
        for name, h in self.histograms.items():
            if h.counts is None:
                continue
            lo, hi = fn(h, percentile=percentile, levels=levels)
            out[name] = (float(lo), float(hi))
        return out


def float_activations(model: onnx.ModelProto) -> list[str]:
    """Names of float tensors computed at run time (graph inputs and node outputs)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    inits = {t.name for t in g.initializer}
    types = {}
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        types[vi.name] = vi.type.tensor_type.elem_type
    names = [i.name for i in g.input if i.name not in inits]
    names += [o for n in g.node for o in n.output if o]
    consts = {o for n in g.node if n.op_type == "Constant" for o in n.output}
    return [t for t in dict.fromkeys(names) if t not in consts and types.get(t) == onnx.TensorProto.FLOAT]


def with_outputs(model: onnx.ModelProto, tensors) -> onnx.ModelProto:
    """A copy of `model` that also returns the given intermediate float tensors."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    present = {o.name for o in m.graph.output}
    for t in tensors:
        if t not in present:
            m.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    return m


def session(model: onnx.ModelProto, threads: int | None = None, overlapped: bool = False):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    if overlapped:
        from .overlap import session_options

        session_options(so)
    from edgec.core import ort_session

    # The repair's evaluator runs Q/DQ candidates here: kept-FP32 layers must run FP32 (core/ort_session.py).
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"], **ort_session.kwargs())


def _check_feeds(model: onnx.ModelProto, sample, source: str) -> None:
    inits = {t.name for t in model.graph.initializer}
    wanted = [i.name for i in model.graph.input if i.name not in inits]
    missing = [w for w in wanted if w not in sample.feeds]
    if missing:
        raise InputError(f"calibration data {source} has no array for model input {missing[0]!r} "
                         f"(it has {sorted(sample.feeds)}); name the arrays after the model inputs")


def collect(model: onnx.ModelProto, data, *, cache_dir: Path | None = None, progress: bool = True,
            data_sha256: str | None = None, tensors=None) -> Calibration:
    """Histograms of the float activations `tensors` (None: every one) over `data` (an edgec Dataset),
    from cache when possible.

    The cache file of (model, data) holds whatever tensors earlier compiles histogrammed; a compile
    that needs more computes only the missing ones (one pass fetching just those: each tensor's
    histogram depends on its own values alone) and stores the union."""
    n = len(data)
    if n == 0:
        raise InputError(f"calibration data {getattr(data, 'source', '')} is empty; give at least one sample "
                         "(100-500 representative inputs is typical)")
    msha = model_sha256(model)
    dsha = data_sha256 or data.fingerprint()
    every = float_activations(model)
    wanted = every if tensors is None else [t for t in every if t in set(tensors)]
    cache_path = None
    stored: dict[str, StreamingHistogram] = {}
    if cache_dir is not False:
        cache_path = Path(cache_dir or default_cache_dir()) / f"{msha[:16]}-{dsha[:16]}.npz"
        stored = _load(cache_path, msha, dsha) or {}
        # A tensor that never held a finite value has no counts and is not stored: never "missing".
        done = set(stored) | set(_load_empty(cache_path, msha, dsha))
        if all(t in done for t in wanted):
            return Calibration({t: stored[t] for t in wanted if t in stored}, n, dsha, msha, "hit")
        wanted = [t for t in wanted if t not in done]
    hists = _histograms(model, data, wanted, progress)
    cal = Calibration({**stored, **hists}, n, dsha, msha, ("partial" if stored else "miss") if cache_path else "off")
    if cache_path is not None:
        _save(cache_path, cal, empty=[t for t in wanted if hists[t].counts is None])
    if tensors is not None:
        keep = set(tensors)
        cal.histograms = {k: v for k, v in cal.histograms.items() if k in keep}
    return cal


def _histograms(model: onnx.ModelProto, data, tensors: list[str], progress: bool) -> dict[str, StreamingHistogram]:
    from .overlap import consume, shards, workers

    n = len(data)
    sess = session(with_outputs(model, tensors), overlapped=True)
    want = set(tensors)
    out_names = [o.name for o in sess.get_outputs() if o.name in want]
    hists = {t: StreamingHistogram() for t in tensors}
    it = iter(data)
    if progress:
        from edgec.core.progress import bar

        it = bar(it, total=n, desc="calibrating", unit="sample")

    def runs():
        for count, sample in enumerate(it):
            if count == 0:
                _check_feeds(model, sample, getattr(data, "source", ""))
            yield sess.run(out_names, {i.name: np.asarray(sample.feeds[i.name]) for i in sess.get_inputs()})

    def update_for(i: int, n: int):
        """Shard i of n owns a fixed set of the tensors (split by size on the first sample, the same in
        every shard): each histogram is still filled by one thread, in sample order. One binning thread
        was the pass's bottleneck on 2 cores (the binning costs more CPU than onnxruntime's run)."""
        mine: list[int] | None = None

        def update(outs):
            nonlocal mine
            if mine is None:
                groups = shards([float(getattr(a, "size", 1)) for a in outs], n)
                mine = groups[i] if i < len(groups) else []
            for j in mine:
                h, arr = hists.get(out_names[j]), outs[j]
                if h is not None and arr.dtype == np.float32:
                    h.update(arr)
        return update

    n_shards = workers()
    consume(runs(), [update_for(i, n_shards) for i in range(n_shards)])
    return hists


def _save(path: Path, cal: Calibration, empty=()) -> None:
    arrays = {"__meta__": np.array([CACHE_VERSION, cal.samples], np.int64),
              "__keys__": np.array([cal.model_sha256, cal.data_sha256])}
    names = [k for k, h in cal.histograms.items() if h.counts is not None]
    arrays["__names__"] = np.array(names, dtype=np.str_)
    arrays["__empty__"] = np.array(sorted(set(empty) | set(_load_empty(path, cal.model_sha256, cal.data_sha256))),
                                   dtype=np.str_)
    arrays["__scalars__"] = np.array([[cal.histograms[k].lo, cal.histograms[k].width,
                                       cal.histograms[k].min, cal.histograms[k].max] for k in names], np.float64)
    arrays["__counts__"] = np.stack([cal.histograms[k].counts for k in names]) if names else np.zeros((0, 1))
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    write_atomic(path, buf.getvalue(), fsync=True)


def _load_empty(path: Path, msha: str, dsha: str) -> list[str]:
    """Tensors a stored calibration histogrammed but saw no finite value in (so has no counts for)."""
    if not path.is_file():
        return []
    try:
        z = np.load(path, allow_pickle=False)
        if int(z["__meta__"][0]) != CACHE_VERSION or list(z["__keys__"]) != [msha, dsha] or "__empty__" not in z:
            return []
        return [str(t) for t in z["__empty__"]]
    except (OSError, ValueError, KeyError):
        return []


def _load(path: Path, msha: str, dsha: str) -> dict[str, StreamingHistogram] | None:
    if not path.is_file():
        return None
    try:
        z = np.load(path, allow_pickle=False)
        if int(z["__meta__"][0]) != CACHE_VERSION or list(z["__keys__"]) != [msha, dsha]:
            return None
        out = {}
        for name, (lo, w, mn, mx), counts in zip(z["__names__"], z["__scalars__"], z["__counts__"]):
            out[str(name)] = StreamingHistogram.from_dict({"lo": lo, "width": w, "min": mn, "max": mx,
                                                           "counts": counts})
        return out
    except (OSError, ValueError, KeyError):
        return None  # corrupt or foreign file: recalibrate and overwrite
