"""The compile flow as a list of named stages over one options object.

    resolve -> load -> data -> (reference prefetch) -> optimize -> compress -> quantize -> [staging dir] lower
    -> validate -> publish

Each stage is a function of the `Compilation` (options plus what earlier stages produced), in
`core/stages.py`; a new step (input shapes, compression, fine-tuning) is one more function in the
list, not a longer function. This module knows the contract (`Backend`) but no backend in particular.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from edgec.core import interrupt, progress, reference_prefetch, stages
from edgec.core.artifact import Artifact, staging_dir
from edgec.core.claims import reconcile_claims
from edgec.core.data_guard import data_warnings
from edgec.core.debug.audit import audit_stage


@dataclass
class CompileOptions:
    """Everything a user can ask of one compile; `edgec.compile`'s keyword arguments, one to one."""

    backend: str = "onnxruntime"
    precision: str = "fp32"
    calibration: Any = None
    validation: Any = None
    output: Any = None
    preprocess: Any = None
    calib_samples: int | None = None
    calib_method: str | None = None
    val_samples: int | None = None
    options: dict | None = None  # backend options (-O key=value, --device, --target)
    min_cosine: float | None = None
    force: bool = False
    threads: int | None = None
    optimize: bool = True
    max_drop: float | None = None
    min_agreement: float | None = None
    compression: Any = None  # core/compression steps (--prune, --cluster, ...), after the optimizer
    compress_max_drop: float | None = None
    input_shapes: Any = None  # {input: [dims]} or "name=1x3x640x640 ..." (--input-shape): core/shapes.py
    keep_fp32: Any = None  # node names / op types that stay FP32 in int8/fp16 (--keep-fp32)
    float_tensors: Any = None  # int8: activation tensors left unquantized (--float-tensors; `edgec debug --bisect`)


@dataclass
class Compilation:
    """The state the stages hand on: the options, then what each stage made."""

    model_arg: Any
    opts: CompileOptions
    started: float = field(default_factory=time.perf_counter)
    backend: Any = None  # the Backend
    backend_options: dict = field(default_factory=dict)
    source_model: Any = None  # the FP32 ModelProto as given
    source: dict = field(default_factory=dict)  # path and sha256 of the source
    input_shapes: dict | None = None  # --input-shape, as applied to source_model
    out: Path | None = None
    calib: Any = None
    val: Any = None
    model: Any = None  # the working model: optimized, then quantized
    passes_report: dict | None = None
    compressed: Any = None  # core/compression's CompressResult when steps ran
    quant_report: dict | None = None
    reference: Any = None  # the ReferencePrefetch running since the data stage, which validate takes over
    ctx: Any = None  # the LoweringContext
    staging: Path | None = None
    manifest: dict | None = None
    stage_seconds: dict = field(default_factory=dict)

    def run(self, name: str, stage: Callable[["Compilation"], None]) -> None:
        interrupt.check()  # a signal whose KeyboardInterrupt a toolchain swallowed stops the compile here
        t, ok = time.perf_counter(), False
        try:
            with stages.one_line_errors(self, name):
                stage(self)
            ok = True
        finally:  # one line per stage on stderr (core/progress.py), the failed one too
            self.stage_seconds[name] = round(time.perf_counter() - t, 3)
            progress.stage(name, self.stage_seconds[name], time.perf_counter() - self.started, ok)


# Before the staging directory exists: nothing is written until a model is ready to lower.
PREPARE = [("resolve", stages.resolve_backend), ("load", stages.load_source), ("shapes", stages.fix_input_shapes),
           ("data", stages.open_inputs), ("prefetch", reference_prefetch.start), ("optimize", stages.optimize_graph),
           ("compress", stages.compress), ("quantize", stages.quantize)]
# Inside it: any failure removes the directory, so no half-written artifact is left behind.
IN_STAGING = [("lower", stages.lower), ("validate", stages.validate), ("audit", audit_stage), ("warnings", data_warnings),
              ("claims", reconcile_claims), ("publish", stages.publish)]


def compile(model, backend: str = "onnxruntime", precision: str = "fp32", **kwargs) -> Artifact:
    """Compile `model` (path or ModelProto) for `backend` at `precision`; returns the validated Artifact.

    Keyword arguments are `CompileOptions` fields. Raises EdgecError subclasses with one-line messages;
    ValidationFailed (exit 1) carries the manifest.
    """
    known = {f.name for f in fields(CompileOptions)}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise TypeError(f"compile() got an unexpected keyword argument {unknown[0]!r}")
    c = Compilation(model, CompileOptions(backend=backend, precision=precision, **kwargs))
    try:
        for name, stage in PREPARE:
            c.run(name, stage)
        with staging_dir(c.out) as tmp:
            c.staging = tmp
            for name, stage in IN_STAGING:
                c.run(name, stage)
    finally:
        reference_prefetch.stop(c)  # a compile that failed before validate leaves no thread behind
    return Artifact(c.out, c.manifest)
