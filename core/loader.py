"""Loading an artifact directory into a Runner on its backend's runtime (`edgec.load`)."""
from __future__ import annotations

from pathlib import Path

from edgec.core.backend import Runner
from edgec.core.errors import BackendError
from edgec.core.manifest import read_manifest
from edgec.core.registry import get_backend


def load(path, threads: int | None = None, **options) -> Runner:
    """Load an artifact directory into a Runner on its backend's runtime."""
    manifest = read_manifest(Path(path))
    be = get_backend(manifest.get("backend", "?"))
    av = be.available()
    if not av.ok:
        raise BackendError(f"backend '{be.name}' is not available: {av.reason}; fix: {av.hint}")
    if not av.can_run:
        raise BackendError(f"backend '{be.name}' can build here but not run: {av.reason}; fix: {av.hint}")
    return be.load(Path(path), manifest, threads=threads, **options)
