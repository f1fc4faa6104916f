"""`edgec compress`, `edgec pack`, `edgec unpack`, and the compression flags of `edgec compile`
(argparse parsers and handlers, registered by core/cli.py)."""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from edgec.core.errors import InputError


def add_step_flags(p: argparse.ArgumentParser, compile_verb: bool = False) -> None:
    g = p.add_argument_group("compression (pruning, then clustering)")
    g.add_argument("--prune", type=float, metavar="S", help="unstructured sparsity per layer, a fraction (0.5 = half "
                                                            "the weights of each selected layer become 0)")
    g.add_argument("--prune-method", choices=["magnitude", "obs", "global"],
                   help="obs: SparseGPT-style second-order pruning with reconstruction on --calib (default with "
                        "--calib); magnitude: smallest |w| per layer (default without); global: one |w| threshold")
    g.add_argument("--cluster", type=int, metavar="N", help="share at most N values per layer, on its INT8 grid")
    g.add_argument("--cluster-method", choices=["nearest", "obs"],
                   help="obs: assignment that minimises the layer's output error on --calib (default with --calib)")
    g.add_argument("--ecq", type=float, metavar="LAMBDA",
                   help="entropy-constrained quantization on the INT8 grid at rate-distortion slope LAMBDA (e.g. "
                        "3e-9; larger = smaller and less accurate): each layer's level spacing and zeros are chosen "
                        "by its measured sensitivity; needs --calib")
    g.add_argument("--layers", help="comma-separated fnmatch patterns on node name, weight name or op type "
                                    "(default: every Conv/Gemm/MatMul except depthwise convs)")
    from .structured_flags import add_structured_flags

    add_structured_flags(p)
    if compile_verb:
        g.add_argument("--compress-max-drop", type=float, metavar="POINTS",
                       help="compression's own accuracy budget on --val (per-layer sparsity / clusters chosen by "
                            "sensitivity); --max-drop stays the int8 budget")


def steps_from_args(args) -> list:
    from .pipeline import Step

    layers = tuple(x.strip() for x in args.layers.split(",") if x.strip()) if args.layers else ()
    steps = []
    if args.prune is not None:
        if not 0 < args.prune < 1:
            raise InputError(f"--prune {args.prune}: sparsity is a fraction strictly between 0 and 1, e.g. 0.5")
        steps.append(Step("prune", args.prune, args.prune_method, layers))
    elif args.prune_method:
        raise InputError("--prune-method needs --prune S")
    if args.cluster is not None:
        if not 3 <= args.cluster <= 254:
            raise InputError(f"--cluster {args.cluster}: the number of shared values is an integer in 3..254, e.g. 16")
        steps.append(Step("cluster", args.cluster, args.cluster_method, layers))
    elif args.cluster_method:
        raise InputError("--cluster-method needs --cluster N")
    if getattr(args, "ecq", None) is not None:
        if not args.ecq > 0:
            raise InputError(f"--ecq {args.ecq}: the rate-distortion slope is a positive number, e.g. 3e-9")
        steps.append(Step("ecq", args.ecq, None, layers))
    from .structured_flags import structured_steps

    steps = structured_steps(args, layers) + steps
    if layers and not steps:
        raise InputError("--layers selects layers for --prune / --cluster; give one of them")
    return steps


def add_parsers(sub) -> None:
    c = sub.add_parser("compress", help="prune and/or cluster weights; write a smaller FP32 ONNX",
                       description="Prune (unstructured) and/or cluster each layer's weights, report bits per weight "
                                   "raw / zstd / Huffman / ANS, and write the compressed ONNX (FP32 weights; compile "
                                   "it with --precision int8 to store them as integers).")
    c.add_argument("model", help="ONNX model file")
    c.add_argument("-o", "--output", required=True, help="output .onnx file")
    add_step_flags(c)
    c.add_argument("--calib", help="calibration data for obs pruning / clustering (.npz, folder, images, JPEG pack)")
    c.add_argument("--val", help="validation data: the compressed model's drop vs FP32; --max-drop selects on it")
    c.add_argument("--preprocess", help="image preprocessing preset and/or key=value pairs (see `edgec compile -h`)")
    c.add_argument("--calib-samples", type=int, help="calibration samples for layer statistics (default 32)")
    c.add_argument("--val-samples", type=int, help="validate on at most N samples")
    c.add_argument("--max-drop", type=float, metavar="POINTS",
                   help="accuracy budget on --val (top-1 points with labels, else agreement points): per-layer "
                        "sparsity / cluster counts up to the given ones are chosen by sensitivity to meet it")
    c.add_argument("--per-tensor", action="store_true", help="cluster on a per-tensor INT8 grid (for backends "
                                                             "with per-tensor weight scales)")
    c.add_argument("--force", action="store_true", help="replace an existing output")
    c.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    c.set_defaults(func=cmd_compress)

    p = sub.add_parser("pack", help="entropy-coded, hash-checked archive of an artifact (OTA payload)")
    p.add_argument("artifact", help="artifact directory (`edgec compile -o`)")
    p.add_argument("-o", "--output", required=True, help="archive file, e.g. model.edgec")
    p.add_argument("--base", help="earlier artifact directory the device holds: write a delta against it")
    p.add_argument("--force", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_pack)

    u = sub.add_parser("unpack", help="restore an artifact from `edgec pack`, byte-identical and hash-checked")
    u.add_argument("archive")
    u.add_argument("-o", "--output", required=True, help="artifact directory to create")
    u.add_argument("--base", help="the artifact a delta archive was packed against")
    u.add_argument("--force", action="store_true")
    u.add_argument("--json", action="store_true")
    u.set_defaults(func=cmd_unpack)


def _mb(n) -> str:
    return f"{n / 1e6:.3f} MB"


def cmd_compress(args) -> int:
    from edgec.core.artifact import check_writable_parent
    from edgec.core.cli_common import dump as _dump, table as _table
    from edgec.core.stages import open_data
    from edgec.core.model_io import load_model

    from .pipeline import H_SAMPLES, compress

    steps = steps_from_args(args)
    if not steps:
        raise InputError("nothing to do: give --prune S, --cluster N, --ecq LAMBDA, --prune-channels R, "
                         "--low-rank E and/or --finetune distill")
    out = Path(args.output)
    if out.exists() and not args.force:
        raise InputError(f"output {out} already exists; pass --force to replace it or choose another -o")
    if out.suffix != ".onnx":
        raise InputError(f"output {out} must be an .onnx file")
    check_writable_parent(out)
    if args.max_drop is not None and not args.val:
        raise InputError("--max-drop needs --val DATA to measure the drop on")
    model = load_model(args.model)
    calib = open_data(args.calib, model, args.preprocess, "calibration")
    val = open_data(args.val, model, args.preprocess, "validation")
    if val is not None and args.val_samples:
        val = val.take(args.val_samples)
    from edgec.core import progress

    res = compress(model, steps, calibration=calib, validation=val, max_drop=args.max_drop,
                   per_channel=not args.per_tensor, samples=args.calib_samples or H_SAMPLES, progress=progress.say)
    if val is not None:
        res.report["validation"] = evaluate(model, res.model, val)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.tmp-", dir=out.parent)
    os.close(fd)
    try:
        import onnx

        onnx.save(res.model, tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    res.report["output"] = str(out)
    if args.json:
        _dump(res.report)
        return 0
    rows = [[r["layer"], r["op"], r["params"], f"{100 * r['sparsity']:.1f} %", r["distinct_levels"] or "-",
             r.get("output_error", "-")] for r in res.report["layers"]]
    print(_table(rows, ["layer", "op", "params", "sparsity", "levels", "output error"]))
    from .entropy import format_size

    print("before       " + format_size(res.report["size_before"])[13:])
    print("after        " + format_size(res.report["size_after"])[13:])
    v = res.report.get("validation")
    if v:
        print(f"validation   {v['samples']} samples: {v['metric']} drop {v['drop']:.2f} +- {v['drop_se']:.2f} points "
              f"(paired), top-1 agreement with FP32 {v['agreement']:.2f} %")
    md = res.report.get("max_drop")
    if md:
        knob = "ecq lambda" if md.get("searched") == "ecq lambda" else "tau"
        print(f"max-drop     budget {md['budget']} -> {knob} {md['tau']} ({'met' if md['met'] else 'NOT met'} on the "
              f"conservative bound over {md['samples']} samples)")
    print(f"wrote {out}")
    return 0


def evaluate(reference, candidate, data) -> dict:
    """Drop of `candidate` vs `reference` on `data` with its paired standard error (same images)."""
    import numpy as np

    from edgec.core.quantization.repair import Evaluator

    ev = Evaluator(reference, data, progress=False)
    out = ev.outputs(candidate)
    agree = out.argmax(1) == ev.ref.argmax(1)
    res = {"samples": len(ev.feeds), "metric": ev.metric, "agreement": round(100 * float(agree.mean()), 3)}
    if ev.metric == "top1":
        a = (ev.ref.argmax(1) == ev.labels).astype(float)
        b = (out.argmax(1) == ev.labels).astype(float)
        d = a - b
        res.update(reference_top1=round(100 * a.mean(), 3), top1=round(100 * b.mean(), 3))
    else:
        d = 1.0 - agree.astype(float)
    res["drop"] = round(100 * float(d.mean()), 3)
    res["drop_se"] = round(100 * float(d.std(ddof=1) / np.sqrt(len(d))), 3) if len(d) > 1 else 0.0
    return res


def cmd_pack(args) -> int:
    from edgec.core.cli_common import dump as _dump

    from .pack import pack

    s = pack(args.artifact, args.output, force=args.force, base=args.base)
    if args.json:
        _dump(s)
    else:
        print(f"packed {s['files']} files of {s['artifact']}: {_mb(s['raw_bytes'])} -> {_mb(s['packed_bytes'])} "
              f"({s['ratio']:.2f}x; {s['ans_segments']} weight blobs ANS-coded, the rest zstd) -> {s['archive']}")
    return 0


def cmd_unpack(args) -> int:
    from edgec.core.cli_common import dump as _dump

    from .pack import unpack

    s = unpack(args.archive, args.output, force=args.force, base=args.base)
    if args.json:
        _dump(s)
    else:
        print(f"unpacked {s['files']} files ({_mb(s['bytes'])}), every sha256 checked -> {s['output']}")
    return 0
