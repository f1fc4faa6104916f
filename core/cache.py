"""edgec's on-disk cache of work that is the same from one compile to the next, keyed by content hash.

Users iterate: compile, change a flag, compile again; `compare` and `auto` compile the same model for
many cells. What depends only on (model, data, settings) is computed once and reused (issue 17):
  reference/   the FP32 reference's outputs on the validation data, and which --val files they cover
               (core/reference_cache.py)
  rounding/    GPTQ-rounded weights and bias-correction deltas per (model, data, flavour) (core/quantization)
  size/        the manifest's coded weight sizes per lowered model (core/compression/entropy.py)
  probe/       small facts about installed toolchains (TVM's LLVM version) for `edgec backends`
  tvm-objects/ one object file per fused TVM function, by its TIR and target (backends/tvm/objects.py)
  tvm-module/  whole TVM libraries, by everything their build reads (backends/tvm/module_cache.py)
(calibration histograms keep their own directory, core/quantization/calibration.py.)

Keys are sha256 of everything the result depends on (model bytes, data fingerprint, settings, edgec
and toolchain versions) so a stale entry is never read; a hit is checked against its stored key. Writes
are atomic (a concurrent compile never reads half a file); an unwritable cache only costs the
recomputation. EDGEC_CACHE=0 turns it off; EDGEC_CACHE_DIR moves it (default ~/.cache/edgec).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

VERSION = 1  # bump when the stored layout changes


def enabled() -> bool:
    return os.environ.get("EDGEC_CACHE", "1").lower() not in ("0", "off", "false", "no")


def root() -> Path:
    base = os.environ.get("EDGEC_CACHE_DIR")
    return Path(base) if base else Path.home() / ".cache" / "edgec"


def key(*parts: Any) -> str:
    """sha256 over the parts: bytes as they are, anything else as canonical JSON."""
    h = hashlib.sha256(f"edgec-cache-v{VERSION}".encode())
    for p in parts:
        b = p if isinstance(p, (bytes, bytearray, memoryview)) else json.dumps(p, sort_keys=True, default=str).encode()
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def file_key(path) -> str | None:
    """A key for an installed file that changes when it is replaced (path, size, mtime); None if absent."""
    try:
        st = Path(path).stat()
    except (OSError, TypeError):
        return None
    return key(str(path), st.st_size, st.st_mtime_ns)


def _path(kind: str, k: str, suffix: str) -> Path:
    return root() / kind / f"{k[:32]}{suffix}"


def write_atomic(path: Path, data: bytes, *, fsync: bool = False) -> None:
    """Write `data` to `path` so that concurrent compiles never read a half-written file; a read-only or
    full cache directory only costs a recomputation next time, and an interrupt leaves no partial file."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        tmp = Path(name)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError:
        pass  # read-only or full: the next compile recomputes
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


# ------------------------------------------------------------------------------- small JSON values

def recall(kind: str, k: str) -> Any:
    """The value stored under `k`, or None."""
    if not enabled():
        return None
    try:
        doc = json.loads(_path(kind, k, ".json").read_text())
    except (OSError, ValueError):
        return None
    return doc.get("value") if isinstance(doc, dict) and doc.get("key") == k else None


def remember(kind: str, k: str, compute: Callable[[], Any]) -> Any:
    """The stored value, else compute() stored (JSON-serializable values)."""
    hit = recall(kind, k)
    if hit is not None:
        return hit
    value = compute()
    if enabled() and value is not None:
        write_atomic(_path(kind, k, ".json"), json.dumps({"key": k, "value": value}).encode())
    return value


# ------------------------------------------------------------------------------- arrays

def load_arrays(kind: str, k: str) -> dict | None:
    """{name: ndarray} stored under `k`, or None (absent, unreadable, or another key's file)."""
    if not enabled():
        return None
    p = _path(kind, k, ".npz")
    if not p.is_file():
        return None
    import numpy as np

    try:
        with np.load(p, allow_pickle=False) as z:
            if str(z["__key__"]) != k:
                return None
            return {n: z[n] for n in z.files if n != "__key__"}
    except Exception:  # a truncated or foreign file is a miss, never an error
        return None


def save_arrays(kind: str, k: str, arrays: dict) -> None:
    if not enabled():
        return
    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, __key__=np.array(k), **arrays)
    write_atomic(_path(kind, k, ".npz"), buf.getvalue())


# ------------------------------------------------------------------------------- bytes + a JSON sidecar

def load_blob(kind: str, k: str) -> tuple[bytes, Any] | None:
    """(bytes, meta) stored under `k`, or None."""
    meta = recall(kind, k)
    if meta is None:
        return None
    try:
        data = _path(kind, k, ".bin").read_bytes()
    except OSError:
        return None
    if hashlib.sha256(data).hexdigest() != meta.get("sha256"):  # truncated or replaced: a miss
        return None
    return data, meta.get("meta")


def save_blob(kind: str, k: str, data: bytes, meta: Any) -> None:
    if not enabled():
        return
    write_atomic(_path(kind, k, ".bin"), data)  # the blob first: a sidecar never points at a missing blob
    write_atomic(_path(kind, k, ".json"),
                  json.dumps({"key": k, "value": {"sha256": hashlib.sha256(data).hexdigest(), "meta": meta}}).encode())


def code_key(package_dir) -> str:
    """sha256 of a package's Python sources: results of edited code are never read back."""
    return key(*[p.read_bytes() for p in sorted(Path(package_dir).rglob("*.py"))])
