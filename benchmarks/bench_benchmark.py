"""Issue #23's figures for `edgec benchmark`:

    python benchmarks/bench_benchmark.py                  # ~15 min on 2 busy cores
    python benchmarks/bench_benchmark.py --keep DIR --reuse   # re-time artifacts compiled before

1. Agreement with `edgec compare`: on the bundled model (examples/fashion_mnist) and EfficientNet-Lite0
   (efficientnet-lite preprocessing, calib500 with 100 samples), `edgec compare` compiles onnxruntime and
   OpenVINO fp32 / int8 and times them interleaved; `edgec benchmark` then times the same artifacts
   interleaved. Latency ratios vs onnxruntime fp32 from both, with benchmark's batch-medians 95 % CI.
   compare records medians only, so the noise stated is benchmark's CI; the two runs are minutes apart
   on a shared machine, so drift between runs is on top of it.
2. Throughput on OpenVINO EfficientNet-Lite0 fp32: 1 stream x 1 thread, 2 streams x 1 thread
   (2 async requests, NUM_STREAMS=2) and 1 stream x 2 threads, alternated block by block.
3. Peak RSS (fresh child per artifact, 3 repeats) fp32 vs int8 on onnxruntime and OpenVINO.
All at 1 thread unless said; `uptime` printed first and last.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def agreement(name, model, out, args, **kw):
    """compare, benchmark, compare again (artifacts reused: timing only), benchmark again: the spread between
    repeats of each tool shows the run-to-run drift that a within-run CI cannot."""
    import edgec

    cmp, bench = [], []
    data = kw.get("validation") or kw.get("calibration")  # compare times the first sample of this
    for rep in range(2):
        c = edgec.compare(model, ["onnxruntime", "openvino"], "fp32,int8", output=out, threads=1, runs=args.runs,
                          warmup=5, force=not args.reuse and rep == 0, memory=False, **kw)
        ok = [r for r in c.rows if r["status"] == "ok"]
        if rep == 0:
            for r in c.rows:
                if r["status"] != "ok":
                    print(f"  {name} {r['backend']} {r['precision']}: {r['status']}: {r['error']}")
        # compare reports a speedup and its paired-block 95 % CI; as a latency ratio both invert
        cmp.append({f"{r['backend']} {r['precision']}": {
            "latency_ratio": 1.0 / r["speedup_vs_reference"],
            "latency_ratio_ci95": [1.0 / r["speedup_ci95"][1], 1.0 / r["speedup_ci95"][0]] if r.get("speedup_ci95")
            else None} for r in ok})
        arts = [r["artifact"] for r in ok]  # onnxruntime fp32 first: the reference in both
        # the CLI, as a user runs it (a fresh process)
        cmd = [str(REPO / ".venv" / "bin" / "edgec"), "benchmark", *arts, "-n", str(args.runs), "--warmup", "5",
               "--threads", "1", "--no-memory", "--json", "--input", str(data)]
        if kw.get("preprocess"):
            cmd += ["--preprocess", kw["preprocess"]]
        b = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        bench.append({f"{a['backend']} {a['precision']}": a["vs_first"] for a in b["artifacts"]})
    print(f"\n[{name}] median-latency ratio vs onnxruntime fp32, 1 thread, {args.runs} interleaved runs per artifact "
          f"per run; order compare, benchmark, compare, benchmark; same input (first sample of {Path(data).name})")
    print("  each run: median-latency ratio [its 95 % CI]; 'agree' counts the compare x benchmark pairs whose "
          "difference is inside the combined noise, |a - b| <= sqrt(h_a^2 + h_b^2) (h = CI half-width)")
    heads = ["compare #1", "compare #2", "benchmark #1", "benchmark #2"]
    print(f"  {'cell':<18} " + " ".join(f"{h:<24}" for h in heads) + " agree")
    total = [0, 0]
    for k in cmp[0]:
        runs = [c.get(k) for c in cmp] + [bb.get(k) for bb in bench]

        def fmt(v):
            if v is None:
                return "-".ljust(24)
            lo, hi = v["latency_ratio_ci95"] or (float("nan"), float("nan"))
            return f"{v['latency_ratio']:.3f} [{lo:.3f}, {hi:.3f}]".ljust(24)

        def half(v):
            ci = v["latency_ratio_ci95"]
            return 0.0 if ci is None else (ci[1] - ci[0]) / 2

        pairs = [(a, b) for a in runs[:2] for b in runs[2:] if a is not None and b is not None]
        agree = sum(abs(a["latency_ratio"] - b["latency_ratio"]) <= (half(a) ** 2 + half(b) ** 2) ** 0.5
                    for a, b in pairs)
        if k != "onnxruntime fp32":
            total[0] += agree
            total[1] += len(pairs)
        print(f"  {k:<18} " + " ".join(fmt(v) for v in runs) + f" {agree}/{len(pairs)}")
    print(f"  [{name}] compare and benchmark agree within their stated noise in {total[0]}/{total[1]} pairs "
          f"(reference row excluded)")
    return {k.replace(" ", "-"): r["artifact"] for k, r in zip(cmp[1], ok)}


def throughput(art, args):
    import edgec

    configs = [("1 stream x 1 thread", dict(mode="throughput", streams=1, threads=1)),
               ("2 streams x 1 thread", dict(mode="throughput", streams=2, threads=1)),
               ("1 stream x 2 threads", dict(mode="throughput", streams=1, threads=2))]
    res = {k: [] for k, _ in configs}
    how = {}
    for rep in range(args.tp_repeats):
        for k, kw in (configs if rep % 2 == 0 else configs[::-1]):
            a = edgec.benchmark(art, duration=f"{args.tp_seconds}s", warmup=4, measure_memory=False, **kw)[0]
            res[k].append(a["throughput"]["inferences_per_s"])
            how[k] = a["parallel"]
    print(f"\n[throughput] OpenVINO EfficientNet-Lite0 fp32, {args.tp_repeats} alternated repeats of {args.tp_seconds} s")
    base = np.array(res[configs[0][0]])
    for k, _ in configs:
        v = np.array(res[k])
        ratio = v / base
        print(f"  {k:<22} {v.mean():7.1f} inf/s (sd {v.std(ddof=1):.1f})  x{np.median(ratio):.2f} vs 1x1 "
              f"(paired range {ratio.min():.2f}-{ratio.max():.2f})  [{how[k]}]")


def memory_table(cells: dict, args):
    from edgec.core.benchmark.memory import measure
    from edgec.core.manifest import read_manifest
    from edgec.core.model_io import random_feeds
    from edgec.core.backend import TensorSpec

    print(f"\n[memory] EfficientNet-Lite0 peak RSS over load + 10 inferences, fresh child each, {args.mem_repeats} repeats")
    print(f"  {'cell':<18} {'peak MB':>14} {'+RSS MB':>14} {'load +RSS MB':>13} {'disk MB':>8}")
    for name in ("onnxruntime-fp32", "onnxruntime-int8", "openvino-fp32", "openvino-int8"):
        if name not in cells:
            continue
        m = read_manifest(Path(cells[name]))
        feeds = random_feeds([TensorSpec.from_json(s) for s in m["inputs"]], np.random.default_rng(0))
        base: dict = {}
        rs = [measure(cells[name], m["backend"], feeds, 1, 10, base if i else None) for i in range(args.mem_repeats)]
        pk = np.array([r["peak_rss_bytes"] for r in rs]) / 1e6
        inc = np.array([r["increment_bytes"] for r in rs]) / 1e6
        ld = np.array([r["load_increment_bytes"] for r in rs]) / 1e6
        disk = sum(f["size"] for f in m["files"].values()) / 1e6
        print(f"  {name:<18} {pk.mean():8.1f} ±{pk.std(ddof=1):4.1f} {inc.mean():8.1f} ±{inc.std(ddof=1):4.1f} "
              f"{ld.mean():9.1f} ±{ld.std(ddof=1):3.1f} {disk:8.1f}")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--keep", help="work directory to keep (default: a fresh one under /tmp)")
    p.add_argument("--reuse", action="store_true", help="reuse compare's cached artifacts in --keep")
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--tp-seconds", type=float, default=4.0)
    p.add_argument("--tp-repeats", type=int, default=4)
    p.add_argument("--mem-repeats", type=int, default=3)
    p.add_argument("--only", choices=("agreement", "throughput", "memory"), help="run one part")
    args = p.parse_args()
    import tempfile
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench_benchmark-"))
    print(f"uptime (start): {uptime()}")
    t0 = time.time()
    fm = REPO / "examples" / "fashion_mnist"
    if args.only not in (None, "agreement"):
        eff = {k: str(work / "eff" / "artifacts" / k) for k in ("onnxruntime-fp32", "onnxruntime-int8", "openvino-fp32",
                                                  "openvino-int8") if (work / "eff" / "artifacts" / k / "manifest.json").exists()}
        if args.only == "throughput" and "openvino-fp32" in eff:
            throughput(eff["openvino-fp32"], args)
        elif args.only == "memory":
            memory_table(eff, args)
        print(f"\nuptime (end): {uptime()}; {time.time() - t0:.0f} s; work dir {work}")
        return 0
    agreement("fashion_mnist", fm / "model.onnx", work / "fm", args, calibration=fm / "calib.npz",
              validation=fm / "val.npz", preprocess="unit", val_samples=200)
    eff = agreement("efficientnet_lite0", SHARED / "models" / "efficientnet_lite0.onnx", work / "eff", args,
                    calibration=SHARED / "data" / "imagenet_calib500_jpeg.npz", preprocess="efficientnet-lite",
                    calib_samples=100, val_samples=50)
    print(f"uptime: {uptime()}")
    if args.only == "agreement":
        return 0
    if "openvino-fp32" in eff:
        throughput(eff["openvino-fp32"], args)
    memory_table(eff, args)
    print(f"\nuptime (end): {uptime()}; {time.time() - t0:.0f} s; work dir {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
