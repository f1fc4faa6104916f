"""Fuzzing model, data and artifact loading with hypothesis: whatever the bytes, the only exception
that may come out is an EdgecError (one line, exit 2), never a crash, a hang or a runaway allocation.

The default run tries a few hundred inputs per target (seconds); `pytest -m slow tests/test_fuzz.py`
runs 100,000 inputs (SLOW below; FUZZ_SLOW_SCALE scales it), and prints the count and the
process's peak RSS. Each example has a deadline (a hang fails it) and the peak RSS must stay under
MAX_RSS_MB (bounded memory: a declared size that gets allocated would blow it).
"""
from __future__ import annotations

import json
import os
import resource
import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bad_inputs_lib as B
from conftest import build_tiny_cnn
from edgec.core.errors import EdgecError

SHORT = int(os.environ.get("FUZZ_SHORT_EXAMPLES", "150"))
# Per target in the slow run: 100,000 together, weighted toward the cheap targets (the artifact one
# builds an onnxruntime session whenever a mutation leaves the hashes intact).
SLOW_SCALE = float(os.environ.get("FUZZ_SLOW_SCALE", "1"))
SLOW = {"fuzz_model": 25_000, "fuzz_ext_model": 25_000, "fuzz_data": 35_000, "fuzz_artifact": 15_000}
MAX_RSS_MB = 3000
COUNTS: dict[str, int] = {}
TIMES: dict[str, float] = {}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------------ mutations

@st.composite
def mutated(draw, seed: bytes):
    """Byte-level mutations of a valid file: flips, overwrites with boundary values, insertions,
    deletions, truncation, splices of its own bytes."""
    b = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "splice", "varint"]))
        if not b:
            break
        i = draw(st.integers(0, len(b) - 1))
        if op == "flip":
            b[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            b[i] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]))
        elif op == "insert":
            b[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del b[i:i + draw(st.integers(1, 32))]
        elif op == "truncate":
            del b[i:]
        elif op == "splice":
            j = draw(st.integers(0, len(b) - 1))
            b[i:i] = b[j:j + draw(st.integers(1, 64))]
        elif op == "varint":  # a huge protobuf varint: lengths and dims that declare terabytes
            b[i:i] = bytes([0xFF] * draw(st.integers(1, 9))) + b"\x01"
    return bytes(b)


# ------------------------------------------------------------------------------------------ targets

def _seed_model(tmp: Path) -> bytes:
    m = build_tiny_cnn(size=8, classes=4)
    return m.SerializeToString()


def _seed_ext_model(tmp: Path) -> bytes:
    """A model whose weight lives in w.bin (external data fields are fuzzed too)."""
    m = B.add_model(B.external_init([1, 4], "w.bin", length=16))
    (tmp / "w.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    return m.SerializeToString()


def _target_model(path: Path):
    from edgec.core.model_io import input_specs, load_model, output_specs
    m = load_model(path)
    input_specs(m), output_specs(m)


def _seed_npz(tmp: Path) -> bytes:
    p = tmp / "seed.npz"
    np.savez(p, input=np.random.default_rng(0).uniform(0, 1, (3, 3, 8, 8)).astype(np.float32), labels=np.arange(3))
    return p.read_bytes()


def _target_data(path: Path):
    from edgec.core.backend import TensorSpec
    from edgec.core.data import open_dataset
    ds = open_dataset(path, [TensorSpec("input", "float32", ("N", 3, 8, 8))])
    for _ in ds:
        pass


def _artifact(tmp: Path) -> Path:
    import edgec
    src = tmp / "art-seed"
    if not src.exists():
        m = B.save(build_tiny_cnn(size=8, classes=4), tmp / "m.onnx")
        edgec.compile(m, backend="onnxruntime", output=src)
    return src


def _target_artifact(art: Path):
    from edgec.core.loader import load
    load(art, threads=1).close()


class Harness:
    def __init__(self, tmp: Path):
        self.tmp = tmp

    def check(self, name, fn, *args):
        try:
            fn(*args)
        except EdgecError as e:
            msg = str(e)
            assert msg and "\n" not in msg and "Traceback" not in msg, msg
        COUNTS[name] = COUNTS.get(name, 0) + 1
        assert _peak_rss_mb() < MAX_RSS_MB, f"peak RSS {_peak_rss_mb():.0f} MB"


def _run_all(tmp: Path, examples, deadline_s: float, only: tuple[str, ...] | None = None):
    """Fuzz the targets named in `only` (all four when None)."""
    os.environ["EDGEC_CACHE_DIR"] = str(tmp / "cache")
    h = Harness(tmp)

    def cfg(fn):
        n = examples[fn.__name__] if isinstance(examples, dict) else examples
        return settings(max_examples=n, deadline=timedelta(seconds=deadline_s), database=None,
                        suppress_health_check=list(HealthCheck), print_blob=True)(fn)
    mdir, edir, ddir = (tmp / n for n in ("model", "ext", "data"))
    for d in (mdir, edir, ddir):
        d.mkdir(exist_ok=True)
    model_seed, ext_seed, npz_seed = _seed_model(mdir), _seed_ext_model(edir), _seed_npz(ddir)

    @cfg
    @given(mutated(model_seed))
    def fuzz_model(blob):
        (mdir / "m.onnx").write_bytes(blob)
        h.check("model", _target_model, mdir / "m.onnx")

    @cfg
    @given(mutated(ext_seed), st.one_of(st.none(), mutated(np.arange(4, dtype=np.float32).tobytes())))
    def fuzz_ext_model(blob, data):
        (edir / "m.onnx").write_bytes(blob)
        if data is not None:
            (edir / "w.bin").write_bytes(data)
        h.check("model", _target_model, edir / "m.onnx")

    @cfg
    @given(mutated(npz_seed))
    def fuzz_data(blob):
        (ddir / "d.npz").write_bytes(blob)
        h.check("data", _target_data, ddir / "d.npz")

    names = only or tuple(KIND)
    targets = {f.__name__: f for f in (fuzz_model, fuzz_ext_model, fuzz_data)}
    if "fuzz_artifact" not in names:  # the artifact target's set-up compiles a model: only when it runs
        return _time_targets(h, [targets[n] for n in names])
    art = _artifact(tmp)
    manifest = json.loads((art / "manifest.json").read_text())
    model_seed_art = (art / "model.onnx").read_bytes()
    json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                               lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                               max_leaves=6)

    @cfg
    @given(st.sampled_from(sorted(manifest) + ["files.model.onnx.sha256", "files.model.onnx.size", "inputs.0.shape",
                                               "inputs.0.dtype", "outputs.0.name"]),
           json_values, st.one_of(st.none(), mutated(json.dumps(manifest).encode())),
           st.one_of(st.none(), mutated((art / "model.onnx").read_bytes())))
    def fuzz_artifact(key, value, raw, model_bytes):
        work = tmp / "art"
        if not work.exists():
            shutil.copytree(art, work)
        (work / "model.onnx").write_bytes(model_seed_art)
        m = json.loads(json.dumps(manifest))
        node, *path = key.split(".") if key.startswith(("files.", "inputs.", "outputs.")) else [key]
        if path:
            parts = [node] + (["model.onnx", path[-1]] if node == "files" else [path[0], path[1]])
            obj = m
            for p in parts[:-1]:
                obj = obj[int(p)] if isinstance(obj, list) else obj[p]
            obj[int(parts[-1]) if isinstance(obj, list) else parts[-1]] = value
        else:
            m[node] = value
        (work / "manifest.json").write_bytes(raw if raw is not None else json.dumps(m).encode())
        if model_bytes is not None:
            (work / "model.onnx").write_bytes(model_bytes)
        h.check("artifact", _target_artifact, work)

    targets["fuzz_artifact"] = fuzz_artifact
    return _time_targets(h, [targets[n] for n in names])


def _time_targets(h: Harness, fns) -> Harness:
    import time
    for f in fns:
        t0 = time.perf_counter()
        f()
        TIMES[f.__name__] = round(time.perf_counter() - t0, 1)
    return h


KIND = {"fuzz_model": "model", "fuzz_ext_model": "model", "fuzz_data": "data", "fuzz_artifact": "artifact"}


# One test per target (SHORT inputs each), so the two xdist workers share the fuzzing.
@pytest.mark.parametrize("target", list(KIND))
def test_fuzz_short(tmp_path, target):
    before = COUNTS.get(KIND[target], 0)
    _run_all(tmp_path, SHORT, deadline_s=20, only=(target,))
    assert COUNTS.get(KIND[target], 0) - before >= SHORT, COUNTS
    print(COUNTS, TIMES)


@pytest.mark.slow
def test_fuzz_slow(tmp_path, capsys):
    import time
    COUNTS.clear()
    t0 = time.perf_counter()
    _run_all(tmp_path, {k: int(v * SLOW_SCALE) for k, v in SLOW.items()}, deadline_s=30)
    total = sum(COUNTS.values())
    with capsys.disabled():
        print(f"\nfuzz: {total} inputs ({COUNTS}), 0 uncaught exceptions, peak RSS {_peak_rss_mb():.0f} MB, "
              f"{time.perf_counter() - t0:.0f} s, per target {TIMES}")
    assert total >= int(100_000 * SLOW_SCALE)
