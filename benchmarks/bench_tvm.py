"""TVM backend benchmark: EfficientNet-Lite0 FP32 on this host, untuned and tuned, against onnxruntime.

    python benchmarks/bench_tvm.py                          # untuned variants (~3 min on 2 shared cores)
    python benchmarks/bench_tvm.py --tune-minutes 20        # + a MetaSchedule run (database persists, see below)
    python benchmarks/bench_tvm.py --tuned-only-if-cached   # + the tuned variant only if a database already exists

Variants, each built with edgec.compile (validated on --val-samples eval images) and timed interleaved
(round-robin, one inference each per round, 1 thread everywhere, so load from other jobs hits all alike):
  ort-fp32       --backend onnxruntime: the baseline
  tvm-naive      --backend tvm -O schedule=naive: the loops Relax legalization emits, no schedule at all
  tvm-sampled    --backend tvm (default): one schedule per task sampled from MetaSchedule's CPU design
                 space, unmeasured (the best untuned path this TVM wheel offers, see backends/tvm/README.md)
  tvm-int8       (--int8) --precision int8: the core's Q/DQ model as TVM compiles it (sampled schedules)
  tvm-tuned      --backend tvm -O tune=true -O tune_minutes=M: MetaSchedule into the persistent database
                 ($EDGEC_CACHE_DIR/tvm or ~/.cache/edgec/tvm); a second run reuses it and adds trials
Ratios are TVM median / onnxruntime median from the same run.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MODEL = SHARED / "models" / "efficientnet_lite0.onnx"
EVAL = SHARED / "data" / "imagenet_eval500_jpeg.npz"
CALIB = SHARED / "data" / "imagenet_calib500_jpeg.npz"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=MODEL)
    ap.add_argument("--val-samples", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=40, help="interleaved timing rounds")
    ap.add_argument("--tune-minutes", type=float, default=0.0, help="add tvm-tuned with this tuning budget")
    ap.add_argument("--trials", type=int, default=5000, help="tuning trial cap (the time budget usually ends first)")
    ap.add_argument("--tuned-only-if-cached", action="store_true",
                    help="add tvm-tuned without tuning, applying an existing database")
    ap.add_argument("--int8", action="store_true", help="add tvm-int8: the core's Q/DQ model (64 calibration images)")
    ap.add_argument("--skip-naive", action="store_true", help="skip tvm-naive (slow to time: ~0.7 s per run)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    if not args.model.exists():
        print(f"missing {args.model} (real models live in ../shared beside the repo)", file=sys.stderr)
        return 2

    import edgec

    variants = {"ort-fp32": ("onnxruntime", "fp32", {})}
    if not args.skip_naive:
        variants["tvm-naive"] = ("tvm", "fp32", {"schedule": "naive", "use_database": "false"})
    variants["tvm-sampled"] = ("tvm", "fp32", {"use_database": "false"})
    if args.int8:
        variants["tvm-int8"] = ("tvm", "int8", {"use_database": "false"})
    if args.tune_minutes > 0:
        variants["tvm-tuned"] = ("tvm", "fp32", {"tune": "true", "tune_minutes": args.tune_minutes, "trials": args.trials})
    elif args.tuned_only_if_cached:
        variants["tvm-tuned"] = ("tvm", "fp32", {})

    val = str(EVAL) if EVAL.exists() else None
    results: dict[str, dict] = {}
    runners = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (backend, precision, opts) in variants.items():
            t0 = time.perf_counter()
            calib = dict(calibration=str(CALIB), calib_samples=64) if precision == "int8" else {}
            art = edgec.compile(args.model, backend=backend, precision=precision, validation=val, **calib,
                                preprocess="efficientnet-lite" if val else None, val_samples=args.val_samples,
                                output=Path(tmp) / name, options=opts, threads=1)
            m = art.manifest
            bi = m.get("backend_info", {})
            results[name] = {"compile_s": round(time.perf_counter() - t0, 1), "cosine": m["validation"]["cosine"],
                             "top1_agreement": m["validation"].get("top1_agreement"), "int8": bi.get("int8"),
                             "artifact_mb": round(sum(f["size"] for f in m["files"].values()) / 2**20, 2),
                             "schedules": bi.get("schedules"), "tuning": bi.get("tuning")}
            print(f"built {name:12s} in {results[name]['compile_s']:7.1f} s  cosine {m['validation']['cosine']:.6f}  "
                  f"{json.dumps(bi.get('schedules')) if bi.get('schedules') else ''}", file=sys.stderr)
            runners[name] = edgec.load(art.path, threads=1)

        x = np.random.default_rng(0).standard_normal(tuple(runners["ort-fp32"].inputs[0].shape)).astype(np.float32)
        feeds = {runners["ort-fp32"].inputs[0].name: x}
        for r in runners.values():
            r.run(feeds)
        times: dict[str, list[float]] = {n: [] for n in runners}
        deadline = time.monotonic() + 600
        for i in range(args.rounds):
            for n, r in runners.items():
                if n == "tvm-naive" and i >= 7:  # 0.7 s a run: a few rounds are plenty for its median
                    continue
                times[n].append(r.time_once(feeds) * 1e3)
            if time.monotonic() > deadline:
                break
        for r in runners.values():
            r.close()

    base = float(np.median(times["ort-fp32"]))
    print(f"\n{'variant':14s} {'median ms':>10s} {'x ort':>7s} {'runs':>5s}  compile s  artifact MB  cosine")
    for n, ts in times.items():
        med = float(np.median(ts))
        results[n].update(median_ms=round(med, 3), ratio_vs_ort=round(med / base, 2), runs=len(ts))
        print(f"{n:14s} {med:10.2f} {med / base:7.2f} {len(ts):5d}  {results[n]['compile_s']:8.1f}  "
              f"{results[n]['artifact_mb']:11.2f}  {results[n]['cosine']:.6f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
