"""Sweep wall time: `edgec compare` local vs on a Ray cluster of 1 and 2 worker nodes (issue #22).

    python benchmarks/bench_ray.py                       # onnxruntime,openvino,tflite x fp32,fp16,int8, 1 round
    python benchmarks/bench_ray.py --rounds 2 --backends onnxruntime,openvino --cpus-per-node 1

Each configuration sweeps the bundled Fashion-MNIST model from scratch (a fresh -o and a fresh
EDGEC_CACHE_DIR, so no calibration histogram or artifact is reused): local = every cell in this process,
one after another; ray-N = a loopback cluster of N raylets on this machine (edgec.core.compare.ray_executor.
local_cluster, --cpus-per-node CPUs each), every cell a Ray task, workers reused by cells of one backend
(RayExecutor's default; ray-N-fresh: a fresh worker process per cell, cells_per_worker=1). Reported: the
sweep's wall time (compile + validate + the interleaved timing phase, which is the same work everywhere),
cells compiled per minute, and the cluster's start-up separately. Configurations rotate between rounds so
a load change does not always hit the same one; the load (`uptime`) is printed before and after each.
On one 2-core host "2 nodes" can at best run two cells at once: the ratio measures Ray's overhead and
what two concurrent cells buy there, not a multi-host speed-up.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "examples" / "fashion_mnist"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def one(config: str, args) -> dict:
    import edgec

    root = Path(tempfile.mkdtemp(prefix="ebr-"))  # short: Ray's socket paths live under it
    saved = os.environ.get("EDGEC_CACHE_DIR")
    os.environ["EDGEC_CACHE_DIR"] = str(root / "c")
    kw = dict(calibration=BUNDLED / "calib.npz", validation=BUNDLED / "val.npz", preprocess="unit",
              calib_samples=args.calib_samples, val_samples=args.val_samples, runs=args.runs, warmup=2, threads=1,
              memory=False)
    before = load()
    try:
        start = 0.0
        if config == "local":
            t = time.perf_counter()
            rep = edgec.compare(BUNDLED / "model.onnx", args.backends, args.precisions, output=root / "out", **kw)
            wall = time.perf_counter() - t
        else:
            from edgec.core.compare.ray_executor import RayExecutor, local_cluster

            nodes = int(config.split("-")[1])
            t0 = time.perf_counter()
            with local_cluster(nodes=nodes, cpus_per_node=args.cpus_per_node, object_store_memory=80 << 20):
                with RayExecutor(**({"cells_per_worker": 1} if config.endswith("-fresh") else {})) as ex:
                    start = time.perf_counter() - t0
                    t = time.perf_counter()
                    rep = edgec.compare(BUNDLED / "model.onnx", args.backends, args.precisions, output=root / "out",
                                        executor=ex, **kw)
                    wall = time.perf_counter() - t
        compiled = [r for r in rep.rows if r["status"] in ("ok", "failed_validation", "error") and not r["reused"]]
        return {"config": config, "wall_s": wall, "start_s": start, "cells": len(compiled),
                "ok": sum(r["status"] == "ok" for r in compiled), "cells_per_min": 60 * len(compiled) / wall,
                "load_before": before, "load_after": load()}
    finally:
        if saved is None:
            os.environ.pop("EDGEC_CACHE_DIR", None)
        else:
            os.environ["EDGEC_CACHE_DIR"] = saved
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="onnxruntime,openvino,tflite")
    ap.add_argument("--precisions", default="fp32,fp16,int8")
    ap.add_argument("--configs", default="local,ray-1,ray-2")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--cpus-per-node", type=int, default=1)
    ap.add_argument("--calib-samples", type=int, default=64)
    ap.add_argument("--val-samples", type=int, default=200)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("EDGEC_PROGRESS", "0")
    configs = args.configs.split(",")
    results = []
    for rnd in range(args.rounds):
        order = configs[rnd % len(configs):] + configs[:rnd % len(configs)]
        for c in order:
            r = one(c, args)
            r["round"] = rnd
            results.append(r)
            print(f"round {rnd} {c:11s}: {r['wall_s']:7.1f} s for {r['cells']} cells ({r['ok']} ok) = "
                  f"{r['cells_per_min']:5.2f} cells/min; cluster start {r['start_s']:5.1f} s; "
                  f"load {r['load_before']} -> {r['load_after']}", file=sys.stderr, flush=True)
    print(f"\nbundled model, {args.backends} x {args.precisions}, calib {args.calib_samples} / val "
          f"{args.val_samples} samples, {args.runs} timed runs per cell at 1 thread; host: {os.cpu_count()} CPUs, "
          f"{args.cpus_per_node} CPU(s) per Ray node")
    print(f"{'config':11s} {'sweep wall s':>13s} {'cells/min':>10s} {'vs local':>9s} {'cluster start s':>16s}")
    for c in configs:
        mine = [r for r in results if r["config"] == c]
        wall = sum(r["wall_s"] for r in mine) / len(mine)
        cpm = sum(r["cells_per_min"] for r in mine) / len(mine)
        loc = [r for r in results if r["config"] == "local"]
        ratio = (sum(r["wall_s"] for r in loc) / len(loc)) / wall if loc else float("nan")
        start = sum(r["start_s"] for r in mine) / len(mine)
        print(f"{c:11s} {wall:13.1f} {cpm:10.2f} {ratio:8.2f}x {start:16.1f}")
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
