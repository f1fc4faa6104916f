"""The compile flow: ONNX -> optimize -> quantize (core or backend) -> lower -> validate -> manifest -> publish.

This module knows the contract (`Backend`) but no backend in particular.
"""
from __future__ import annotations

import datetime as _dt
import time
from pathlib import Path
from typing import Any, Mapping

import onnx

from edgec.core import progress
from edgec.core.artifact import Artifact, check_output, file_table, publish, staging_dir, write_manifest
from edgec.core.compression.entropy import size_section
from edgec.core.backend import PRECISIONS, Backend, LoweringContext
from edgec.core.data import Dataset, open_dataset
from edgec.core.errors import EdgecError, InputError, UnsupportedError, ValidationFailed
from edgec.core.model_io import input_specs, load_model, output_specs, sha256_file
from edgec.core.registry import check_precision, get_backend, require_available
from edgec.core.validate import DEFAULT_MIN_COSINE, ReferenceRunner, validate_runner
from edgec.core.version import __version__


def _model_and_source(model) -> tuple[onnx.ModelProto, dict]:
    if isinstance(model, onnx.ModelProto):
        try:
            onnx.checker.check_model(model)
        except onnx.checker.ValidationError as e:
            raise InputError(f"model fails onnx.checker: {str(e).strip().splitlines()[0]}") from None
        return model, {"path": None, "sha256": __import__("hashlib").sha256(model.SerializeToString()).hexdigest()}
    p = Path(model)
    loaded = load_model(p)
    return loaded, {"path": str(p.resolve()), "sha256": sha256_file(p)}


def open_data(data, model: onnx.ModelProto, preprocess, what: str) -> Dataset | None:
    if data is None or isinstance(data, Dataset):
        return data
    ds = open_dataset(data, input_specs(model), preprocess)
    if len(ds) == 0:
        raise InputError(f"{what} data {data} holds no samples")
    return ds


def compile(model, backend: str = "onnxruntime", precision: str = "fp32", *, calibration=None, validation=None,
            output=None, preprocess: str | None = None, calib_samples: int | None = None,
            calib_method: str | None = None, val_samples: int | None = None, options: Mapping[str, Any] | None = None,
            min_cosine: float | None = None, force: bool = False, threads: int | None = None,
            optimize: bool = True, max_drop: float | None = None,
            min_agreement: float | None = None, compression=None, compress_max_drop: float | None = None) -> Artifact:
    """Compile `model` (path or ModelProto) for `backend` at `precision`; returns the validated Artifact.

    Raises EdgecError subclasses with one-line messages; ValidationFailed (exit 1) carries the manifest.
    """
    t0 = time.perf_counter()
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision '{precision}' (choose from {', '.join(PRECISIONS)})")
    be: Backend = get_backend(backend)
    check_precision(be, precision)
    require_available(be)
    opts = be.validate_options(dict(options or {}))
    model_proto, source = _model_and_source(model)
    stem = Path(source["path"]).stem if source["path"] else "model"
    out = Path(output) if output is not None else Path.cwd() / f"{stem}-{be.name}-{precision}"
    check_output(out, force)

    calib = open_data(calibration, model_proto, preprocess, "calibration")
    if calib is not None and calib_samples:
        calib = calib.take(calib_samples)
    val = open_data(validation, model_proto, preprocess, "validation")
    if val is not None and val_samples:
        val = val.take(val_samples)
    if precision == "int8" and calib is None:
        raise InputError("--precision int8 needs calibration data: pass --calib DATA (an .npz, image folder or "
                         "JPEG pack; add --preprocess for images)")

    reqs = be.requirements
    working = model_proto
    passes_report: dict | None = None
    if optimize:
        from edgec.core.optimizer import optimize as run_passes

        progress.say("optimizing graph")
        res = run_passes(working, opset_range=reqs.opset_range, progress=progress.say)
        working, passes_report = res.model, res.report
    _check_opset(be, working)
    from edgec.core.compression.stage import compression_stage
    working, comp = compression_stage(working, compression, calibration=calib, validation=val, max_drop=compress_max_drop,
                                      per_channel=reqs.quant.per_channel, say=progress.say)

    ctx = LoweringContext(model=working, source_model=working, precision=precision, out_dir=Path("."),
                          options=opts, calibration=calib, validation=val,
                          calib_method=calib_method or "auto", calib_samples=calib_samples, max_drop=max_drop,
                          min_agreement=min_agreement, threads=threads, progress=progress.say)
    quant_report = None
    if precision != "fp32":
        own = be.calibrate(ctx)
        if own is not None:
            ctx.model = own
            quant_report = ctx.info.pop("calibration", None)
        elif precision == "fp16" or reqs.core_int8:
            from edgec.core.quantization import quantize

            progress.say(f"quantizing to {precision} ({reqs.quant.placement} flavour)")
            kwargs = dict(flavour=reqs.quant, calibration=calib, samples=calib_samples, max_drop=max_drop,
                          min_agreement=min_agreement, validation=val, progress=progress.enabled())
            if calib_method and calib_method != "auto":
                kwargs["method"] = calib_method
            q = quantize(working, precision, **kwargs)
            ctx.model, quant_report = q.model, q.report
        ctx.model = comp.enforce(ctx.model) if comp else ctx.model  # pruned zeros / shared levels survive int8

    if min_cosine is None:
        min_cosine = DEFAULT_MIN_COSINE[precision] if comp is None else min(DEFAULT_MIN_COSINE[precision], comp.min_cosine)
    with staging_dir(out) as tmp:
        ctx.out_dir = tmp
        progress.say(f"lowering to {be.name}")
        try:
            files = be.lower(ctx)
        except EdgecError:
            raise
        except Exception as e:  # a toolchain crash: name the backend and the reason, keep it to one line
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise EdgecError(f"backend '{be.name}' failed to lower the model: {first}") from e
        missing = [f for f in files if not (tmp / f).is_file()]
        if missing:
            raise EdgecError(f"backend '{be.name}' reported file '{missing[0]}' but did not write it (a plugin bug)")
        manifest = {
            "edgec_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "backend": be.name,
            "toolchain": be.toolchain(),
            "precision": precision,
            "options": opts,
            "source": source["path"],
            "source_sha256": source["sha256"],
            "preprocess": _describe_pp(preprocess),
            "inputs": [s.to_json() for s in input_specs(model_proto)],
            "outputs": [s.to_json() for s in output_specs(model_proto)],
            "passes": passes_report,
            "quantization": quant_report,
            "compression": comp.report if comp else None,
            "calibration": _calib_section(calib, quant_report, calib_method),
            "files": {},
        }
        runner = be.load(tmp, manifest, threads=threads)
        try:
            # From the path when there is one: onnxruntime then reads external data (> 2 GB models) itself.
            reference = ReferenceRunner(source["path"] or model_proto, threads=threads)
            # Without --val, int8 is checked on its calibration samples: random normal inputs are far outside
            # the ranges it was calibrated for and would fail every honest quantization.
            check_data = val if val is not None else calib
            validation_report = validate_runner(runner, reference, check_data, model=model_proto, min_cosine=min_cosine,
                                                desc=f"validate {be.name} {precision}")
            layer_info = be.layer_info(runner)
        finally:
            runner.close()
        validation_report["on_calibration_data"] = val is None and calib is not None
        if val is None:
            what = "its calibration samples" if calib is not None else "seeded random inputs"
            progress.say(f"no --val data given: validated on {what} (see manifest.validation.data)")
        manifest["validation"] = validation_report
        manifest["backend_info"] = {**ctx.info, **({"layers": layer_info} if layer_info else {})}
        manifest["compile_seconds"] = round(time.perf_counter() - t0, 3)
        manifest["files"] = file_table(tmp)
        manifest["size"] = size_section(ctx.model, tmp)
        if not validation_report["passed"]:
            err = ValidationFailed(
                f"validation failed for {be.name} {precision}: cosine {validation_report['cosine']:.6f} < "
                f"{min_cosine} on {validation_report['samples']} samples; try another --calib-method, --max-drop, "
                "or lower --min-cosine to accept it")
            err.manifest = manifest
            raise err
        write_manifest(tmp, manifest)
        publish(tmp, out, force)
    return Artifact(out, manifest)


def _check_opset(be: Backend, model: onnx.ModelProto) -> None:
    """The optimizer converts into the backend's opset range when onnx can; say so when it could not."""
    if not be.requirements.opset_range:
        return
    lo, hi = be.requirements.opset_range
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and not lo <= opset <= hi:
        raise UnsupportedError(f"backend '{be.name}' needs ONNX opset {lo}..{hi} but the model is opset {opset} and "
                               f"onnx's version converter could not convert it; re-export the model at opset {hi}")


def _describe_pp(preprocess):
    if preprocess is None:
        return None
    from edgec.core.preprocess import Preprocess
    pp = Preprocess.parse(preprocess) if isinstance(preprocess, str) else preprocess
    return pp.describe()


def _calib_section(calib: Dataset | None, quant_report: dict | None, method: str | None) -> dict | None:
    if calib is None:
        return None
    section = dict((quant_report or {}).get("calibration") or {})
    section.setdefault("source", getattr(calib, "source", ""))
    section.setdefault("samples", len(calib))
    section.setdefault("method", method or "auto")
    if "data_sha256" not in section:
        section["data_sha256"] = calib.fingerprint()
    return section
