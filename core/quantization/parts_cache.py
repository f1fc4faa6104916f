"""GPTQ rounding tables and bias-correction deltas, remembered per (model, data, flavour) (issue 17).

They are the slow part of an INT8 calibration after the calibration pass itself (whose histograms
calibration.py caches), and depend only on: the model, the calibration samples they were computed on,
the ranges (method, percentile, histograms), the flavour (grid), the layers kept in float, the sample
counts, and the code that computes them. All of that is in the key, the code as the sha256 of this
package's sources, so an edit to rounding.py can never be answered with an old table.

GPTQ's integers and H are also kept per layer (gptq_table, moments), because a layer's depend on its
own weights, input and grid only: the `--keep-fp32` line `edgec debug --bisect` prints, compiled after
the full INT8, rounds nothing again (EfficientNet-Lite0, two layers kept: quantize 12.6 -> 3.4 s, the
model byte-identical to a cold cache's).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import numpy as np

from edgec.core import cache

KIND = "rounding"


@functools.lru_cache(maxsize=1)
def _code_sha() -> str:
    here = Path(__file__).resolve().parent
    return cache.key(*[p.read_bytes() for p in sorted(here.glob("*.py"))])


def parts_key(what: str, model_sha256: str, data_sha256: str, samples: int, ranges: dict, flavour, excluded,
              extra=None) -> str:
    flav = {k: getattr(flavour, k) for k in flavour.__dataclass_fields__}
    rng = sorted((k, float(lo), float(hi)) for k, (lo, hi) in ranges.items())
    return cache.key(KIND, what, _code_sha(), model_sha256, data_sha256, samples, rng, flav, sorted(excluded), extra)


def cached(what: str, key: str, compute: Callable[[], dict], report: dict) -> dict[str, np.ndarray]:
    """{name: array} from the cache under `key`, else compute() (stored); report["cache"] says which."""
    hit = cache.load_arrays(KIND, key)
    if hit is not None:
        report["cache"] = "hit"
        return hit
    out = compute()
    cache.save_arrays(KIND, key, out)
    report["cache"] = "miss" if cache.enabled() else "off"
    return out


def table_digest(table: dict[str, np.ndarray]) -> str:
    return cache.key(*[x for k in sorted(table) for x in (k, np.ascontiguousarray(table[k]).tobytes())])


def cached_model(parts, build: Callable[[], "onnx.ModelProto"]):
    """The Q/DQ model `parts.build()` makes, remembered under everything it is made from."""
    import onnx

    cal = parts.report.get("calibration") or {}
    if not cache.enabled() or not cal.get("data_sha256"):
        return build()
    from .graph import model_sha256

    key = parts_key("qdq-model", model_sha256(parts.model), cal["data_sha256"], cal.get("samples", 0), parts.key_ranges or parts.ranges,
                    parts.flavour, parts.excluded, [table_digest(parts.rounding), table_digest(parts.deltas)])
    hit = cache.load_blob(KIND, key)
    if hit is not None:
        m = onnx.ModelProto()
        m.ParseFromString(hit[0])
        return m
    m = build()
    cache.save_blob(KIND, key, m.SerializeToString(), None)
    return m


def moments(model, cal, data, report: dict, compute=None):
    """GPTQ's H = sum x x^T per layer (rounding.input_moments), remembered per (model, data).

    H is most of GPTQ's cost (an FP32 pass over its samples with every layer input fetched, plus an
    im2col product per layer) and does not depend on the grid: a compile for another backend (u8 vs
    s8 activations, 7- vs 8-bit weights) of the same model and data reuses it. Nor on the other layers
    (each layer's is summed from its own FP32 input): one store per (model, data) holds every layer any
    compile asked for, and a compile that keeps other layers in float computes only the ones it lacks
    ("partial"). Stored as float64, exactly what was computed, so a hit rounds to the same integers as
    the miss did. `compute(layers)` replaces input_moments (int8.py: layer_stats' shared pass; see
    LayerStats.moments for how its depthwise sums differ)."""
    def get(layers):
        from .rounding import input_moments

        key = cache.key(KIND, "moments", _code_sha(), cal.model_sha256, cal.data_sha256, len(data))
        stored = cache.load_arrays(KIND, key) or {}
        missing = [layer for layer in layers if layer[0].name not in stored]
        if missing:
            new = (compute or (lambda ls: input_moments(model, data, ls)))(missing)
            stored = {**stored, **new}
            cache.save_arrays(KIND, key, stored)
        report["moments_cache"] = ("off" if not cache.enabled() else "hit" if not missing
                                   else "partial" if len(missing) < len(layers) else "miss")
        return {layer[0].name: stored[layer[0].name] for layer in layers}
    return get


def gptq_table(key: str, compute: Callable[..., dict], report: dict) -> dict[str, np.ndarray]:
    """GPTQ's integers per weight, remembered under `key` (model, data, samples, flavour, code) with the
    grid each was rounded on: `compute(known, grids)` (rounding.optimise_rounding) reuses every layer
    whose grid is unchanged and rounds the rest; the store keeps the union. report["cache"]: hit,
    partial or miss."""
    stored = cache.load_arrays(KIND, key) or {}
    known = {k[2:]: (v, stored["s/" + k[2:]], tuple(int(x) for x in stored["r/" + k[2:]]))
             for k, v in stored.items() if k.startswith("q/") and "s/" + k[2:] in stored and "r/" + k[2:] in stored}
    grids: dict = {}
    table = compute(known, grids)
    fresh = [k for k in table if k not in known or table[k] is not known[k][0]]
    if fresh:
        merged = dict(stored)
        for k in fresh:
            s, rng = grids[k]
            merged.update({"q/" + k: table[k], "s/" + k: s, "r/" + k: np.array(rng, np.int64)})
        cache.save_arrays(KIND, key, merged)
    report["cache"] = ("off" if not cache.enabled() else "hit" if not fresh
                       else "partial" if len(fresh) < len(table) else "miss")
    return table
