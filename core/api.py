"""The Python API; the CLI is a thin layer over these functions."""
from __future__ import annotations

from pathlib import Path

from edgec.core.artifact import Artifact
from edgec.core.compiler import compile
from edgec.core.stages import open_data
from edgec.core.errors import InputError
from edgec.core.loader import load
from edgec.core.model_io import load_model, sha256_file
from edgec.core.registry import list_backends
from edgec.core.validate import DEFAULT_MIN_COSINE, ReferenceRunner, validate_runner

__all__ = ["Artifact", "compile", "load", "validate", "list_backends"]


def validate(artifact, data=None, *, reference=None, preprocess=None, min_cosine: float | None = None,
             samples: int | None = None, threads: int | None = None, verify: bool = True) -> dict:
    """Validate an artifact against its FP32 reference model on `data` (random inputs when None); with
    `verify` its files must first match the manifest's sha256."""
    art = artifact if isinstance(artifact, Artifact) else Artifact(artifact)
    if verify:  # before the reference is even read: a tampered artifact is refused first
        from edgec.core.verify import verify_files
        verify_files(art.path, art.manifest)
    manifest = art.manifest
    ref_path = reference or manifest.get("source")
    if not ref_path or not Path(ref_path).exists():
        raise InputError(f"the reference model {ref_path or '(unknown)'} is not available; pass --reference MODEL.onnx")
    note = None
    if sha256_file(Path(ref_path)) != manifest.get("source_sha256"):
        if reference is None:
            raise InputError(f"{ref_path} changed since the artifact was compiled (sha256 differs); pass --reference "
                             "with the original model")
        note = "reference model differs from the compiled source (sha256)"
    ref_model = load_model(ref_path)
    if preprocess is None and manifest.get("preprocess"):
        preprocess = manifest["preprocess"].get("spec")
    ds = open_data(data, ref_model, preprocess, "validation")
    if ds is not None and samples:
        ds = ds.take(samples)
    if min_cosine is None:
        min_cosine = DEFAULT_MIN_COSINE.get(manifest.get("precision"), 0.99)
    runner = load(art.path, threads=threads, verify=False)  # verified above
    try:
        report = validate_runner(runner, ReferenceRunner(ref_model, threads), ds, model=ref_model,
                                 min_cosine=min_cosine, desc="validate")
    finally:
        runner.close()
    report["artifact"] = str(art.path)
    report["backend"] = manifest.get("backend")
    report["precision"] = manifest.get("precision")
    if note:
        report["note"] = note
    return report
