"""Pick a deployment for a model from an accuracy-vs-latency sweep over every backend and precision.

    python examples/compare_backends.py MODEL.onnx CALIB VAL --preprocess PRESET [-o REPORT_DIR]
        [--backends onnxruntime,openvino] [--max-drop 1.0] [--val-samples 200]

e.g. with the shared ImageNet material beside the repo:

    python examples/compare_backends.py ../shared/models/efficientnet_lite0.onnx \\
        ../shared/data/imagenet_calib500_jpeg.npz ../shared/data/imagenet_eval500_jpeg.npz \\
        --preprocess efficientnet-lite --calib-samples 100 --val-samples 200 -o compare-report

What it shows: `edgec.compare` runs the whole sweep (it is the same code as `edgec compare`) and returns a
report whose `rows` are plain dicts (see `edgec.core.compare.ROW_KEYS`); the script then applies a
deployment rule of its own -- the fastest cell whose top-1 accuracy (or, without labels, agreement with
FP32) is within `--max-drop` points of the FP32 reference -- and loads that artifact to run it.
Re-running the script reuses every artifact whose inputs are unchanged, so tweaking the rule is instant.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import edgec


def pick(report, max_drop_points: float) -> dict | None:
    """The fastest validated cell within `max_drop_points` of the reference's accuracy."""
    metric = report.meta["accuracy_metric"]
    if metric is None:
        return None
    ref = next(r for r in report.rows if r["reference"])
    # top1_agreement/cosine of the reference itself are 1.0; accuracy is measured on the labels.
    base = report.meta["reference_top1_accuracy"] if metric == "top1_accuracy" else 1.0
    if base is None:
        base = ref[metric]
    ok = [r for r in report.ok if r["latency_ms_median"] is not None
          and (base - r[metric]) * 100 <= max_drop_points]
    return min(ok, key=lambda r: r["latency_ms_median"], default=None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("calib")
    ap.add_argument("val")
    ap.add_argument("--preprocess")
    ap.add_argument("--backends", help="comma-separated (default: every registered backend)")
    ap.add_argument("--precisions", default="fp32,fp16,int8")
    ap.add_argument("--calib-samples", type=int, default=100)
    ap.add_argument("--val-samples", type=int)
    ap.add_argument("--max-drop", type=float, default=1.0, help="accuracy budget in points (default 1.0)")
    ap.add_argument("-o", "--output", default="compare-report")
    args = ap.parse_args()

    report = edgec.compare(args.model, backends=args.backends, precisions=args.precisions, output=args.output,
                           calibration=args.calib, validation=args.val, preprocess=args.preprocess,
                           calib_samples=args.calib_samples, val_samples=args.val_samples, threads=1)
    print(report.markdown())
    print("Pareto front (fastest first):")
    for r in report.pareto:
        print(f"  {r['backend']} {r['precision']}: {r['latency_ms_median']:.2f} ms, "
              f"{report.meta['accuracy_metric']} {r[report.meta['accuracy_metric']]:.4f}")

    choice = pick(report, args.max_drop)
    if choice is None:
        print(f"no cell is within {args.max_drop} points of the FP32 reference")
        return 1
    print(f"\ndeploy: {choice['backend']} {choice['precision']} -> {choice['artifact']} "
          f"({choice['speedup_vs_reference']:.2f}x onnxruntime fp32)")
    # The chosen artifact is an ordinary edgec artifact: load it on its own runtime and run a sample.
    from edgec.core.data import open_dataset

    runner = edgec.load(choice["artifact"], threads=1)
    try:
        sample = next(iter(open_dataset(args.val, runner.inputs, args.preprocess)))
        out = next(iter(runner.run(sample.feeds).values()))
        print(f"ran it on the first validation sample: class {int(out.argmax())} (label {sample.label})")
    finally:
        runner.close()
    print(f"report: {Path(args.output) / 'index.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
