"""manifest.json: reading, writing and the file table of an artifact directory.

Kept apart from `artifact.py` (staging and publishing) so that loading an artifact, which needs only
the manifest, imports nothing of the compile flow.
"""
from __future__ import annotations

import json
from pathlib import Path

from edgec.core.errors import InputError
from edgec.core.model_io import sha256_file

MANIFEST = "manifest.json"


def read_manifest(path: Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise InputError(f"artifact not found: {path} (give the directory `edgec compile -o` wrote)")
    mf = path / MANIFEST if path.is_dir() else path
    if not mf.exists():
        raise InputError(f"{path} is not an edgec artifact (no {MANIFEST}); give the directory `edgec compile -o` wrote")
    try:
        return json.loads(mf.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{mf} is not valid JSON ({e.msg} at line {e.lineno}); recompile the artifact") from None


def file_table(directory: Path) -> dict:
    return {p.relative_to(directory).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != MANIFEST}


def to_json(obj, indent: int | None = 2) -> str:
    """JSON for manifests and reports: numpy scalars/arrays and paths become plain values."""
    return json.dumps(obj, indent=indent, default=_json_default)


def write_manifest(directory: Path, manifest: dict) -> None:
    (directory / MANIFEST).write_text(to_json(manifest) + "\n")


def _json_default(o):
    import numpy as np
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
