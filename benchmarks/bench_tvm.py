"""TVM backend benchmark: EfficientNet-Lite0 FP32 on this host, untuned and tuned, against onnxruntime.

    python benchmarks/bench_tvm.py                          # untuned variants (~3 min on 2 shared cores)
    python benchmarks/bench_tvm.py --profile                # + where each TVM variant's time goes, per function
    python benchmarks/bench_tvm.py --tune-minutes 20        # + a MetaSchedule run (database persists, see below)
    python benchmarks/bench_tvm.py --tuned-only-if-cached   # + the tuned variant only if a database already exists
    python benchmarks/bench_tvm.py --model ../shared/models/squeezenet1_1.onnx --preprocess squeezenet-bgr

Variants, each built with edgec.compile (validated on --val-samples eval images) and timed interleaved
(round-robin, one inference each per round, 1 thread everywhere, so load from other jobs hits all alike):
  ort-fp32       --backend onnxruntime: the baseline
  tvm-naive      --backend tvm -O schedule=naive -O layout=nchw: the loops Relax legalization emits
  tvm-sampled    --backend tvm -O schedule=sampled -O layout=nchw (the default before the schedule rules):
                 one schedule per task sampled from MetaSchedule's CPU design space, unmeasured
  tvm-rules      --backend tvm (default: -O schedule=rules -O layout=nhwc): edgec's schedule rules
                 (backends/tvm/schedules), sampled schedules for the functions no rule matches
  tvm-int8       (--int8) --precision int8: the core's Q/DQ model as TVM compiles it (default schedules)
  tvm-tuned      --backend tvm -O tune=true -O tune_minutes=M: MetaSchedule into the persistent database
                 ($EDGEC_CACHE_DIR/tvm or ~/.cache/edgec/tvm), seeded with the rules' kernels; a second
                 run reuses it and adds trials
Ratios are TVM median / onnxruntime median from the same run. --profile times every fused function
call through the Relax VM's instrument hook (after the interleaved timing, so it does not disturb it)
and groups the time by where the function's schedule came from (manifest `schedules.by_function`).
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
    ap.add_argument("--preprocess", default="efficientnet-lite",
                    help="preset for the eval images (e.g. imagenet, squeezenet-bgr); 'random': validate on seeded "
                         "random inputs instead (models that take no 224x224 RGB image)")
    ap.add_argument("--val-samples", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=40, help="interleaved timing rounds")
    ap.add_argument("--tune-minutes", type=float, default=0.0, help="add tvm-tuned with this tuning budget")
    ap.add_argument("--trials", type=int, default=5000, help="tuning trial cap (the time budget usually ends first)")
    ap.add_argument("--tuned-only-if-cached", action="store_true",
                    help="add tvm-tuned without tuning, applying an existing database")
    ap.add_argument("--int8", action="store_true", help="add tvm-int8: the core's Q/DQ model (64 calibration images)")
    ap.add_argument("--skip-naive", action="store_true", help="skip tvm-naive (slow to time: ~0.4 s per run)")
    ap.add_argument("--skip-sampled", action="store_true", help="skip tvm-sampled")
    ap.add_argument("--profile", action="store_true", help="per-function time of each TVM variant")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    if not args.model.exists():
        print(f"missing {args.model} (real models live in ../shared beside the repo)", file=sys.stderr)
        return 2

    import edgec

    variants = {"ort-fp32": ("onnxruntime", "fp32", {})}
    if not args.skip_naive:
        variants["tvm-naive"] = ("tvm", "fp32", {"schedule": "naive", "layout": "nchw", "use_database": "false"})
    if not args.skip_sampled:
        variants["tvm-sampled"] = ("tvm", "fp32", {"schedule": "sampled", "layout": "nchw", "use_database": "false"})
    variants["tvm-rules"] = ("tvm", "fp32", {"use_database": "false"})
    if args.int8:
        variants["tvm-int8"] = ("tvm", "int8", {"use_database": "false"})
    if args.tune_minutes > 0:
        variants["tvm-tuned"] = ("tvm", "fp32", {"tune": "true", "tune_minutes": args.tune_minutes, "trials": args.trials})
    elif args.tuned_only_if_cached:
        variants["tvm-tuned"] = ("tvm", "fp32", {})

    val = str(EVAL) if EVAL.exists() and args.preprocess != "random" else None
    results: dict[str, dict] = {}
    runners = {}
    by_function: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (backend, precision, opts) in variants.items():
            t0 = time.perf_counter()
            calib = dict(calibration=str(CALIB), calib_samples=64) if precision == "int8" else {}
            art = edgec.compile(args.model, backend=backend, precision=precision, validation=val, **calib,
                                preprocess=args.preprocess if val else None, val_samples=args.val_samples,
                                output=Path(tmp) / name, options=opts, threads=1)
            m = art.manifest
            bi = m.get("backend_info", {})
            results[name] = {"compile_s": round(time.perf_counter() - t0, 1), "cosine": m["validation"]["cosine"],
                             "top1_agreement": m["validation"].get("top1_agreement"), "int8": bi.get("int8"),
                             "artifact_mb": round(sum(f["size"] for f in m["files"].values()) / 2**20, 2),
                             "schedules": {k: v for k, v in (bi.get("schedules") or {}).items() if k != "by_function"},
                             "tuning": bi.get("tuning")}
            by_function[name] = (bi.get("schedules") or {}).get("by_function", {})
            print(f"built {name:12s} in {results[name]['compile_s']:7.1f} s  cosine {m['validation']['cosine']:.6f}  "
                  f"{json.dumps(results[name]['schedules']) if bi.get('schedules') else ''}", file=sys.stderr)
            runners[name] = edgec.load(art.path, threads=1)

        shape = tuple(d if isinstance(d, int) else 1 for d in runners["ort-fp32"].inputs[0].shape)  # "N" -> 1
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
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
        if args.profile:
            for n, r in runners.items():
                if n.startswith("tvm-"):
                    results[n]["profile"] = profile(r, feeds, by_function[n], 3 if n == "tvm-naive" else 20)
        for r in runners.values():
            r.close()

    base = float(np.median(times["ort-fp32"]))
    print(f"\n{'variant':14s} {'median ms':>10s} {'x ort':>7s} {'runs':>5s}  compile s  artifact MB  cosine")
    for n, ts in times.items():
        med = float(np.median(ts))
        results[n].update(median_ms=round(med, 3), ratio_vs_ort=round(med / base, 2), runs=len(ts))
        print(f"{n:14s} {med:10.2f} {med / base:7.2f} {len(ts):5d}  {results[n]['compile_s']:8.1f}  "
              f"{results[n]['artifact_mb']:11.2f}  {results[n]['cosine']:.6f}")
    for n, res in results.items():
        if "profile" in res:
            print_profile(n, res["profile"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def profile(runner, feeds, sources: dict[str, str], runs: int) -> dict:
    """Median ms per inference of every function the VM calls, through its instrument hook (one Python
    callback before and after each call: a few microseconds each, against kernels of 10 us and more)."""
    vm = runner.vm
    per_run: list[dict[str, float]] = []
    current: dict[str, float] = {}
    started: list[float] = []

    def instrument(func, name, before, ret, *args):
        if before:
            started.append(time.perf_counter())
        else:
            current[name] = current.get(name, 0.0) + (time.perf_counter() - started.pop()) * 1e3
        return 0  # VMInstrumentReturnKind.NO_OP

    vm.set_instrument(instrument)
    try:
        for _ in range(runs):
            current = {}
            runner.run(feeds)
            per_run.append(current)
    finally:
        vm.set_instrument(None)
    names = {k for r in per_run for k in r if k in sources}
    funcs = {k: round(float(np.median([r.get(k, 0.0) for r in per_run])), 4) for k in names}
    groups: dict[str, float] = {}
    for k, ms in funcs.items():
        groups[sources[k]] = round(groups.get(sources[k], 0.0) + ms, 3)
    return {"total_ms": round(sum(funcs.values()), 3), "by_source": dict(sorted(groups.items(), key=lambda kv: -kv[1])),
            "functions": dict(sorted(funcs.items(), key=lambda kv: -kv[1])), "sources": sources}


def print_profile(name: str, prof: dict, top: int = 12) -> None:
    total = prof["total_ms"] or 1.0
    print(f"\n{name}: {prof['total_ms']:.2f} ms in fused functions (median per inference, instrumented)")
    for src, ms in prof["by_source"].items():
        print(f"  {src:32s} {ms:8.2f} ms  {100 * ms / total:5.1f}%")
    print(f"  top {top} functions:")
    for fn, ms in list(prof["functions"].items())[:top]:
        print(f"    {fn:44s} {ms:7.3f} ms  {prof['sources'].get(fn, '?')}")


if __name__ == "__main__":
    raise SystemExit(main())
