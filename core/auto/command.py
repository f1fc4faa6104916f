"""`edgec auto`: the argparse parser and handler (registered by core/cli.py through add_parser)."""
from __future__ import annotations

import sys

from edgec.core.cli_common import cosine, dump, nonneg_int, percent_open, percent_points, positive_int, ranged

positive = ranged(float, 0, lo_open=True, what="a number > 0")


def add_parser(sub):
    from edgec.core.auto import hardware

    a = sub.add_parser("auto", help="search backends x techniques for the fastest artifact meeting your limits",
                       description="Measure the FP32 baseline of each MODEL, then try the hardware profile's candidates "
                                   "(backend x precision x calibration method x accuracy repair) in its order, each "
                                   "compiled, validated on its target runtime and timed interleaved with "
                                   "`edgec compare`'s machinery and cache (a re-run resumes), pruning what a measured "
                                   "cell shows cannot win. -o gets the winning artifact (artifact/) and a report "
                                   "(report.json/md, index.html, pareto.png) saying why each candidate won or lost.")
    a.add_argument("models", nargs="*", metavar="MODEL", help="ONNX model(s); several are compared on one report")
    a.add_argument("--hardware", "-H", required=True, choices=hardware.names(), help="the device class")
    a.add_argument("--backends", "-b", help="search only these of the profile's targets (comma-separated)")
    a.add_argument("--calib", help="int8 calibration data (every profile tries int8: required to run)")
    a.add_argument("--val", help="selection data: accuracy is judged here (labels give top-1 drops; required to run)")
    a.add_argument("--test", help="held-out data the winner is re-measured on (never used to choose)")
    a.add_argument("--preprocess", action="append",
                   help="preprocessing (see `edgec compile -h`): once for all models, or once per model in order")
    a.add_argument("--max-drop", type=percent_points, help="top-1 points (agreement without labels) each model may "
                                                           "lose vs its FP32 on --val")
    a.add_argument("--min-accuracy", type=percent_open, help="top-1 %% on --val every cell must reach (compares models)")
    a.add_argument("--min-cosine", type=cosine, help="cosine to the FP32 outputs over --val (worst output) every cell must reach "
                   "(for outputs that are not classes: features, boxes, maps)")
    a.add_argument("--max-latency-ms", type=positive, help="median latency limit (on a proxy where the device is not here)")
    a.add_argument("--max-size-mb", type=positive, help="artifact size limit on disk (MB)")
    a.add_argument("--budget-minutes", type=positive, default=30.0, help="no new round starts after this (default 30)")
    a.add_argument("--calib-samples", type=positive_int, help="use at most N calibration samples")
    a.add_argument("--val-samples", type=positive_int, help="validate on at most N samples")
    a.add_argument("--threads", type=positive_int, default=1, help="threads for validation and timing (default 1)")
    a.add_argument("--runs", type=positive_int, default=50, help="timed runs per cell in the final run, at least (default 50)")
    a.add_argument("--warmup", type=nonneg_int, default=5, help="untimed warm-up runs per cell (default 5)")
    a.add_argument("--playoff-seconds", type=ranged(float, 0, what="seconds >= 0"), default=20.0,
                   help="cells within 10%% of the fastest are timed again this long side by side (default 20; 0 = off)")
    a.add_argument("--force", action="store_true", help="recompile every cell even when a cached artifact matches")
    a.add_argument("--explain", action="store_true", help="print the plan for --hardware and exit; runs nothing")
    a.add_argument("-o", "--output", help="output directory (required to run)")
    a.add_argument("--json", action="store_true", help="print report.json (or the plan) on stdout")
    a.set_defaults(func=cmd_auto)
    return a


def cmd_auto(args) -> int:
    from edgec.core.auto.plan import Demands
    from edgec.core.auto.search import auto, explain
    from edgec.core.errors import InputError

    demands = Demands(args.max_drop, args.max_latency_ms, args.max_size_mb, args.min_accuracy, args.min_cosine)
    if args.explain:
        plan = explain(args.hardware, demands, backends=args.backends)
        if args.json:
            dump(plan)
        else:
            print(format_plan(plan), end="")
        return 0
    if not args.models:
        raise InputError("edgec auto needs MODEL (one or more ONNX files), or --explain")
    if not args.output:
        raise InputError("edgec auto needs -o OUT (the winning artifact and the report go there)")
    res = auto(args.models, args.hardware, calibration=args.calib, validation=args.val, test=args.test,
               preprocess=args.preprocess, max_drop=args.max_drop, max_latency_ms=args.max_latency_ms,
               max_size_mb=args.max_size_mb, min_accuracy=args.min_accuracy, min_cosine=args.min_cosine,
               budget_minutes=args.budget_minutes,
               output=args.output, calib_samples=args.calib_samples, val_samples=args.val_samples,
               threads=args.threads, runs=args.runs, warmup=args.warmup, playoff_seconds=args.playoff_seconds,
               backends=args.backends, force=args.force)
    if args.json:
        dump(res.report)
    else:
        from edgec.core.auto.report import markdown
        print(markdown(res.report), end="")
        print("\nwrote " + ", ".join(res.files.values()))
    if res.winner is None:
        print("edgec: error: no candidate met every threshold (each row of the report says why)", file=sys.stderr)
        return 1
    return 0


def format_plan(plan: dict) -> str:
    lines = [f"edgec auto plan for {plan['hardware']} (profile {plan['version']}): {plan['description']}", "",
             "constraints: " + ", ".join(f"{k}={v}" for k, v in plan["constraints"].items()), "", "targets:"]
    for t in plan["targets"]:
        opts = " ".join(f"-O {k}={v}" for k, v in (t.get("options") or {}).items())
        lines.append(f"  {t['backend']} {opts}".rstrip() + f": latency from the {t['latency']}"
                     + (f" ({t['proxy']})" if t.get("proxy") else "") + f"; {t['here']}")
    for b, why in plan["not_here"].items():
        lines.append(f"  {b}: not searched: {why}")
    lines += ["", "steps:"] + [f"  {s}" for s in plan["steps"]] + ["", "rules:"] + [f"  - {r}" for r in plan["rules"]]
    if plan["sources"]:
        lines += ["", "sources: " + "; ".join(plan["sources"])]
    return "\n".join(lines) + "\n"
