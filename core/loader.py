"""Loading an artifact directory into a Runner on its backend's runtime (`edgec.load`)."""
from __future__ import annotations

from pathlib import Path

from edgec.core.backend import Runner
from edgec.core.errors import BackendError, EdgecError
from edgec.core.manifest import read_manifest
from edgec.core.registry import get_backend


def load(path, threads: int | None = None, verify: bool = True, **options) -> Runner:
    """Load an artifact directory into a Runner on its backend's runtime; with `verify` (the default)
    every file must first match the manifest's sha256 (core/verify.py)."""
    from edgec.core.sandbox import quiet_side_effects
    from edgec.core.verify import verify_files

    quiet_side_effects()
    manifest = read_manifest(Path(path))
    if not isinstance(manifest, dict):
        from edgec.core.errors import InputError
        raise InputError(f"{path}: manifest.json is not a JSON object; recompile the artifact")
    if verify:
        verify_files(Path(path), manifest)
    be = get_backend(manifest.get("backend", "?"))
    av = be.available()
    if not av.ok:
        raise BackendError(f"backend '{be.name}' is not available: {av.reason}; fix: {av.hint}")
    if not av.can_run:
        raise BackendError(f"backend '{be.name}' can build here but not run: {av.reason}; fix: {av.hint}")
    try:
        return be.load(Path(path), manifest, threads=threads, **options)
    except EdgecError:
        raise
    except Exception as e:
        # The files match their hashes, so what the runtime refused is the manifest (edited: it is not
        # hashed itself) or an artifact from an incompatible toolchain version.
        from edgec.core import interrupt
        interrupt.check()
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise BackendError(f"backend '{be.name}' cannot load artifact {path} ({type(e).__name__}: {first}); its "
                           "manifest was edited or it was built by another toolchain version: recompile it") from None
