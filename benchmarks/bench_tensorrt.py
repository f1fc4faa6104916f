"""TensorRT backend benchmark: the numbers issue #14's "Done when" asks for.

    python benchmarks/bench_tensorrt.py                  # everything (~10 min on 2 busy cores)
    python benchmarks/bench_tensorrt.py --skip-int8      # only the fp32/fp16 build table

1. fp32 and fp16 engines for every model in ../shared/models: builder seconds (build_serialized_network
   alone) and the whole compile, engine size, layers, for the default target (auto: every TensorRT-RTX
   compute capability from SM80 up when there is no GPU) and for one GPU (--target rtx-4090, SM89).
   Models with a dynamic batch get `-O shapes=<input>:1x...`.
2. Determinism: the same fp32 engine built again in a fresh process, compared by sha256.
3. EfficientNet-Lite0 int8 (calibration on imagenet_calib500, validation on imagenet_eval500,
   --preprocess efficientnet-lite): INT8 convolution layers in the network handed to the builder,
   top-1 agreement with FP32 on the 500 images with its standard error, and where validation ran.
Nothing here times an engine: with no GPU no engine runs, and no engine number is printed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def dynamic_shapes(path: Path) -> dict:
    m = onnx.load(path, load_external_data=False)
    inits = {t.name for t in m.graph.initializer}
    parts = []
    for i in m.graph.input:
        if i.name in inits:
            continue
        dims = [d.dim_value if d.dim_value > 0 else None for d in i.type.tensor_type.shape.dim]
        if None in dims:
            parts.append(f"{i.name}:" + "x".join(str(d or 1) for d in dims))
    return {"shapes": ",".join(parts)} if parts else {}


def compile_cli(model: Path, out: Path, precision: str, options: dict, extra=()) -> dict:
    """One `edgec compile ... --json` in a fresh process (what a user runs); returns the manifest."""
    cmd = [sys.executable, "-m", "edgec.core.cli", "compile", str(model), "--backend", "tensorrt", "--precision",
           precision, "-o", str(out), "--force", "--json", *extra]
    for k, v in options.items():
        cmd += ["-O", f"{k}={v}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        raise SystemExit(f"compile failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr.strip()[-800:]}")
    m = json.loads(proc.stdout)
    m["_wall_s"] = wall
    return m


def agreement_on(artifact: Path, model: Path, data: Path, preprocess: str) -> tuple[float, int, str]:
    """Top-1 agreement of the artifact's runner with FP32 on `data`, the way compile validates."""
    import edgec  # noqa: F401  (registers the backends)
    from edgec.core.data import open_dataset
    from edgec.core.model_io import input_specs, load_model
    from edgec.core.registry import get_backend
    from edgec.core.validate import ReferenceRunner, validate_runner

    manifest = json.loads((artifact / "manifest.json").read_text())
    runner = get_backend("tensorrt").load(artifact, manifest, threads=1)
    ref_model = load_model(model)
    ds = open_dataset(str(data), input_specs(ref_model), preprocess)
    try:
        rep = validate_runner(runner, ReferenceRunner(str(model), threads=1), ds, model=ref_model)
    finally:
        runner.close()
    return rep["top1_agreement"], rep["samples"], runner.where


def repair_row(tmp: Path, pct: float) -> None:
    eff = SHARED / "models" / "efficientnet_lite0.onnx"
    calib = SHARED / "data" / "imagenet_calib500_jpeg.npz"
    val = SHARED / "data" / "imagenet_eval500_jpeg.npz"
    print(f"\n== EfficientNet-Lite0 int8 --min-agreement {pct} (repair selects on calib500, measured on eval500) ==")
    out = tmp / "effnet-int8-repair"
    m = compile_cli(eff, out, "int8", {"target": "auto"},
                    ["--calib", str(calib), "--val", str(calib), "--preprocess", "efficientnet-lite",
                     "--min-agreement", str(pct)])
    md = m["quantization"].get("max_drop") or {}
    ls = m["backend_info"]["layer_summary"]
    print(f"  repair: floated {len(md.get('float_tensors', []))} tensor(s), kept {len(md.get('kept_fp32', []))} "
          f"layer(s) FP32; agreement on calib500 {md.get('initial_agreement')} -> {md.get('final_agreement')}; "
          f"met on the selection split: {md.get('met')}")
    print(f"  INT8 convolution layers: {ls['int8_convolutions']} (compute layers "
          f"{json.dumps(ls['compute_layers_by_precision'])})")
    agree, n, where = agreement_on(out, eff, val, "efficientnet-lite")
    se = math.sqrt(agree * (1 - agree) / n) * 100
    print(f"  top-1 agreement on eval500 (held out): {agree * 100:.1f} % +- {se:.1f} (SE), n={n}; ran on: {where}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-int8", action="store_true")
    ap.add_argument("--min-agreement", type=float, metavar="PCT",
                    help="also compile int8 with the core's repair (--min-agreement PCT), selected on imagenet_calib500 "
                         "and measured on imagenet_eval500")
    ap.add_argument("--keep", type=Path, help="write artifacts here instead of a temporary directory")
    args = ap.parse_args(argv)
    models = sorted((SHARED / "models").glob("*.onnx"))
    if not models:
        print(f"no models under {SHARED / 'models'}", file=sys.stderr)
        return 2
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_trt_"))
    tmp.mkdir(parents=True, exist_ok=True)
    up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"load at start: {up}")

    print("\n== fp32 / fp16 engine builds (builder = build_serialized_network; compile = whole edgec compile) ==")
    print(f"{'model':<24} {'prec':<5} {'target':<9} {'builder s':>9} {'compile s':>9} {'engine MB':>9} "
          f"{'weights MB':>10} {'layers':>6}  compute layers by precision   validation")
    first_fp32 = None
    seen_targets = {}
    for model in models:
        for precision in ("fp32", "fp16"):
            for target in ("auto", "rtx-4090"):
                opts = {"target": target, **dynamic_shapes(model)}
                out = tmp / f"{model.stem}-{precision}-{target}"
                m = compile_cli(model, out, precision, opts)
                bi = m["backend_info"]
                v = m["validation"]
                seen_targets[target] = bi["target"]["compute_capabilities"]
                print(f"{model.stem:<24} {precision:<5} {target:<9} {bi['build_seconds']:>9.2f} "
                      f"{m['compile_seconds']:>9.1f} {bi['engine_bytes'] / 1e6:>9.2f} "
                      f"{bi['engine_memory_bytes'].get('weights', 0) / 1e6:>10.2f} "
                      f"{bi['layer_summary']['layers_total']:>6}  "
                      f"{json.dumps(bi['layer_summary']['compute_layers_by_precision']):<28} "
                      f"{v['cosine']:.6f} {'passed' if v['passed'] else 'FAILED'}")
                if first_fp32 is None and precision == "fp32":
                    first_fp32 = (model, out, opts)
    print("  targets: " + "; ".join(f"{t} = {', '.join(cc)}" for t, cc in seen_targets.items()))
    print(f"  validation runtime: {m['validation']['runtime']}")

    model, out, opts = first_fp32
    compile_cli(model, tmp / "rebuild", "fp32", opts)
    h1 = hashlib.sha256((out / "model.plan").read_bytes()).hexdigest()
    h2 = hashlib.sha256((tmp / "rebuild" / "model.plan").read_bytes()).hexdigest()
    print(f"\n== determinism: {model.stem} fp32 rebuilt in a fresh process: "
          f"{'byte-identical' if h1 == h2 else 'DIFFERENT'} (sha256 {h1[:16]} vs {h2[:16]})")

    if not args.skip_int8:
        eff = SHARED / "models" / "efficientnet_lite0.onnx"
        calib = SHARED / "data" / "imagenet_calib500_jpeg.npz"
        val = SHARED / "data" / "imagenet_eval500_jpeg.npz"
        print("\n== EfficientNet-Lite0 int8 (calib imagenet_calib500, val imagenet_eval500) ==")
        m = compile_cli(eff, tmp / "effnet-int8", "int8", {"target": "auto"},
                        ["--calib", str(calib), "--val", str(val), "--preprocess", "efficientnet-lite"])
        bi, v = m["backend_info"], m["validation"]
        ls = bi["layer_summary"]
        convs = [r for r in bi["layers"] if r["type"] == "CONVOLUTION"]
        n = v["samples"]
        agree = v["top1_agreement"]
        p = agree / 100 if agree > 1 else agree
        se = math.sqrt(p * (1 - p) / n) * 100
        print(f"  INT8 convolution layers: {ls['int8_convolutions']} of {len(convs)} "
              f"(compute layers {json.dumps(ls['compute_layers_by_precision'])}; need >= 30)")
        margin = p * 100 - 98.5
        verdict = ("met" if margin >= se else "met, by less than one standard error") if margin >= 0 else "NOT met"
        print(f"  top-1 agreement with FP32: {p * 100:.1f} % +- {se:.1f} (SE) on {n} images (need >= 98.5): {verdict}")
        if v.get("top1_accuracy") is not None:
            print(f"  top-1 accuracy: int8 {v['top1_accuracy'] * 100:.1f} %, FP32 {v['reference_top1_accuracy'] * 100:.1f} %")
        print(f"  cosine {v['cosine']:.5f}; validation ran on: {v['runtime']}")
        print(f"  builder {bi['build_seconds']:.2f} s, engine {bi['engine_bytes'] / 1e6:.2f} MB (weights "
              f"{bi['engine_memory_bytes'].get('weights', 0) / 1e6:.2f} MB by the builder's report), compile "
              f"{m['compile_seconds']:.0f} s (calibration, Q/DQ, build, 2 x 500 validation runs)")
        print(f"  artifact: {tmp / 'effnet-int8'} (model.plan, model.onnx, manifest.json)")
    if args.min_agreement is not None:
        repair_row(tmp, args.min_agreement)
    print(f"\nload at end: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
