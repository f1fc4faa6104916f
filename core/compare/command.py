"""`edgec compare`: the argparse parser and handler (registered by core/cli.py)."""
from __future__ import annotations

import argparse
import sys

from edgec.core.cli_common import coerce, cosine, dump, nonneg_int, positive_int, ranged
from edgec.core.compare import flags


def _backend_option(text: str) -> tuple[str, str, object]:
    if ":" not in text or "=" not in text.split(":", 1)[1]:
        raise argparse.ArgumentTypeError(f"--option expects BACKEND:KEY=VALUE, got {text!r}")
    backend, kv = text.split(":", 1)
    k, v = kv.split("=", 1)
    return backend.strip(), k.strip(), coerce(v.strip())


def add_parser(sub) -> argparse.ArgumentParser:
    c = sub.add_parser("compare", help="compile every backend x precision, validate, time interleaved, report",
                       description="Compile MODEL for every backend x precision, validate each on its own runtime "
                                   "against the FP32 reference, time all cells interleaved, and write report.json, "
                                   "report.md, pareto.png and index.html into -o. Re-running reuses artifacts whose "
                                   "inputs are unchanged.")
    c.add_argument("model", nargs="+", help="ONNX model file(s); several give one report and Pareto chart across models")
    c.add_argument("--backends", "-b", help="comma-separated backends (default: every registered one; unavailable "
                                            "ones get a row saying why)")
    c.add_argument("--precisions", "-p", default="fp32,fp16,int8", help="comma-separated (default fp32,fp16,int8)")
    c.add_argument("--calib", help="calibration data: int8 cells need it (without it they fail with that reason); "
                                   ".npz, folder, image folder or JPEG pack")
    c.add_argument("--val", help="validation data (labels enable top-1 accuracy); without it cells are judged by cosine "
                                 "on random inputs and no agreement is shown")
    c.add_argument("--preprocess", action="append", help="image preprocessing preset and/or key=value pairs (see "
                                                         "`edgec compile -h`); once for all models or once per model")
    c.add_argument("--calib-samples", type=positive_int, help="use at most N calibration samples")
    c.add_argument("--calib-method", choices=["auto", "minmax", "percentile", "entropy", "mse"],
                   help="activation range method (default auto)")
    c.add_argument("--val-samples", type=positive_int, help="validate on at most N samples")
    c.add_argument("--min-cosine", type=cosine, help="validation threshold (default 0.999 fp32/fp16, 0.99 int8)")
    c.add_argument("--option", "-O", action="append", type=_backend_option, metavar="BACKEND:KEY=VALUE",
                   help="backend option, e.g. openvino:device=CPU; repeatable")
    c.add_argument("--threads", type=positive_int, default=1, help="threads for validation and timing, the same for every "
                                                          "cell (default 1)")
    c.add_argument("--runs", type=positive_int, default=50, help="timed runs per cell (default 50)")
    c.add_argument("--warmup", type=nonneg_int, default=5, help="untimed warm-up runs per cell (default 5)")
    c.add_argument("--min-seconds", type=ranged(float, 0, what="seconds >= 0"), default=1.0,
                   help="keep timing rounds until this long has passed, so "
                                                               "sub-millisecond cells get enough runs for a stable p90 (default 1)")
    c.add_argument("--no-memory", action="store_true", help="skip each cell's peak-RSS measurement in a fresh child "
                                                           "process (about a second per cell)")
    c.add_argument("--compress", action="append", metavar="SPEC",
                   help="also compile every cell with these compression steps, compile's flags as key=value pairs "
                        "joined by commas: prune=0.5 | cluster=16 | prune=0.5,cluster=16 | ecq=3e-9 | "
                        "prune-channels=0.3 | low-rank=0.95 (repeat for more variants)")
    c.add_argument("--force", action="store_true", help="recompile every cell even when a cached artifact matches")
    c.add_argument("-o", "--output", required=True, help="report directory (artifacts go under its artifacts/)")
    c.add_argument("--json", action="store_true", help="print report.json on stdout")
    flags.add_arguments(c)
    c.set_defaults(func=cmd_compare)
    return c


def cmd_compare(args) -> int:
    from edgec.core.compare.render import markdown
    from edgec.core.compare.multi import compare

    options: dict[str, dict] = {}
    for backend, k, v in args.option or []:
        options.setdefault(backend, {})[k] = v
    model = args.model[0] if len(args.model) == 1 else args.model
    pp = args.preprocess[0] if args.preprocess and len(args.preprocess) == 1 else args.preprocess
    report = compare(model, backends=args.backends, precisions=args.precisions, output=args.output,
                     calibration=args.calib, validation=args.val, preprocess=pp,
                     calib_samples=args.calib_samples, val_samples=args.val_samples, calib_method=args.calib_method,
                     options=options, min_cosine=args.min_cosine, threads=args.threads, runs=args.runs,
                     warmup=args.warmup, min_seconds=args.min_seconds, memory=not args.no_memory, force=args.force,
                     compress=args.compress,
                     **flags.executor_kwargs(args))
    if args.json:
        dump(report.to_json())
    else:
        print(markdown(report), end="")
        print("\nwrote " + ", ".join(report.files.values()))
    if not report.ok:
        print("edgec: error: no cell produced a validated artifact (see the errors above)", file=sys.stderr)
        return 1
    return 0
