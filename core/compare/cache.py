"""Resuming a sweep: a cell's artifact is reused when everything that shaped it is unchanged.

The key is a sha256 over the model's sha256, backend, precision, backend options, calibration and
validation data fingerprints (plus the sample counts and preprocessing that select from them), the
backend's toolchain versions and the edgec version. It lives in a sidecar `<cell>.cell.json` beside
the artifact directory, not inside it, because the artifact's manifest lists every file it holds.

Reuse depends on the key and an intact artifact only, never on which executor, host or process wrote the
cell (its `compiled_on` is for the report): in-process and fresh-worker compiles of one cell may differ in
bytes (OpenVINO's generated layer names, a QNN context binary) and are equally valid. So every key field
must read the same in any process: toolchain versions come from installed metadata (`toolchain_key`),
not from whatever modules the driver has imported by then.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from edgec.core.manifest import MANIFEST
from edgec.core.data import Dataset


def sha256_file(path):
    # model_io imports onnx: `edgec backends` and `--help` build compare's parser and must not pay for it
    from edgec.core.model_io import sha256_file as _sha

    return _sha(path)

SIDECAR_SUFFIX = ".cell.json"


def data_fingerprint(data) -> str | None:
    """Content hash of calibration/validation data as given (file bytes, or every file of a folder).

    Hashing the raw files instead of `Dataset.fingerprint()` avoids decoding every JPEG on each run; the
    preprocessing spec and sample counts, which decide what the model sees, are separate key fields.
    """
    if data is None:
        return None
    if isinstance(data, Dataset):
        return "dataset:" + data.fingerprint()
    p = Path(data)
    if not p.exists():
        return f"missing:{p}"  # the compile reports the missing file as the cell's error
    if p.is_file():
        return sha256_file(p)
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        h.update(f.relative_to(p).as_posix().encode())
        h.update(sha256_file(f).encode())
    return "dir:" + h.hexdigest()


def toolchain_key(backend: str) -> dict:
    """The backend's toolchain versions as a key field: `Backend.toolchain()` under probe.metadata_only(),
    so a driver that has compiled (imported OpenVINO, TVM) keys a cell as a fresh process does."""
    from edgec.core import probe
    from edgec.core.registry import get_backend

    try:
        with probe.metadata_only():
            return get_backend(backend).toolchain()
    except Exception as e:  # a key field, not a failure: the compile will report a broken toolchain itself
        from edgec.core.benchmark.timing import first_line
        return {"error": first_line(e)}


def cell_key(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def sidecar_path(artifact_dir: Path) -> Path:
    return artifact_dir.with_name(artifact_dir.name + SIDECAR_SUFFIX)


def lookup(artifact_dir: Path, key: str) -> dict | None:
    """The cached outcome of a cell with this key, or None when it must be (re)compiled.

    An "ok" entry also needs its artifact intact: the manifest readable and every listed file present
    with its recorded size (a sweep killed mid-publish or a hand-deleted file forces a recompile).
    """
    side = sidecar_path(artifact_dir)
    try:
        entry = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if entry.get("key") != key:
        return None
    if entry.get("status") != "ok":
        return entry
    try:
        manifest = json.loads((artifact_dir / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    for name, info in (manifest.get("files") or {}).items():
        f = artifact_dir / name
        if not f.is_file() or f.stat().st_size != info.get("size"):
            return None
    entry["manifest"] = manifest
    return entry


def store(artifact_dir: Path, key: str, inputs: dict, status: str, **extra) -> None:
    side = sidecar_path(artifact_dir)
    side.parent.mkdir(parents=True, exist_ok=True)
    tmp = side.with_name(side.name + ".tmp")
    tmp.write_text(json.dumps({"key": key, "status": status, "inputs": inputs, **extra}, indent=2, default=str) + "\n")
    tmp.replace(side)


def forget(artifact_dir: Path) -> None:
    sidecar_path(artifact_dir).unlink(missing_ok=True)
