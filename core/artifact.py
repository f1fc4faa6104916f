"""An artifact is a directory: the backend's native files plus manifest.json.

It is built in a temporary sibling directory and renamed into place only after validation passed, so
a failure at any step leaves no half-written artifact, and an existing output survives unless --force.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from edgec.core.errors import InputError
from edgec.core.model_io import sha256_file

MANIFEST = "manifest.json"


class Artifact:
    def __init__(self, path: str | Path, manifest: dict | None = None):
        self.path = Path(path)
        if manifest is None:
            manifest = read_manifest(self.path)
        self.manifest = manifest

    def __repr__(self):
        return f"Artifact({str(self.path)!r}, backend={self.manifest.get('backend')!r}, precision={self.manifest.get('precision')!r})"

    def load(self, threads: int | None = None):
        from edgec.core.api import load
        return load(self.path, threads=threads)


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


def write_manifest(directory: Path, manifest: dict) -> None:
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o):
    import numpy as np
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def check_output(out: Path, force: bool) -> None:
    """Fail early (before minutes of calibration) when the output cannot be written."""
    if out.exists() and not force:
        raise InputError(f"output {out} already exists; pass --force to replace it or choose another -o")
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a directory; remove it or choose another -o")
    check_writable_parent(out)


def check_writable_parent(out: Path) -> None:
    """The nearest existing ancestor of `out` must be a writable directory (we create the rest)."""
    probe_dir = out.parent
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir() or not os.access(probe_dir, os.W_OK | os.X_OK):
        raise InputError(f"output directory {out.parent} is not writable (permission denied at {probe_dir}); "
                         "choose another -o")


@contextmanager
def staging_dir(out: Path):
    """Yield a temporary directory beside `out`; removed on any failure."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def publish(tmp: Path, out: Path, force: bool) -> None:
    """Atomically move the finished temp dir to `out` (replacing it only with force)."""
    old = None
    if out.exists():
        if not force:
            raise InputError(f"output {out} already exists; pass --force to replace it or choose another -o")
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.rename(out, old)
    try:
        os.rename(tmp, out)
    except OSError:
        if old is not None:
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
