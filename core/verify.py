"""An artifact's files checked against its manifest's sha256 before anything loads them.

A TVM `module.so` is native code that `edgec run` dlopens; OpenVINO's model.bin and an ONNX model's
weights decide what validation measures. A file changed after compile (bytes appended, weights edited,
a truncated copy) is refused in one line naming the file, unless the caller passes verify=False
(`--no-verify`): a checksum is integrity, not authenticity, so an artifact from an untrusted source
stays untrusted even when it verifies (see README, "Artifacts are code").
"""
from __future__ import annotations

from pathlib import Path

from edgec.core.errors import InputError
from edgec.core.model_io import sha256_file

FIX = "recompile it, or pass --no-verify (verify=False) if you changed it on purpose"


def verify_files(path: Path, manifest: dict) -> None:
    path = Path(path)
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise InputError(f"artifact {path}: its manifest lists no files with sha256, so they cannot be verified; {FIX}")
    root = path.resolve()
    for name, entry in files.items():
        if not isinstance(name, str) or not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise InputError(f"artifact {path}: manifest entry {name!r} in 'files' has no sha256; {FIX}")
        f = path / name
        try:
            inside = f.resolve().is_relative_to(root) and not Path(name).is_absolute()
        except (OSError, ValueError):
            inside = False
        if not inside:
            raise InputError(f"artifact {path}: manifest file '{name}' points outside the artifact directory; "
                             "this artifact is malformed or hostile: do not load it; recompile it from the model")
        if not f.is_file():
            raise InputError(f"artifact {path}: file '{name}' is missing (deleted after compile); {FIX}")
        size = f.stat().st_size
        want = entry.get("size")
        if isinstance(want, int) and size != want:
            change = "truncated" if size < want else "grown"
            raise InputError(f"artifact {path}: file '{name}' is {size} B but the manifest says {want} B "
                             f"({change} since compile); {FIX}")
        if sha256_file(f) != entry["sha256"]:
            raise InputError(f"artifact {path}: file '{name}' does not match the manifest's sha256 (modified "
                             f"since compile); {FIX}")
