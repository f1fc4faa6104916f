"""An artifact is a directory: the backend's native files plus manifest.json.

It is built in a temporary sibling directory and renamed into place only after validation passed, so
a failure at any step leaves no half-written artifact, and an existing output survives unless --force.
"""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from edgec.core import interrupt
from edgec.core.errors import InputError
from edgec.core.staging import clean_stale, make_dir, output_lock
from edgec.core.manifest import MANIFEST, file_table, read_manifest, write_manifest  # noqa: F401 (re-exported)


class Artifact:
    def __init__(self, path: str | Path, manifest: dict | None = None):
        self.path = Path(path)
        if manifest is None:
            manifest = read_manifest(self.path)
        self.manifest = manifest

    def __repr__(self):
        return f"Artifact({str(self.path)!r}, backend={self.manifest.get('backend')!r}, precision={self.manifest.get('precision')!r})"

    def load(self, threads: int | None = None):
        from edgec.core.loader import load
        return load(self.path, threads=threads)


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
    """Yield a temporary directory beside `out` (named for its owner, see core/staging.py); removed on
    any failure or interrupt. Dead compiles' leftovers beside `out` are cleaned up first."""
    from edgec.core import progress
    for note in clean_stale(out):
        progress.say(note)
    tmp = make_dir(out)
    try:
        yield tmp
    finally:
        with interrupt.deferred():  # a second Ctrl-C must not stop the cleanup half-way
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def publish(tmp: Path, out: Path, force: bool) -> None:
    """Move the finished temp dir to `out` (replacing it only with force), under the output lock and
    with signals deferred, after a last check that no interrupt arrived (core/interrupt.py)."""
    with output_lock(out), interrupt.deferred():
        interrupt.check()
        old = None
        if out.exists():
            if not force:
                raise InputError(f"output {out} already exists; pass --force to replace it or choose another -o")
            old = make_dir(out, "old")
            os.rename(out, old / "artifact")
        try:
            os.rename(tmp, out)
        except OSError:
            if old is not None:
                os.rename(old / "artifact", out)
                old.rmdir()
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
