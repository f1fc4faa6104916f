"""`edgec debug`: the argparse parser and handler (registered by core/cli.py through `add_parser`)."""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from edgec.core.cli_common import cosine, dump, key_value, percent_open, percent_points, positive_int
from edgec.core.cli_common import nonneg_int, ranged
from edgec.core.errors import InputError


def add_parser(sub) -> argparse.ArgumentParser:
    d = sub.add_parser(
        "debug", help="layerwise FP32 vs artifact comparison, precision audit, and --bisect for a keep-set",
        description="Compare every tensor the backend can expose between the FP32 model and the compiled artifact "
                    "(cosine, NMSE/SQNR, max error, and the error each layer adds over its inputs), audit which "
                    "layers really run in integer precision, and with --bisect find the fewest worst layers to keep "
                    "in FP32 (--keep-fp32) for --min-agreement/--max-drop, measured on the backend's own runtime.")
    d.add_argument("target", help="an ONNX model (compiled first, with the flags below) or an artifact directory")
    d.add_argument("--backend", "-b", default="onnxruntime", help="backend for a model (default onnxruntime)")
    d.add_argument("--precision", "-p", default="int8", choices=["fp32", "fp16", "int8"], help="default int8")
    d.add_argument("--calib", help="calibration data (int8; --bisect recompiles with it)")
    d.add_argument("--val", help="data to compare on and, with --bisect, to select the keep-set on")
    d.add_argument("--val-skip", type=nonneg_int, default=0, metavar="N",
                   help="skip the first N samples of --val (e.g. 200 when --calib uses the same file's first 200)")
    d.add_argument("--val-samples", type=positive_int, help="use at most N samples of --val (after --val-skip)")
    d.add_argument("--samples", type=positive_int, default=16, help="samples for the layerwise comparison (default 16)")
    d.add_argument("--preprocess", help="image preprocessing preset and/or key=value pairs (see `edgec compile -h`)")
    d.add_argument("--calib-samples", type=positive_int, help="use at most N calibration samples")
    d.add_argument("--calib-method", choices=["auto", "minmax", "percentile", "entropy", "mse"])
    d.add_argument("--option", "-O", action="append", type=key_value, metavar="KEY=VALUE", help="backend option")
    d.add_argument("--bisect", action="store_true", help="search the keep-set for --min-agreement / --max-drop")
    d.add_argument("--unit", choices=["tensors", "layers"], default="tensors",
                   help="with --bisect: keep activation tensors unquantized (--float-tensors, default: removes the "
                        "rounding the ranking measured) or whole layers FP32 (--keep-fp32: the layer's weights and "
                        "output; its quantized neighbours keep their Q/DQ)")
    d.add_argument("--min-agreement", type=percent_open, metavar="PCT", help="with --bisect: top-1 agreement with FP32 (%%)")
    d.add_argument("--max-drop", type=percent_points, metavar="POINTS",
                   help="with --bisect: top-1 points (labelled --val) or agreement points lost")
    d.add_argument("--shrink", type=nonneg_int, default=16, metavar="N",
                   help="with --bisect: after the shortest ranked prefix is found, try dropping each of its members "
                        "(least ranked first), at most N more compiles (default 16; 0: the prefix as found)")
    d.add_argument("--accept", choices=["bound", "observed"], default="bound",
                   help="with --bisect: judge a candidate on its estimated agreement minus one standard error "
                        "(default; the core repair's smooth estimate from the logit gaps) or on the observed "
                        "top-1 agreement count, which a search over many candidates overfits")
    d.add_argument("--bound-z", type=ranged(float, 0, what="standard errors >= 0"), default=2.0, metavar="Z",
                   help="with --accept bound: judge on the agreement estimate minus (a drop estimate plus) Z standard errors (default 2: the one-SE "
                        "bound must clear the demand by one more SE of the selection's own estimate, so what is "
                        "met on the selection data holds on held-out data)")
    d.add_argument("--order", choices=["error", "cost"], default="error",
                   help="with --bisect --unit tensors: candidates by own added error (default) or by own error per "
                        "int8 multiply-accumulate each would turn float (latency-aware)")
    d.add_argument("--no-close", dest="close", action="store_false",
                   help="with --bisect --unit tensors: do not also float the quantized tensors a keep-set strands "
                        "(no int8 layer reads or writes them; their Q/DQ costs latency and adds rounding)")
    d.add_argument("--no-fp32-latency", dest="fp32_latency", action="store_false",
                   help="with --bisect: do not compile FP32 to time it beside INT8 and the keep-set")
    d.add_argument("--holdout", help="with --bisect: held-out data the chosen keep-set is measured on (never selected on)")
    d.add_argument("--holdout-samples", type=positive_int, help="use at most N samples of --holdout")
    d.add_argument("--min-cosine", type=cosine, help="validation threshold for the compiled artifact")
    d.add_argument("--threads", type=positive_int, default=1, help="threads (default 1, also for the latency ratio)")
    d.add_argument("--top", type=positive_int, default=5, help="how many worst layers to name (default 5)")
    d.add_argument("-o", "--output", help="directory for debug.json, index.html (and the artifacts compiled here)")
    d.add_argument("--json", action="store_true", help="print the JSON (`layers`, and `keep` with --bisect) on stdout")
    d.set_defaults(func=cmd_debug)
    return d


def _is_artifact(p: Path) -> bool:
    return p.is_dir() and (p / "manifest.json").is_file()


def _flag_extras(args) -> list[str]:
    extra = []
    for flag, v in (("--calib", args.calib), ("--preprocess", args.preprocess), ("--calib-samples", args.calib_samples),
                    ("--calib-method", args.calib_method)):
        if v is not None:
            extra += [flag, str(v)]
    for k, v in args.option or []:
        extra += ["-O", f"{k}={v}"]
    return extra


def cmd_debug(args) -> int:
    from edgec.core import progress
    from edgec.core.backend import TensorSpec
    from edgec.core.data import open_dataset
    from edgec.core.manifest import read_manifest

    from . import bisect as bis
    from .run import Slice, debug_artifact, format_layers

    if args.bisect and args.min_agreement is None and args.max_drop is None:
        raise InputError("--bisect needs a demand: --min-agreement PCT or --max-drop POINTS")
    if not args.bisect and (args.min_agreement is not None or args.max_drop is not None or args.holdout):
        raise InputError("--min-agreement / --max-drop / --holdout belong to --bisect; add --bisect")
    if args.val is None:
        raise InputError("debug needs data to compare on: pass --val DATA")
    if args.order == "cost" and args.unit != "tensors":
        raise InputError("--order cost ranks activation tensors by the int8 work they cost; use it with --unit tensors")
    target = Path(args.target)
    out_dir = Path(args.output) if args.output else None
    scratch = None
    work = out_dir
    if work is None:
        scratch = tempfile.TemporaryDirectory(prefix="edgec-debug-")
        work = Path(scratch.name)
    try:
        if _is_artifact(target):
            artifact = target
            manifest = read_manifest(artifact)
            backend, precision = manifest["backend"], manifest["precision"]
            model = manifest.get("source")
            options = dict(manifest.get("options") or {})
            options.update(dict(args.option or []))
            pp = args.preprocess or (manifest.get("preprocess") or {}).get("spec")
        else:
            if not target.is_file():
                raise InputError(f"{target} is neither an ONNX model nor an artifact directory (no manifest.json)")
            backend, precision, model = args.backend, args.precision, str(target)
            from edgec.core.registry import get_backend
            # what the backend's intermediates hook needs in the artifact (e.g. tvm keeps its ONNX)
            options = {**(getattr(get_backend(backend), "debug_options", None) or {}), **dict(args.option or [])}
            pp = args.preprocess
            artifact = None
        from edgec.core.model_io import input_specs, load_model
        specs = [TensorSpec.from_json(s) for s in read_manifest(artifact)["inputs"]] if artifact else \
            input_specs(load_model(target))
        val = open_dataset(args.val, specs, pp)
        if args.val_skip:
            val = Slice(val, args.val_skip)
        if args.val_samples:
            val = val.take(args.val_samples)
        if len(val) == 0:
            raise InputError(f"--val {args.val} holds no samples after --val-skip {args.val_skip}")
        compile_kwargs = dict(preprocess=pp, calib_samples=args.calib_samples, calib_method=args.calib_method,
                              options=options, threads=args.threads)
        base = None
        if artifact is None:
            import edgec
            from edgec.core.errors import ValidationFailed
            progress.say(f"compiling {target} for {backend} {precision}")
            dest = work / ("keep-0" if args.bisect else "artifact")
            try:
                art = edgec.compile(model, backend=backend, precision=precision, calibration=args.calib,
                                    validation=val, output=dest, force=True,
                                    min_cosine=args.min_cosine if args.min_cosine is not None else (-1.0 if args.bisect else None),
                                    **compile_kwargs)
            except ValidationFailed as e:
                if not args.bisect:
                    raise
                art = None
                base = e.manifest
            artifact = dest
            base = art.manifest if art is not None else base
        rep = debug_artifact(artifact, val, threads=args.threads, samples=args.samples, top=args.top)
        if args.bisect:
            if precision == "fp32":
                raise InputError("--bisect keeps layers of an int8/fp16 artifact in FP32; an fp32 artifact has none")
            if precision == "int8" and args.calib is None:
                raise InputError("--bisect recompiles the model: pass --calib DATA (the calibration data)")
            ranking = rep.get("tensor_ranking" if args.unit == "tensors" else "ranking") or []
            base_manifest = base or read_manifest(artifact)
            judge = None
            if args.accept == "bound":
                from edgec.core.model_io import load_model as _load
                judge = bis.Judge(_load(Path(model)), val, threads=args.threads, z=args.bound_z)
            everything = bis.universe(base_manifest, args.unit, rep.get("layers"))
            cost = None
            if args.unit == "tensors" and (args.close or args.order == "cost") and everything:
                from .cost import CostModel
                from .run import compiled_from
                cost = CostModel(compiled_from(base_manifest), everything)
            own = {e["tensor"]: e.get("own_nmse") or 0.0 for e in rep.get("layers") or []}
            b = bis.bisect(model, backend, precision, ranking, calibration=args.calib, selection=val, unit=args.unit,
                           workdir=work / "bisect", min_agreement=args.min_agreement, max_drop=args.max_drop,
                           compile_kwargs=compile_kwargs, say=progress.say, base=(artifact, base_manifest),
                           everything=everything, shrink_budget=args.shrink, judge=judge,
                           cost=cost, order=args.order, own_error=own)
            b["flag_line"] = bis.flag_line(model, backend, precision, b["keep"], _flag_extras(args), args.unit)
            if b["artifact"] and args.holdout:
                b["holdout"] = _holdout(args, b, artifact, model, specs, pp)
            if b["artifact"] and b["k"]:
                feeds = next(iter(val)).feeds
                fp32 = _fp32_artifact(model, backend, work, val, compile_kwargs) if args.fp32_latency else None
                b["latency"] = bis.latency_ratio(str(artifact), b["artifact"], threads=args.threads, feeds=feeds,
                                                 fp32=fp32, cost=b.get("cost"))
            rep["bisect"] = b
            rep["keep"] = b["keep"]
        if out_dir is not None:
            from .report import write_report
            rep["files"] = write_report(rep, out_dir)
        if args.json:
            dump(rep)
        else:
            print(format_layers(rep, args.top))
            if args.bisect:
                print(_format_bisect(rep["bisect"]))
            if rep.get("files"):
                print("wrote " + ", ".join(rep["files"].values()))
        if args.bisect and not rep["bisect"]["met"]:
            print(f"edgec: error: no keep-set met the demand on the selection data, even with all "
                  f"{rep['bisect']['candidates']} quantized {args.unit} in float (see the steps above)", file=sys.stderr)
            return 1
        return 0
    finally:
        if scratch is not None:
            scratch.cleanup()


def _fp32_artifact(model, backend: str, work: Path, val, compile_kwargs: dict) -> str | None:
    """The same model compiled FP32 on the same backend, for the latency beside the keep-set's."""
    import edgec
    from edgec.core import progress
    from edgec.core.errors import EdgecError

    kw = {k: v for k, v in compile_kwargs.items() if k not in ("calib_samples", "calib_method")}
    progress.say(f"compiling {model} for {backend} fp32 (its latency beside INT8 and the keep-set)")
    try:
        return str(edgec.compile(model, backend=backend, precision="fp32", validation=val.take(min(len(val), 16)),
                                 output=work / "fp32", force=True, min_cosine=-1.0, **kw).path)
    except EdgecError as e:
        progress.say(f"fp32 compile failed, the latency has no FP32 column: {e}")
        return None


def _holdout(args, b: dict, base_artifact: Path, model, specs, pp) -> dict:
    from edgec.core.data import open_dataset

    from . import bisect as bis

    data = open_dataset(args.holdout, specs, pp)
    if args.holdout_samples:
        data = data.take(args.holdout_samples)
    per = bis.agreement_per_image({"int8": str(base_artifact), "keep": b["artifact"]}, model, data, threads=args.threads)
    a, ase = bis.mean_se(per["int8"])
    k, kse = bis.mean_se(per["keep"])
    h = {"data": args.holdout, "samples": len(per["int8"]), "int8_agreement": round(a, 2), "int8_se": round(ase, 2),
         "keep_agreement": round(k, 2), "keep_se": round(kse, 2), "paired": bis.paired(per["int8"], per["keep"])}
    if "keep:top1" in per:
        h["keep_top1"] = round(bis.mean_se(per["keep:top1"])[0], 2)
        h["int8_top1"] = round(bis.mean_se(per["int8:top1"])[0], 2)
        h["reference_top1"] = round(bis.mean_se(per["reference:top1"])[0], 2)
    if args.min_agreement is not None:
        h["met"] = bool(k >= args.min_agreement)
    else:
        drop = (h["reference_top1"] - h["keep_top1"]) if "keep_top1" in h else 100.0 - k
        h["drop"] = round(drop, 2)
        h["met"] = bool(drop <= args.max_drop)
    return h


def _format_bisect(b: dict) -> str:
    from . import bisect as bis

    dem = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in b["demand"].items())
    def step(s):
        tag = f"-{s['dropped']}" if s.get("dropped") else f"k={s['k']}"
        if s.get("agreement") is None:
            return tag
        return f"{tag}:{s['agreement']:.2f}%" + (f"(>={s['agreement_bound']:.2f})" if "agreement_bound" in s else "")
    prefix = [s for s in b["steps"] if s.get("phase") != "shrink"]
    trials = [s for s in b["steps"] if s.get("phase") == "shrink"]
    lines = [f"bisect       {b.get('candidates')} candidates ({b.get('ranked')} ranked by own error, then every other "
             f"quantized {b['unit'][:-1]}): " + " ".join(step(s) for s in prefix)
             + f"  (agreement on {b['selection']['samples']} selection samples of {b['selection']['data']}; "
               f"judged on {b.get('judged_on')})"]
    if trials:
        lines.append(f"shrink       from k={b.get('prefix_k')}: " + " ".join(step(s) for s in trials))
    if b["met"]:
        lines.append(f"keep         {len(b['keep'])} {b['unit']} in float meet {dem} on the selection data: "
                     + (", ".join(b["keep"]) or "(none: INT8 as is meets it)"))
    else:
        lines.append(f"keep         NOT met: {dem} missed even with all {len(b['keep'])} quantized {b['unit']} in float")
    h = b.get("holdout")
    if h:
        lines.append(f"held-out     {h['samples']} samples of {h['data']}: INT8 {h['int8_agreement']:.2f} ± {h['int8_se']:.2f} %, "
                     f"keep-set {h['keep_agreement']:.2f} ± {h['keep_se']:.2f} % agreement; paired "
                     f"{h['paired']['diff_points']:+.2f} ± {h['paired']['se_points']:.2f} points "
                     f"(+{h['paired']['gained']}/-{h['paired']['lost']} images, McNemar p={h['paired']['mcnemar_p']}); "
                     f"{'meets' if h['met'] else 'does NOT meet'} {dem} on held-out data")
    c = b.get("cost")
    if c:
        lines.append(f"int8 work    the keep-set leaves {c['int8_layers']} of {c['int8_layers_base']} weighted layers int8 "
                     f"({100 * (c['int8_macs_fraction'] or 0):.0f} % of INT8's integer MACs)"
                     + (f"; {len(b['keep']) - len(b['members'])} of its {len(b['keep'])} tensors are stranded ones "
                        "closed over (no int8 layer read or wrote them)" if b.get("members") is not None
                        and len(b["members"]) != len(b["keep"]) else ""))
    lat = b.get("latency")
    if lat and "ratio" in lat:
        lines.append("latency      " + bis.latency_line(lat))
    if lat and lat.get("advice"):
        lines.append(f"advice       {lat['advice']}")
    lines.append(f"build it     {b['flag_line']}")
    return "\n".join(lines)

