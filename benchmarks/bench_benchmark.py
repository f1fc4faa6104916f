"""Issue #23's figures for `edgec benchmark`:

    python benchmarks/bench_benchmark.py                  # ~15 min on 2 busy cores
    python benchmarks/bench_benchmark.py --keep DIR --reuse   # re-time artifacts compiled before

1. Agreement with `edgec compare`: on the bundled model (examples/fashion_mnist) and EfficientNet-Lite0
   (efficientnet-lite preprocessing, calib500 with 100 samples), the `edgec compare` CLI compiles
   onnxruntime and OpenVINO fp32 / int8 and times them interleaved, and the `edgec benchmark` CLI times the
   same artifacts interleaved, alternated --repeats times in fresh processes. Latency ratios vs onnxruntime
   fp32; both tools state a paired-block 95 % CI per run; agreement is judged on the between-run means.
2. Throughput on OpenVINO EfficientNet-Lite0 fp32: 1 stream x 1 thread, 2 streams x 1 thread
   (2 async requests, NUM_STREAMS=2) and 1 stream x 2 threads, alternated block by block.
3. Peak RSS (fresh child per artifact, 3 repeats) fp32 vs int8 on onnxruntime and OpenVINO.
All at 1 thread unless said; `uptime` printed first and last.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _cli(*argv) -> dict:
    r = subprocess.run([str(REPO / ".venv" / "bin" / "edgec"), *map(str, argv)], capture_output=True, text=True,
                       env={**os.environ, "EDGEC_PROGRESS": "0"})
    if r.returncode != 0:
        raise SystemExit(f"edgec {argv[0]} failed: {r.stderr.strip().splitlines()[-1:]}")
    return json.loads(r.stdout)


def agreement(name, model, out, args, calibration, preprocess, validation=None, calib_samples=None, val_samples=None):
    """`edgec compare` and `edgec benchmark`, each as the CLI a user runs (a fresh process), alternated
    args.repeats times over the same artifacts (compare's first run compiles them, later runs reuse them).

    Two kinds of noise: each run's own 95 % CI (paired blocks, what both tools state), and the spread
    between runs (fresh processes: other load, where the kernel places the threads). The agreement test is
    between runs: per cell, the two tools' mean ratios differ by less than 2 standard errors of that
    difference (Welch); the within-run CIs are printed beside it to show how much of the drift they cover."""
    data = validation or calibration  # compare times the first sample of this
    common = ["--threads", "1", "--runs", str(args.runs), "--warmup", "5", "--calib", calibration,
              "--preprocess", preprocess] + (["--val", validation] if validation else []) + (
        ["--calib-samples", calib_samples] if calib_samples else []) + (["--val-samples", val_samples] if val_samples else [])
    cmp, bench, arts = [], [], None
    for rep in range(args.repeats):
        c = _cli("compare", model, "-b", "onnxruntime,openvino", "-p", "fp32,int8", "-o", out, "--json", *common,
                 *(["--force"] if rep == 0 and not args.reuse else []))
        ok = [r for r in c["cells"] if r["status"] == "ok"]
        if rep == 0:
            for r in c["cells"]:
                if r["status"] != "ok":
                    print(f"  {name} {r['backend']} {r['precision']}: {r['status']}: {r['error']}")
            arts = [r["artifact"] for r in ok]  # onnxruntime fp32 first: the reference in both
        # compare reports a speedup and its CI; as a latency ratio both invert
        cmp.append({f"{r['backend']} {r['precision']}": (
            1.0 / r["speedup_vs_reference"],
            None if not r.get("speedup_ci95") else (1.0 / r["speedup_ci95"][1], 1.0 / r["speedup_ci95"][0]))
            for r in ok})
        b = _cli("benchmark", *arts, "-n", args.runs, "--warmup", "5", "--threads", "1", "--no-memory", "--json",
                 "--input", data, "--preprocess", preprocess)
        bench.append({f"{a['backend']} {a['precision']}": (a["vs_first"]["latency_ratio"],
                                                           a["vs_first"]["latency_ratio_ci95"]) for a in b["artifacts"]})
    print(f"\n[{name}] median-latency ratio vs onnxruntime fp32, 1 thread, {args.runs} interleaved runs per artifact "
          f"per run; {args.repeats} fresh-process runs of each tool, alternated; same input (first sample of "
          f"{Path(data).name})")
    print(f"  {'cell':<18} {'compare: mean ± sd':<20} {'benchmark: mean ± sd':<21} {'diff ± SE':<16} "
          f"{'within-run CI ±':<16} {'agree (|diff| < 2 SE)'}")
    met = []
    for k in cmp[0]:
        if k == "onnxruntime fp32":
            continue
        c = np.array([r[k][0] for r in cmp if k in r])
        bb = np.array([r[k][0] for r in bench if k in r])
        halves = [(ci[1] - ci[0]) / 2 for r in cmp + bench if k in r for ci in [r[k][1]] if ci]
        diff = c.mean() - bb.mean()
        se = float(np.sqrt(c.var(ddof=1) / len(c) + bb.var(ddof=1) / len(bb)))
        ok_ = abs(diff) < 2 * se if se > 0 else diff == 0
        met.append(ok_)
        print(f"  {k:<18} {c.mean():.3f} ± {c.std(ddof=1):.3f}        {bb.mean():.3f} ± {bb.std(ddof=1):.3f}         "
              f"{diff:+.3f} ± {se:.3f}   {np.mean(halves):.3f}            {'yes' if ok_ else 'NO'}")
        print(f"  {'':<18} runs: compare {' '.join(f'{x:.3f}' for x in c)}; benchmark {' '.join(f'{x:.3f}' for x in bb)}")
    print(f"  [{name}] agree in {sum(met)}/{len(met)} cells")
    return {k.replace(" ", "-"): a for k, a in zip(cmp[0], arts)}


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
    p.add_argument("--repeats", type=int, default=5, help="fresh-process runs of each tool in the agreement part")
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
