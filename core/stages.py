"""The stages of a compile (see core/compiler.py for their order). Each takes the `Compilation` and
fills in what later stages read; none calls another."""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import os
import time
from dataclasses import replace
from pathlib import Path

import onnx

from edgec.core import interrupt, progress
from edgec.core.artifact import check_output, publish as publish_dir
from edgec.core.backend import PRECISIONS, LoweringContext
from edgec.core.compression.entropy import size_section
from edgec.core.data import CheckedDataset, Dataset, SampleList, open_dataset
from edgec.core.errors import EdgecError, InputError, UnsupportedError, ValidationFailed
from edgec.core.manifest import file_table, write_manifest
from edgec.core.model_io import input_specs, load_model, output_specs, sha256_file
from edgec.core.registry import check_precision, get_backend, require_available
from edgec.core.validate import DEFAULT_MIN_COSINE, failure_reason, validate_runner
from edgec.core.version import __version__


@contextlib.contextmanager
def one_line_errors(c, stage: str):
    """Any exception a stage lets through that is not already an EdgecError becomes one line naming the
    op or node it concerns (core/diagnose.py): a runtime that cannot load or run the model is the model's
    limit on that backend (UnsupportedError, exit 2); anything else is an internal error, still one line."""
    try:
        yield
    except (EdgecError, KeyboardInterrupt, MemoryError):
        raise
    except Exception as e:  # noqa: BLE001
        from edgec.core.diagnose import runtime_error

        model = c.model if c.model is not None else c.source_model
        be = c.backend.name if c.backend is not None else c.opts.backend
        if stage in ("validate", "lower"):
            raise UnsupportedError(f"{be}: {runtime_error(e, model, _runtime_of(e, be))}") from e
        raise EdgecError(f"internal error in the {stage} stage ({type(e).__name__}): {runtime_error(e, model)}; "
                         "set EDGEC_DEBUG=1 for the traceback and report it") from e


def _runtime_of(e: BaseException, backend: str) -> str:
    mod = type(e).__module__ or ""
    return "onnxruntime" if "onnxruntime" in mod or "ONNXRuntimeError" in str(e) else backend


def open_data(data, model: onnx.ModelProto, preprocess, what: str) -> Dataset | None:
    if data is None or isinstance(data, Dataset):
        return data
    if isinstance(data, (list, tuple)):  # [{input: full tensor}, ...]: each a whole sample (data.SampleList)
        ds = CheckedDataset(SampleList(data, source=f"<{len(data)} samples>"), input_specs(model))
        if len(ds) == 0:
            raise InputError(f"{what} data holds no samples")
        return ds
    ds = open_dataset(data, input_specs(model), preprocess)
    if len(ds) == 0:
        raise InputError(f"{what} data {data} holds no samples")
    return ds


def resolve_backend(c) -> None:
    """The backend, its precision and options: checked before any model or data is read."""
    o = c.opts
    from edgec.core.options_check import check_compile_options
    from edgec.core.sandbox import quiet_side_effects
    quiet_side_effects()
    check_compile_options(o)
    if o.precision not in PRECISIONS:
        raise InputError(f"unknown precision '{o.precision}' (choose from {', '.join(PRECISIONS)})")
    c.backend = get_backend(o.backend)
    check_precision(c.backend, o.precision)
    require_available(c.backend)
    c.backend_options = c.backend.validate_options(dict(o.options or {}))


def load_source(c) -> None:
    """The FP32 model (path or ModelProto) and where the artifact will go (checked writable now, before
    minutes of calibration)."""
    model = c.model_arg
    if isinstance(model, onnx.ModelProto):
        try:
            onnx.checker.check_model(model)
        except onnx.checker.ValidationError as e:
            raise InputError(f"model fails onnx.checker: {str(e).strip().splitlines()[0]}") from None
        c.source_model = model
        c.source = {"path": None, "sha256": hashlib.sha256(model.SerializeToString()).hexdigest()}
    else:
        p = Path(model)
        c.source_model = load_model(p)
        from edgec.core.model_guard import check_reference_accepts
        from edgec.core.model_io import check_input_sizes
        check_input_sizes(c.source_model, p)
        check_reference_accepts(c.source_model, p)
        c.source = {"path": str(p.resolve()), "sha256": sha256_file(p)}
    stem = Path(c.source["path"]).stem if c.source["path"] else "model"
    o = c.opts
    c.out = Path(o.output) if o.output is not None else Path.cwd() / f"{stem}-{c.backend.name}-{o.precision}"
    check_output(c.out, o.force)


def fix_input_shapes(c) -> None:
    """--input-shape: the user's concrete shapes written into the graph inputs, so every later stage
    (data checks, optimizer, backend, validation) works at them; the manifest records them."""
    from edgec.core.shapes import apply_input_shapes, parse_input_shapes

    shapes = parse_input_shapes(c.opts.input_shapes)
    if shapes:
        c.source_model = apply_input_shapes(c.source_model, shapes)
        c.input_shapes = shapes


def open_inputs(c) -> None:
    o = c.opts
    c.calib = open_data(o.calibration, c.source_model, o.preprocess, "calibration")
    if c.calib is not None and o.calib_samples:
        c.calib = c.calib.take(o.calib_samples)
    c.val = validation_data(c)
    if o.precision == "int8" and c.calib is None:
        raise InputError("--precision int8 needs calibration data: pass --calib DATA (an .npz, image folder or "
                         "JPEG pack; add --preprocess for images)")


def validation_data(c) -> Dataset | None:
    """--val as a Dataset of --val-samples; each call opens it anew (reference_prefetch reads its own copy)."""
    o = c.opts
    ds = open_data(o.validation, c.source_model, o.preprocess, "validation")
    return ds.take(o.val_samples) if ds is not None and o.val_samples else ds


def optimize_graph(c) -> None:
    c.model = c.source_model
    reqs = c.backend.requirements
    if c.opts.optimize:
        from edgec.core import optimize_cache  # the same model optimizes the same way: remembered

        def run_passes(model, **kw):  # imported only on a cache miss (onnx-ir and the passes take a while)
            from edgec.core.optimizer import optimize

            return optimize(model, **kw)

        progress.say("optimizing graph")
        try:
            c.model, c.passes_report = optimize_cache.optimize(c.model, reqs.opset_range, run_passes, progress.say)
        except Exception as e:
            if type(e).__name__ != "SerdeError":  # onnx-ir cannot represent the model: an input problem
                raise
            raise InputError(f"onnx-ir cannot read the model for the optimizer ({str(e).splitlines()[0][:200]}); "
                             "the model is malformed: re-export it, or pass --no-optimize") from None
    _check_opset(c.backend, c.model)


def compress(c) -> None:
    """Pruning / weight sharing (core/compression), before quantization so INT8 sees the final weights."""
    if not c.opts.compression:
        return
    from edgec.core.compression.stage import compression_stage

    flavour = c.backend.quant_flavour(c.backend_options)  # cluster on the grid the backend will quantize to
    c.model, c.compressed = compression_stage(c.model, c.opts.compression, calibration=c.calib, validation=c.val,
                                              max_drop=c.opts.compress_max_drop, per_channel=flavour.per_channel,
                                              say=progress.say, qmax=64 if flavour.reduce_range else 127)


def quantize(c) -> None:
    """fp16 or int8: the backend's own calibrator when it has one, else the core's, in its flavour."""
    o, be = c.opts, c.backend
    c.ctx = LoweringContext(model=c.model, source_model=c.model, precision=o.precision, out_dir=Path("."),
                            options=c.backend_options, calibration=c.calib, validation=c.val,
                            calib_method=o.calib_method or "auto", calib_samples=o.calib_samples,
                            max_drop=o.max_drop, min_agreement=o.min_agreement, threads=o.threads,
                            progress=progress.say, keep_fp32=_keep_list(o.keep_fp32),
                            float_tensors=_keep_list(o.float_tensors))
    if o.precision == "fp32":
        return
    opset_note = None
    if o.precision == "int8":  # per-channel Q/DQ needs opset 13: convert older models, else per-tensor
        from edgec.core.quantization.opset import prepare

        c.model, _, opset_note = prepare(c.model, be.quant_flavour(c.backend_options))
        c.ctx.model = c.ctx.source_model = c.model
        if opset_note:
            c.ctx.info["int8_opset"] = opset_note["opset"]
    own = be.calibrate(c.ctx)
    if own is not None:
        c.ctx.model = own
        c.quant_report = c.ctx.info.pop("calibration", None)
        if opset_note and isinstance(c.quant_report, dict):
            c.quant_report = {**c.quant_report, **opset_note}
    elif o.precision == "fp16" or be.requirements.core_int8:
        from edgec.core.quantization import quantize as core_quantize

        flavour = be.quant_flavour(c.backend_options)
        if opset_note is not None and opset_note["opset"]["per_channel"] is False:
            flavour = replace(flavour, per_channel=False)
        progress.say(f"quantizing to {o.precision} ({flavour.placement} flavour)")
        kwargs = dict(flavour=flavour, calibration=c.calib, samples=o.calib_samples, max_drop=o.max_drop,
                      min_agreement=o.min_agreement, validation=c.val, progress=progress.enabled(),
                      keep_fp32=c.ctx.keep_fp32, float_tensors=c.ctx.float_tensors)
        if o.calib_method and o.calib_method != "auto":
            kwargs["method"] = o.calib_method
        if c.backend_options.get("weight_rounding") in ("gptq", "nearest"):  # -O weight_rounding=nearest
            kwargs["weight_rounding"] = c.backend_options["weight_rounding"] == "gptq"
        q = core_quantize(c.model, o.precision, **kwargs)
        c.ctx.model, c.quant_report = q.model, {**q.report, **(opset_note or {})}
    if c.compressed is not None:  # pruned zeros and shared levels survive int8 rounding
        c.ctx.model = c.compressed.enforce(c.ctx.model)


def lower(c) -> None:
    be, tmp = c.backend, c.staging
    c.ctx.out_dir = tmp
    progress.say(f"lowering to {be.name}")
    try:
        files = be.lower(c.ctx)
    except EdgecError:
        raise
    except Exception as e:  # a toolchain crash: name the backend, the op and the reason, in one line
        interrupt.check()  # or a Ctrl-C the toolchain wrapped in its own exception type
        from edgec.core.diagnose import runtime_error
        from edgec.core.staging import disk_full
        if disk_full(tmp, e):
            raise InputError(f"no space left on the output's filesystem ({tmp.parent}) while backend '{be.name}' "
                             "was writing the artifact; free some space or choose another -o") from None
        raise EdgecError(f"backend '{be.name}' failed to lower the model: {runtime_error(e, c.ctx.model, be.name)}") from e
    missing = [f for f in files if not (tmp / f).is_file()]
    if missing:
        raise EdgecError(f"backend '{be.name}' reported file '{missing[0]}' but did not write it (a plugin bug)")
    o = c.opts
    c.manifest = {
        "edgec_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "backend": be.name,
        "toolchain": be.toolchain(),
        "precision": o.precision,
        "options": c.backend_options,
        "source": c.source["path"],
        "source_sha256": c.source["sha256"],
        "preprocess": _describe_pp(o.preprocess),
        "inputs": [s.to_json() for s in input_specs(c.source_model)],
        "input_shapes": c.input_shapes,
        "outputs": [s.to_json() for s in output_specs(c.source_model)],
        "passes": c.passes_report,
        "quantization": c.quant_report,
        "compression": c.compressed.report if c.compressed is not None else None,
        "calibration": _calib_section(c.calib, c.quant_report, o.calib_method),
        "files": {},
    }


def _reference_sha(c) -> str:
    return c.source["sha256"] if c.source["path"] else hashlib.sha256(c.source_model.SerializeToString()).hexdigest()


def reference_for(c):
    """The FP32 reference for validation: the source model on onnxruntime, its outputs remembered across compiles."""
    from edgec.core.reference_cache import CachedReference

    return CachedReference(c.source["path"] or c.source_model, _reference_sha(c), threads=c.opts.threads)


def reference_coverage(c) -> str | None:
    """The key under which a compile notes that the reference store answers all of --val (then the next
    compile's prefetch need not decode and hash the data a second time only to find every sample stored)."""
    from edgec.core.reference_cache import coverage_key

    o = c.opts
    if not isinstance(o.validation, (str, os.PathLike)):
        return None  # samples in memory: no file to note (and no model hash to compute for it)
    return coverage_key(_reference_sha(c), o.validation, str(o.preprocess), o.val_samples, c.input_shapes)


def validate(c) -> None:
    """The artifact on the backend's own runtime against the FP32 model on onnxruntime."""
    o, be, manifest = c.opts, c.backend, c.manifest
    min_cosine = o.min_cosine if o.min_cosine is not None else DEFAULT_MIN_COSINE[o.precision]
    if o.min_cosine is None and c.compressed is not None:  # compression's own, looser, default
        min_cosine = min(min_cosine, c.compressed.min_cosine)
    runner = be.load(c.staging, manifest, threads=o.threads)
    try:
        # From the path when there is one: onnxruntime then reads external data (> 2 GB models) itself.
        # Outputs remembered across compiles, and computed ahead while earlier stages ran (reference_prefetch.py).
        reference = c.reference.handover() if c.reference is not None else reference_for(c)
        # Without --val, int8 is checked on its calibration samples: random normal inputs are far outside
        # the ranges it was calibrated for and would fail every honest quantization.
        check_data = c.val if c.val is not None else c.calib
        try:
            report = validate_runner(runner, reference, check_data, model=c.source_model, min_cosine=min_cosine,
                                     desc=f"validate {be.name} {o.precision}")
        except Exception as e:
            from edgec.core.model_guard import reference_failure
            err = reference_failure(e, f"validating {be.name} {o.precision}")
            if err is None:
                raise
            raise err from None
        report["runtime"] = getattr(runner, "where", be.name)  # what actually ran (may not be the artifact)
        if c.reference is not None:
            c.reference.finish()  # it has made every sample validation read; nothing runs on after this
        report["reference_cache"] = reference.report()
        reference.save()
        if c.val is not None and reference.complete():
            from edgec.core.reference_cache import mark_covered
            mark_covered(reference_coverage(c), report["samples"])
        layer_info = be.layer_info(runner)
    finally:
        runner.close()
    report["on_calibration_data"] = c.val is None and c.calib is not None
    if c.val is None:
        what = "its calibration samples" if c.calib is not None else "seeded random inputs"
        progress.say(f"no --val data given: validated on {what} (see manifest.validation.data)")
    manifest["validation"] = report
    manifest["backend_info"] = {**c.ctx.info, **({"layers": layer_info} if layer_info else {})}
    manifest["files"] = file_table(c.staging)
    manifest["size"] = size_section(c.ctx.model, c.staging)
    if not report["passed"]:
        manifest["compile_seconds"] = round(time.perf_counter() - c.started, 3)
        err = ValidationFailed(
            f"validation failed for {be.name} {o.precision} on {report['samples']} samples: "
            f"{failure_reason(report)}; try another --calib-method, --max-drop, or lower --min-cosine to accept it")
        err.manifest = manifest
        raise err


def publish(c) -> None:
    c.manifest["stage_seconds"] = dict(c.stage_seconds)
    c.manifest["compile_seconds"] = round(time.perf_counter() - c.started, 3)
    write_manifest(c.staging, c.manifest)
    publish_dir(c.staging, c.out, c.opts.force)


def _check_opset(be, model: onnx.ModelProto) -> None:
    """The optimizer converts into the backend's opset range when onnx can; say so when it could not."""
    if not be.requirements.opset_range:
        return
    lo, hi = be.requirements.opset_range
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and not lo <= opset <= hi:
        raise UnsupportedError(f"backend '{be.name}' needs ONNX opset {lo}..{hi} but the model is opset {opset} and "
                               f"onnx's version converter could not convert it; re-export the model at opset {hi}")


def _keep_list(keep) -> tuple:
    """--keep-fp32 "a,b" (repeatable) or a list of names, as one tuple (split_keep_list checks the names)."""
    if not keep:
        return ()
    items = [keep] if isinstance(keep, str) else list(keep)
    return tuple(k.strip() for item in items for k in str(item).split(",") if k.strip())


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
