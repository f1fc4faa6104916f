"""manifest.json: reading, writing and the file table of an artifact directory.

Kept apart from `artifact.py` (staging and publishing) so that loading an artifact, which needs only
the manifest, imports nothing of the compile flow.
"""
from __future__ import annotations

import json
from pathlib import Path

from edgec.core.errors import InputError

MANIFEST = "manifest.json"


def read_manifest(path: Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise InputError(f"artifact not found: {path} (give the directory `edgec compile -o` wrote)")
    mf = path / MANIFEST if path.is_dir() else path
    if not mf.exists():
        raise InputError(f"{path} is not an edgec artifact (no {MANIFEST}); give the directory `edgec compile -o` wrote")
    try:
        if mf.stat().st_size > MAX_MANIFEST_BYTES:
            raise InputError(f"{mf} is {mf.stat().st_size} B, far more than a manifest holds; recompile the artifact")
        manifest = json.loads(mf.read_bytes().decode("utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{mf} is not valid JSON ({e.msg} at line {e.lineno}); recompile the artifact") from None
    except (UnicodeDecodeError, RecursionError, ValueError) as e:
        raise InputError(f"{mf} is not a readable manifest ({type(e).__name__}); recompile the artifact") from None
    except OSError as e:
        raise InputError(f"cannot read {mf} ({e.strerror or type(e).__name__}); check its permissions") from None
    check_schema(manifest, mf)
    return manifest


MAX_MANIFEST_BYTES = 64 << 20


def check_schema(m, mf: Path) -> None:
    """The fields every reader of a manifest indexes, with their types: a hand-edited or damaged
    manifest is refused here in one line instead of a KeyError deep in a backend's loader."""
    def bad(what: str):
        return InputError(f"{mf}: {what}; the manifest is damaged: recompile the artifact")

    if not isinstance(m, dict):
        raise bad("not a JSON object")
    if not isinstance(m.get("backend"), str):
        raise bad("'backend' is missing or not a string")
    if "precision" in m and not isinstance(m["precision"], str):
        raise bad("'precision' is not a string")
    for key in ("inputs", "outputs"):
        specs = m.get(key)
        if not isinstance(specs, list) or (key == "outputs" and not specs):  # a model may have no inputs
            raise bad(f"'{key}' is missing or not a list of tensors")
        for s in specs:
            if not (isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("dtype"), str)
                    and isinstance(s.get("shape"), list)
                    and all(isinstance(d, (int, str)) and not isinstance(d, bool) for d in s["shape"])):
                raise bad(f"an entry of '{key}' is not {{name, dtype, shape}}")
            if s["dtype"].startswith(("sequence(", "optional(", "map(")):  # model_io.value_dtype's non-tensor values
                continue
            try:
                import numpy as np
                np.dtype(s["dtype"])
            except TypeError:
                raise bad(f"'{key}' entry '{s['name']}' has unknown dtype {s['dtype']!r}") from None
    if not isinstance(m.get("files", {}), dict):
        raise bad("'files' is not an object")
    for key in ("options", "preprocess", "validation", "quantization", "calibration", "backend_info"):
        if m.get(key) is not None and not isinstance(m[key], dict):
            raise bad(f"'{key}' is not an object")
    pp = m.get("preprocess")
    if pp and pp.get("spec") is not None and not isinstance(pp["spec"], str):
        raise bad("'preprocess.spec' is not a string")
    if m.get("source") is not None and not isinstance(m["source"], str):
        raise bad("'source' is not a string")


def file_table(directory: Path) -> dict:
    from edgec.core.model_io import sha256_file  # imports onnx: not for every --json dump

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
