"""Size accounting: what a model's weights cost raw, with zstd, and entropy-coded (Huffman, ANS).

Deep Compression's accounting: per layer the bits per weight after coding, its sparsity and its
number of distinct values, and the total. A weight tensor becomes a symbol stream:
  int8/uint8 tensors (Q/DQ models)          their integers
  float32 tensors on a per-channel INT8 grid  the integers w / scale_c, plus the Cout float32 scales
    (clustered weights are on it by construction: cluster.py)
  other float tensors                       a zero/non-zero stream plus the non-zero values raw
    (pruned FP32 weights: the zeros are what codes)
Each stream is coded by two maintained libraries: bitarray's Huffman code (a whole number of bits
per symbol, >= 1: a 90 %-zero stream still costs 1 bit per zero) and constriction's ANS coder
(range coding at the Shannon bound, a fraction of a bit per zero), both with their frequency tables
counted. zstd (the `zstandard` bindings) is the general-purpose baseline over the raw bytes.
Small tensors (biases, scales, shapes: < MIN_CODED elements) are counted raw.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgec.core import cache

MIN_CODED = 1024
ZSTD_LEVEL = 9
GRID_TOL = 1e-3  # |w / scale - round(w / scale)| below this on every weight: the tensor is on the INT8 grid


def huffman_bits(counts: dict) -> int:
    """Payload bits of the Huffman code of a stream with these symbol counts (1 bit each for a
    single-symbol stream, the code bitarray gives it)."""
    from bitarray.util import huffman_code

    counts = {k: int(v) for k, v in counts.items() if v > 0}
    if not counts:
        return 0
    code = huffman_code(counts)
    return sum(c * len(code[s]) for s, c in counts.items())


def ans_bits(symbols: np.ndarray) -> int:
    """Bits of constriction's ANS coding of `symbols` under their own empirical distribution."""
    import constriction

    vals, idx, counts = np.unique(symbols, return_inverse=True, return_counts=True)
    if vals.size <= 1:
        return 0
    f = frequencies(counts)
    model = constriction.stream.model.Categorical(f / f.sum(), perfect=False)
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(idx.astype(np.int32).ravel(), model)
    return int(coder.num_bits())


def frequencies(counts: np.ndarray) -> np.ndarray:
    """Counts scaled into 16 bits (>= 1 for every present symbol): the model both coder and decoder
    rebuild from the stored table, so it must be what is stored."""
    c = np.asarray(counts, np.float64)
    return np.maximum(1, np.round(c * (65535.0 / c.max()))).astype(np.uint16)


def shannon_bits(symbols: np.ndarray) -> float:
    _, counts = np.unique(symbols, return_counts=True)
    p = counts / counts.sum()
    return float(-(counts * np.log2(p)).sum())


def table_bits(distinct: int, symbol_bits: int) -> int:
    """The frequency table sent with a stream: each symbol and a 16-bit frequency, the table `edgec pack`
    writes (a canonical Huffman table needs less; one table format for both keeps the comparison fair)."""
    return distinct * (symbol_bits + 16)


def _on_grid(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(integers, scales) when every row of `w` is on its per-channel INT8 grid: the 8-bit one
    (max|w| / 127) or the 7-bit one (max|w| / 64) of backends that reduce the weight range."""
    rows = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1).astype(np.float64)
    amax = np.abs(rows).max(1)
    for qmax in (127.0, 64.0):
        s = np.where(amax > 0, amax, 1.0) / qmax
        u = rows / s[:, None]
        q = np.round(u)
        if np.max(np.abs(u - q)) <= GRID_TOL:
            return q.astype(np.int64), s
    return None


def streams(t: onnx.TensorProto, axis: int = 0) -> dict:
    """How `t` is coded: {"kind", "streams": [(symbols, symbol_bits)], "side_bits", "distinct", "sparsity"}."""
    a = numpy_helper.to_array(t)
    if a.dtype in (np.int8, np.uint8):
        return {"kind": "int8", "streams": [(a.ravel().astype(np.int64), 8)], "side_bits": 0,
                "distinct": int(np.unique(a).size), "sparsity": float(np.mean(a == 0)) if a.dtype == np.int8 else None}
    if a.dtype == np.float32 and a.ndim >= 2:
        g = _on_grid(a, axis)
        if g is not None:
            q, s = g
            return {"kind": "float-on-int8-grid", "streams": [(q.ravel(), 8)], "side_bits": 32 * s.size,
                    "distinct": int(np.unique(a).size), "sparsity": float(np.mean(a == 0))}
    bits = a.dtype.itemsize * 8
    nz = a.ravel() != 0
    return {"kind": "float", "streams": [(nz.astype(np.int64), 1)], "raw_nonzero_bits": int(nz.sum()) * bits,
            "side_bits": int(nz.sum()) * bits, "distinct": int(np.unique(a).size), "sparsity": float(1 - nz.mean())}


def _axis(model: onnx.ModelProto) -> dict[str, int]:
    """Output-channel axis of each weight initializer (by its consumer), for the grid test."""
    from edgec.core.quantization.weights import channel_axis

    out = {}
    producer = {o: n for n in model.graph.node for o in n.output}
    for n in model.graph.node:
        if n.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul") or len(n.input) < 2:
            continue
        w = n.input[1]
        dq = producer.get(w)
        if dq is not None and dq.op_type == "DequantizeLinear":
            w = dq.input[0]
        tb = next((a.i for a in n.attribute if a.name == "transB"), 0)
        rank = 2 if n.op_type in ("Gemm", "MatMul") else 4
        out[w] = channel_axis(n.op_type, rank, tb)
    return out


def size_report(model: onnx.ModelProto, layers: bool = True) -> dict:
    """Raw / zstd / Huffman / ANS bytes of `model`'s initializers and bits per weight per layer."""
    import zstandard

    axes = _axis(model)
    # Q/DQ scales and zero points are quantization side information, not weights an FP32 model has.
    side = {i for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") for i in n.input[1:]}
    fp32_params = 0
    total_raw = total_huff = total_ans = 0.0
    coded_params = 0
    rows = []
    raw_blobs = []
    params = 0
    for t in model.graph.initializer:
        a = numpy_helper.to_array(t)
        raw_bits = a.nbytes * 8
        raw_blobs.append(a.tobytes())
        params += a.size
        fp32_params += 0 if t.name in side else a.size
        total_raw += raw_bits
        if a.size < MIN_CODED or a.dtype.kind not in "fiu" or a.dtype.itemsize > 4 and a.dtype.kind != "f":
            total_huff += raw_bits
            total_ans += raw_bits
            continue
        s = streams(t, axes.get(t.name, 0))
        huff = ans = float(s["side_bits"])
        for sym, sbits in s["streams"]:
            vals, counts = np.unique(sym, return_counts=True)
            tb = table_bits(vals.size, sbits)
            huff += huffman_bits(dict(zip(vals.tolist(), counts.tolist()))) + tb
            ans += ans_bits(sym) + tb
        huff, ans = min(huff, raw_bits), min(ans, raw_bits)  # a coder that does not pay stores raw
        total_huff += huff
        total_ans += ans
        coded_params += a.size
        if layers:
            rows.append({"tensor": t.name, "params": int(a.size), "dtype": str(a.dtype), "kind": s["kind"],
                         "sparsity": None if s["sparsity"] is None else round(s["sparsity"], 4),
                         "distinct": s["distinct"], "raw_bits_per_weight": round(raw_bits / a.size, 3),
                         "huffman_bits_per_weight": round(huff / a.size, 3),
                         "ans_bits_per_weight": round(ans / a.size, 3)})
    zbytes = len(zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(b"".join(raw_blobs)))
    out = {"parameters": int(params), "fp32_bytes": int(fp32_params * 4), "raw_bytes": int(total_raw // 8),
           "zstd_bytes": zbytes, "huffman_bytes": int(np.ceil(total_huff / 8)),
           "ans_bytes": int(np.ceil(total_ans / 8)),
           "ans_bits_per_weight": round(total_ans / max(fp32_params, 1), 3),
           "huffman_bits_per_weight": round(total_huff / max(fp32_params, 1), 3),
           "coder": {"huffman": "bitarray.util.huffman_code", "ans": "constriction AnsCoder",
                     "zstd": f"zstandard level {ZSTD_LEVEL}", "min_coded_elements": MIN_CODED}}
    if params:
        out["ratio_vs_fp32"] = round(out["fp32_bytes"] / max(out["ans_bytes"], 1), 2)
    if layers:
        out["layers"] = rows
    return out


def files_report(directory) -> dict:
    """Bytes of an artifact directory's files, raw and zstd-compressed (what a plain OTA payload costs)."""

    import zstandard

    cz = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    raw = z = 0
    for p in sorted(Path(directory).rglob("*")):
        if p.is_file() and p.name != "manifest.json":
            b = p.read_bytes()
            raw += len(b)
            z += len(cz.compress(b))
    return {"raw_bytes": raw, "zstd_bytes": z}


def size_section(model: onnx.ModelProto, directory=None) -> dict:
    """The manifest's `size`: the lowered model's weights (size_report) and the artifact files.

    A backend's own calibrator can hand over a native model (an openvino.Model from NNCF or fp16):
    then only the files are counted; `pack` still codes the artifact's int8 constants."""
    out = {"weights": _remembered_size_report(model) if isinstance(model, onnx.ModelProto) else None}
    if directory is not None:
        out["files"] = files_report(directory)
    return out


def _remembered_size_report(model: onnx.ModelProto) -> dict:
    """size_report by the model's bytes and this file's code: a re-compile of the same lowered model
    (every re-run) would code its weights again (0.3 s for EfficientNet-Lite0)."""
    k = cache.key("size", Path(__file__).read_bytes(), hashlib.sha256(model.SerializeToString()).digest())
    return cache.remember("size", k, lambda: size_report(model))


def format_size(rep: dict) -> str:
    mb = 1e6
    return (f"weights      {rep['parameters']:,} params: fp32 {rep['fp32_bytes'] / mb:.2f} MB, raw "
            f"{rep['raw_bytes'] / mb:.2f} MB, zstd {rep['zstd_bytes'] / mb:.2f} MB, Huffman "
            f"{rep['huffman_bytes'] / mb:.2f} MB, ANS {rep['ans_bytes'] / mb:.2f} MB "
            f"({rep['ans_bits_per_weight']:.2f} bits/weight, {rep.get('ratio_vs_fp32', 1):.1f}x smaller than fp32)")
