"""`edgec` command line: thin argparse layer over edgec.core.api.

Contract: with --json exactly one JSON document goes to stdout; progress and notes go to stderr.
Errors are one stderr line; exit codes in `main`'s docstring (2 input, 1 validation, 130/143 interrupts).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from edgec.core.cli_common import dump as _dump
from edgec.core.cli_common import key_value as _kv
from edgec.core.cli_common import pct as _pct
from edgec.core.cli_common import Parser, cosine, native_stdout_to_stderr, percent_open, percent_points, positive_int
from edgec.core.cli_common import table as _table
from edgec.core.errors import EdgecError, InputError, ValidationFailed
from edgec.core.version import __version__


def _validation_lines(v: dict) -> list[str]:
    note = " (the calibration data: no --val given)" if v.get("on_calibration_data") else (
        " (no --val given)" if v.get("random_inputs") else "")
    lines = [f"validation   {v['samples']} samples from {v.get('data')}{note}",
             f"  cosine     {v['cosine']:.6f}   (min {v.get('min_cosine')})",
             f"  max |err|  {v['max_abs_err']:.4g}",
             f"  top-1 agreement with FP32  {_pct(v.get('top1_agreement'))}"]
    if "top1_accuracy" in v:
        lines.append(f"  top-1 accuracy  {_pct(v['top1_accuracy'])}  (FP32 reference {_pct(v['reference_top1_accuracy'])})")
    lines.append(f"  result     {'PASSED' if v.get('passed') else 'FAILED'}")
    return lines


# ----------------------------------------------------------------------------------------------- commands

def cmd_compile(args) -> int:
    import edgec
    from edgec.core.compression.command import steps_from_args

    options = dict(args.option or [])
    if args.device is not None:
        options["device"] = args.device
    if args.target is not None:
        options["target"] = args.target
    try:
        art = edgec.compile(args.model, backend=args.backend, precision=args.precision, calibration=args.calib,
                            validation=args.val, output=args.output, preprocess=args.preprocess,
                            calib_samples=args.calib_samples, calib_method=args.calib_method,
                            val_samples=args.val_samples, options=options, min_cosine=args.min_cosine,
                            force=args.force, threads=args.threads, optimize=not args.no_optimize,
                            max_drop=args.max_drop, min_agreement=args.min_agreement,
                            compression=steps_from_args(args), compress_max_drop=args.compress_max_drop,
                            input_shapes=args.input_shape, keep_fp32=args.keep_fp32,
                            float_tensors=args.float_tensors)
    except ValidationFailed as e:
        if args.json and getattr(e, "manifest", None):
            _dump(e.manifest)
        raise
    m = art.manifest
    if args.json:
        _dump(m)
        return 0
    print(f"compiled {args.model} -> {art.path}")
    print(f"backend      {m['backend']} ({', '.join(f'{k} {v}' for k, v in m['toolchain'].items())})")
    print(f"precision    {m['precision']}")
    if m.get("passes"):
        b, a = m["passes"].get("before", {}), m["passes"].get("after", {})
        print(f"optimized    nodes {b.get('nodes')} -> {a.get('nodes')}")
    if m.get("calibration"):
        c = m["calibration"]
        print(f"calibration  {c.get('samples')} samples, method {c.get('method')}")
    q = m.get("quantization") or {}
    if q.get("placement"):
        p = q["placement"]
        print("placement    " + ", ".join(f"{k} {p[k]}" for k in ("int8", "fp16", "fp32") if k in p))
    for line in _validation_lines(m["validation"]):
        print(line)
    from edgec.core.claims import describe
    demand = describe(q.get("max_drop") or {})
    if demand:
        print(demand)
    print("files        " + ", ".join(f"{k} ({v['size'] / 1e6:.2f} MB)" for k, v in m["files"].items()))
    if (m.get("size") or {}).get("weights"):
        from edgec.core.compression.entropy import format_size
        print(format_size(m["size"]["weights"]))
    print(f"compile time {m['compile_seconds']:.1f} s")
    return 0


def cmd_backends(args) -> int:
    import edgec

    rows = edgec.list_backends()
    if args.json:
        _dump(rows)
        return 0
    table = []
    for r in rows:
        status = "yes" if r["available"] and r["can_run"] else ("build only" if r["available"] else "no")
        tool = ", ".join(f"{k} {v}" for k, v in r["toolchain"].items()) or "-"
        table.append([r["name"], status, ",".join(r["precisions"]), tool])
    print(_table(table, ["backend", "available", "precisions", "toolchain"]))
    for r in rows:
        if r.get("reason"):
            print(f"\n{r['name']}: {r['reason']}" + (f"\n  install: {r['hint']}" if r.get("hint") else ""))
    return 0


def cmd_inspect(args) -> int:
    from edgec.core.inspect import format_inspection, inspect_model

    if Path(args.model).is_dir() and (Path(args.model) / "manifest.json").is_file():
        from edgec.core.debug.audit import inspect_artifact
        return inspect_artifact(args.model, args.json)
    info = inspect_model(args.model)
    if args.json:
        _dump(info)
    else:
        print(format_inspection(info))
    return 0


def cmd_optimize(args) -> int:
    from edgec.core.artifact import check_writable_parent
    from edgec.core.model_io import load_model
    from edgec.core.optimizer import format_report, optimize

    out = Path(args.output)
    if out.exists() and not args.force:
        raise InputError(f"output {out} already exists; pass --force to replace it or choose another -o")
    check_writable_parent(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    load_model(args.model)  # the one-line errors for missing / corrupt / invalid files
    # A path, not a proto: the optimizer reads weights lazily, so models over 2 GB work.
    res = optimize(args.model, skip=args.skip or ())
    from edgec.core.staging import make_dir
    stage = make_dir(out)
    try:
        res.save(stage / out.name, external_data=(out.name + ".data") if res.large else None)
        for f in stage.iterdir():
            os.replace(f, out.parent / f.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    if args.json:
        _dump(res.report)
    else:
        print(format_report(res.report))
        print(f"wrote {out}")
    return 0


def cmd_run(args) -> int:
    import numpy as np

    import edgec
    from edgec.core.artifact import read_manifest
    from edgec.core.backend import TensorSpec
    from edgec.core.data import open_dataset

    manifest = read_manifest(Path(args.artifact))
    specs = [TensorSpec.from_json(s) for s in manifest["inputs"]]
    pp = args.preprocess or (manifest.get("preprocess") or {}).get("spec")
    data = open_dataset(args.input, specs, pp)
    if args.samples:
        data = data.take(args.samples)
    runner = edgec.load(args.artifact, threads=args.threads, verify=not args.no_verify)
    outputs: dict[str, list] = {}
    labels = []
    try:
        from edgec.core import progress
        for s in progress.bar(data, total=len(data), desc="run", unit="sample"):
            for k, v in runner.run(s.feeds).items():
                outputs.setdefault(k, []).append(v)
            labels.append(s.label)
    finally:
        runner.close()
    stacked = {k: np.concatenate(v, axis=0) for k, v in outputs.items()}
    summary = {"artifact": str(args.artifact), "samples": len(labels),
               "outputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in stacked.items()}}
    first = next(iter(stacked.values()))
    if first.ndim == 2 and first.shape[1] > 1:
        summary["top1"] = first.argmax(axis=1).tolist()[:20]
        if all(lbl is not None for lbl in labels) and labels:
            summary["top1_accuracy"] = float(np.mean(first.argmax(axis=1) == np.array(labels)))
    if args.output:
        out = Path(args.output)
        if not out.parent.exists() or not os.access(out.parent, os.W_OK):
            raise InputError(f"cannot write {out}: directory {out.parent} is missing or not writable; choose another -o")
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}.npz")
        np.savez(tmp, **stacked)
        os.replace(tmp, out)
        summary["written"] = str(out)
    if args.json:
        _dump(summary)
    else:
        for k, v in summary["outputs"].items():
            print(f"{k}: shape {v['shape']} {v['dtype']}")
        if "top1" in summary:
            print(f"top-1 (first {min(20, len(summary['top1']))}): {summary['top1']}")
        if "top1_accuracy" in summary:
            print(f"top-1 accuracy: {_pct(summary['top1_accuracy'])}")
        if "written" in summary:
            print(f"wrote {summary['written']}")
    return 0


def cmd_validate(args) -> int:
    import edgec

    report = edgec.validate(args.artifact, args.data, reference=args.reference, preprocess=args.preprocess,
                            min_cosine=args.min_cosine, samples=args.samples, threads=args.threads,
                            verify=not args.no_verify)
    if args.json:
        _dump(report)
    else:
        print(f"artifact     {report['artifact']} ({report['backend']} {report['precision']})")
        for line in _validation_lines(report):
            print(line)
    if not report["passed"]:
        print(f"edgec: error: validation failed: cosine {report['cosine']:.6f} < {report['min_cosine']}; recompile "
              "(another --calib-method, --max-drop) or pass a lower --min-cosine to accept it", file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="edgec", description="Compile ONNX models into validated edge artifacts.")
    p.add_argument("--version", action="version", version=f"edgec {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("compile", help="compile, calibrate and validate a model for a backend")
    c.add_argument("model", help="ONNX model file")
    c.add_argument("--backend", "-b", default="onnxruntime", help="backend name (see `edgec backends`)")
    c.add_argument("--precision", "-p", default="fp32", choices=["fp32", "fp16", "int8"])
    c.add_argument("--calib", help="calibration data: .npz, folder of .npy/.npz, image folder or JPEG pack")
    c.add_argument("--val", help="validation data (same formats; labels enable accuracy)")
    c.add_argument("--preprocess", help="image preprocessing: a preset (imagenet, efficientnet-lite, squeezenet-bgr, "
                                        "unit, fashion-mnist) and/or key=value pairs (order,scale,mean,std,layout,resize,crop)")
    c.add_argument("--calib-samples", type=positive_int, help="use at most N calibration samples")
    c.add_argument("--calib-method", choices=["auto", "minmax", "percentile", "entropy", "mse"],
                   help="activation range method (default auto: minmax for range-limited ops, mse elsewhere)")
    c.add_argument("--val-samples", type=positive_int, help="validate on at most N samples")
    c.add_argument("--max-drop", type=percent_points, help="int8 accuracy budget in points; sensitive layers stay in higher precision")
    c.add_argument("--min-agreement", type=percent_open, metavar="PCT",
                   help="int8: top-1 agreement with FP32 (%%) to reach on --val; activation tensors return to "
                        "float until a conservative estimate meets it")
    c.add_argument("--min-cosine", type=cosine, help="validation threshold (default 0.999 fp32/fp16, 0.99 int8)")
    c.add_argument("--device", help="backend device (e.g. CPU, GPU, NPU for openvino)")
    c.add_argument("--target", help="backend target (e.g. a hardware profile)")
    c.add_argument("--option", "-O", action="append", type=_kv, metavar="KEY=VALUE", help="backend option; repeatable")
    c.add_argument("--input-shape", action="append", metavar="NAME=DxD...",
                   help="concrete shape for an input with symbolic dims (e.g. images=1x3x640x640); repeatable")
    c.add_argument("--keep-fp32", action="append", metavar="NODE[,NODE...]",
                   help="int8/fp16: node names (or op types) the quantizer leaves in FP32, e.g. the line "
                        "`edgec debug --bisect --unit layers` prints; repeatable")
    c.add_argument("--float-tensors", action="append", metavar="TENSOR[,TENSOR...]",
                   help="int8: activation tensors left unquantized, with the layers that read or write them in "
                        "FP32 (the line `edgec debug --bisect` prints); repeatable")
    c.add_argument("--threads", type=positive_int, help="threads for validation runs")
    c.add_argument("--no-optimize", action="store_true", help="skip the core graph optimizer")
    c.add_argument("-o", "--output", help="artifact directory (default ./<model>-<backend>-<precision>)")
    c.add_argument("--force", action="store_true", help="replace an existing output directory")
    c.add_argument("--json", action="store_true", help="print the manifest as JSON on stdout")
    from edgec.core.compression.command import add_parsers as add_compression, add_step_flags
    add_step_flags(c, compile_verb=True)
    c.set_defaults(func=cmd_compile)

    b = sub.add_parser("backends", help="list registered backends and whether they run here")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_backends, imports_no_toolchain=True)

    i = sub.add_parser("inspect", help="a model: opsets, inputs/outputs, op histogram, parameters, MACs, size; "
                                       "an artifact: the precision each compute layer really runs")
    i.add_argument("model", help="ONNX model file, or an artifact directory (precision audit)")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_inspect)

    o = sub.add_parser("optimize", help="run the core graph optimizer alone")
    o.add_argument("model")
    o.add_argument("-o", "--output", required=True, help="output .onnx file")
    o.add_argument("--skip", action="append", metavar="PASS", help="skip a pass; repeatable")
    o.add_argument("--force", action="store_true")
    o.add_argument("--json", action="store_true")
    o.set_defaults(func=cmd_optimize)

    r = sub.add_parser("run", help="run an artifact on input data")
    r.add_argument("artifact")
    r.add_argument("--input", "-i", required=True, help="input data (.npz, folder, images, JPEG pack)")
    r.add_argument("--preprocess", help="override the artifact's preprocessing spec")
    r.add_argument("--samples", type=positive_int)
    r.add_argument("--threads", type=positive_int)
    r.add_argument("-o", "--output", help="write outputs to this .npz")
    r.add_argument("--no-verify", action="store_true", help="load the artifact even if its files do not match "
                                                            "the manifest's sha256 (you know why they changed)")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_run)

    v = sub.add_parser("validate", help="validate an artifact against its FP32 reference")
    v.add_argument("artifact")
    v.add_argument("--data", help="validation data (random inputs when omitted)")
    v.add_argument("--reference", help="FP32 ONNX model (default: the compiled source)")
    v.add_argument("--preprocess")
    v.add_argument("--samples", type=positive_int)
    v.add_argument("--min-cosine", type=cosine)
    v.add_argument("--threads", type=positive_int)
    v.add_argument("--no-verify", action="store_true", help="skip the sha256 check of the artifact's files")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_validate)

    from edgec.core.compare.command import add_parser as add_compare
    add_compare(sub)
    add_compression(sub)
    from edgec.core.benchmark.command import add_parser as add_benchmark
    add_benchmark(sub)
    from edgec.core.auto.command import add_parser as add_auto
    add_auto(sub)
    from edgec.core.debug.command import add_parser as add_debug
    add_debug(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 ok, 1 failed validation, 2 usage/input error, 130 SIGINT, 143 SIGTERM, 3 internal error.

    Exit 3 is only for a bug in edgec or a toolchain (any exception that is not an EdgecError): the line
    says so and EDGEC_DEBUG=1 shows the traceback. Anything a user can pass must end in 2 or 1; the bad-input
    catalog (tests/test_bad_inputs.py) and the fuzzers (tests/test_fuzz.py) hold the code to that.
    """
    from edgec.core import interrupt
    from edgec.core.sandbox import quiet_side_effects

    interrupt.install()
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # --help / --version (0) or a usage error already printed in one line (2)
            return e.code if isinstance(e.code, int) else 2
        if not getattr(args, "imports_no_toolchain", False):  # `edgec backends` stays cheap (issue 17)
            quiet_side_effects()
        with native_stdout_to_stderr(bool(getattr(args, "json", False))):
            return args.func(args)
    except EdgecError as e:
        if interrupt.pending() is not None:  # an error a toolchain raised because we interrupted it
            print("edgec: error: interrupted; nothing was written (a previous output is kept)", file=sys.stderr)
            return interrupt.EXIT_CODES.get(interrupt.pending(), 130)
        print(f"edgec: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        code = getattr(e, "exit_code", 130)
        what = "SIGTERM" if code == 143 else "SIGINT"
        print(f"edgec: error: interrupted ({what}); nothing was written (a previous output is kept)", file=sys.stderr)
        return code
    except Exception as e:  # keep the one-line contract; the traceback is one variable away
        if os.environ.get("EDGEC_DEBUG"):
            raise
        pending = interrupt.pending()
        if pending is not None:  # a toolchain turned our KeyboardInterrupt into its own error
            print("edgec: error: interrupted; nothing was written (a previous output is kept)", file=sys.stderr)
            return interrupt.EXIT_CODES.get(pending, 130)
        first = (str(e).strip().splitlines() or [""])[0][:300]
        print(f"edgec: internal error: {type(e).__name__}: {first} (a bug: please report it; set EDGEC_DEBUG=1 "
              "for the traceback)", file=sys.stderr)
        return 3
    finally:
        interrupt.restore()


if __name__ == "__main__":
    sys.exit(main())
