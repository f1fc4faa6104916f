"""`edgec debug --bisect` on SqueezeNet 1.1 INT8 (issue #20's done-when), per backend.

Calibrate on calib500[:200], rank layers and select the keep-set on calib500[200:] (300 images, on the
backend's own runtime), measure the chosen keep-set once on eval500 (500 held-out images: agreement with
FP32 +- standard error, paired against the plain INT8 artifact), and time it against the plain INT8
artifact interleaved at 1 thread. Prints the worst layers by own added error, the bisection steps, the
keep-set, the held-out numbers, the latency ratio and the flag line that builds it.

    .venv/bin/python benchmarks/bench_debug.py [--backends onnxruntime,openvino] [--min-agreement 98] [-o DIR]

Measured 2026-12-01 18:00-18:35 (load 17-23: latencies are interleaved ratios only), 36 candidates (29
ranked), judged on the agreement estimate minus 2 SEs (--bound-z 2), keep-sets closed over stranded Q/DQ:
  openvino     --order error: 10 chosen + 23 stranded = 33 float, 2 of 26 convs int8 (2.7 % of the MACs);
               eval500 98.20 +- 0.60 % vs INT8 96.00 +- 0.88 % (paired +2.20 +- 1.00, +18/-7, McNemar
               p=0.043): meets 98 % held out; latency 1.667x INT8, FP32 1.655x: keep-set / FP32 1.007
               --order cost: 12 + 21 = 33 float, 2 convs int8 (8.7 % of the MACs); eval500 99.60 +- 0.28 %
               (paired +3.60 +- 0.88, +19/-1, p<0.001); 1.695x INT8, FP32 1.778x: 0.953 (CIs overlap)
  onnxruntime  --order error: 33 float, 2 convs int8; eval500 98.20 +- 0.60 % vs 96.20 +- 0.86 % (paired
               +2.00 +- 0.98, +17/-7, p=0.064): meets 98 % held out; 1.548x INT8, FP32 1.450x: 1.067
               --order cost: 33 float, 2 convs int8 (8.7 % of the MACs); eval500 99.60 +- 0.28 % (paired
               +3.40 +- 0.86, +18/-1, p=0.0001); 1.372x INT8, FP32 1.416x: 0.969 (CIs overlap)
  Re-timed together at load 4.5-5 (`edgec benchmark INT8 OLD CLOSED COST FP32 --threads 1 -n 300`), x INT8:
    onnxruntime  old 23-tensor keep-set 2.18 [1.95, 2.40]; closed 1.44 [1.28, 1.59]; cost 1.34 [1.17, 1.50];
                 FP32 1.37 [1.24, 1.51]
    openvino     old 22-tensor keep-set 1.88 [1.80, 1.96]; closed 1.76 [1.67, 1.85]; cost 1.63 [1.53, 1.73];
                 FP32 1.78 [1.70, 1.87]
  advice printed on all four: use FP32. Before (z=1, no closure): OpenVINO 97.80 +- 0.66 % held out
  (one image short); the 22-23-tensor keep-sets left no conv int8 at all but 13-14 Q/DQ pairs, 2.0x INT8
  (onnxruntime: 1.38x FP32). `--accept observed` (the raw count) on onnxruntime chose 7 tensors at
  98.33 % on the selection split, 94.80 +- 0.99 % on eval500: the search had fitted noise.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backends", default="onnxruntime,openvino")
    ap.add_argument("--min-agreement", default="98")
    ap.add_argument("--samples", default="16", help="images for the layerwise comparison")
    ap.add_argument("--shrink", default="16", help="shrink-phase compile budget (edgec debug --shrink)")
    ap.add_argument("--accept", default="bound", choices=["bound", "observed"], help="edgec debug --accept")
    ap.add_argument("--vs-fp32", action="store_true",
                    help="kept for old command lines: edgec debug now times INT8, keep-set and FP32 together")
    ap.add_argument("--bound-z", default="2", help="edgec debug --bound-z (standard errors below the estimate)")
    ap.add_argument("--order", default="error", choices=["error", "cost"], help="edgec debug --order")
    ap.add_argument("--no-close", action="store_true", help="edgec debug --no-close")
    ap.add_argument("-o", "--output", default=str(REPO / "out" / "bench_debug"))
    ap.add_argument("--option", "-O", action="append", default=[], metavar="BACKEND:KEY=VALUE")
    a = ap.parse_args()
    model = SHARED / "models" / "squeezenet1_1.onnx"
    calib = SHARED / "data" / "imagenet_calib500_jpeg.npz"
    ev = SHARED / "data" / "imagenet_eval500_jpeg.npz"
    for p in (model, calib, ev):
        if not p.exists():
            print(f"skip: {p} not present", file=sys.stderr)
            return 0
    from edgec.core.cli import main as edgec_main

    print(f"uptime: {os.popen('uptime').read().strip()}")
    for be in a.backends.split(","):
        opts = [x.split(":", 1)[1] for x in a.option if x.startswith(be + ":")]
        argv = ["debug", str(model), "--backend", be, "--precision", "int8", "--preprocess", "squeezenet-bgr",
                "--calib", str(calib), "--calib-samples", "200", "--val", str(calib), "--val-skip", "200",
                "--samples", a.samples, "--bisect", "--shrink", a.shrink, "--accept", a.accept, "--min-agreement", a.min_agreement, "--holdout", str(ev),
                "--threads", "1", "-o", str(Path(a.output) / be), "--json", "--bound-z", a.bound_z, "--order", a.order]
        if a.no_close:
            argv.append("--no-close")
        for o in opts:
            argv += ["-O", o]
        t0 = time.perf_counter()
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = edgec_main(argv)
        if rc not in (0, 1):
            print(f"{be}: edgec debug exited {rc}")
            continue
        rep = json.loads(buf.getvalue())
        b = rep["bisect"]
        print(f"\n== {be} (squeezenet1_1 int8), {time.perf_counter() - t0:.0f} s")
        print(f"audit: {rep['audit'].get('summary')}")
        worst = [e for t in rep["worst"] for e in rep["layers"] if e["tensor"] == t]
        print("largest own added error: " + "; ".join(f"{e['layer'] or e['tensor']} {e['own_sqnr_db']} dB" for e in worst))
        def step(s):
            return ((f"-{s['dropped']}" if s.get("dropped") else f"k={s['k']}") + f":{s['agreement']:.2f}%"
                    + (f"(est {s['est_agreement']:.2f}, >={s['agreement_bound']:.2f})" if "agreement_bound" in s else ""))
        print(f"bisect over {b['candidates']} candidates ({b['ranked']} ranked), judged on {b.get('judged_on')}, "
              f"agreement on calib500[200:], "
              f"300 images: " + " ".join(step(s) for s in b["steps"] if s.get("phase") != "shrink"))
        print(f"shrink from k={b['prefix_k']}: " + " ".join(step(s) for s in b["steps"] if s.get("phase") == "shrink"))
        print(f"keep ({len(b['keep'])}): {', '.join(b['keep']) or '-'}  met on selection: {b['met']}")
        h = b.get("holdout")
        if h:
            p = h["paired"]
            print(f"held-out eval500 ({h['samples']}): INT8 {h['int8_agreement']:.2f} +- {h['int8_se']:.2f} %, keep-set "
                  f"{h['keep_agreement']:.2f} +- {h['keep_se']:.2f} %, paired {p['diff_points']:+.2f} +- {p['se_points']:.2f} "
                  f"points (+{p['gained']}/-{p['lost']}, McNemar p={p['mcnemar_p']}); top-1 FP32 {h.get('reference_top1')} "
                  f"INT8 {h.get('int8_top1')} keep {h.get('keep_top1')}; demand {a.min_agreement} % on held-out: "
                  f"{'met' if h['met'] else 'NOT met'}")
        c = b.get("cost") or {}
        if c:
            print(f"int8 work left: {c['int8_layers']} of {c['int8_layers_base']} weighted layers int8, "
                  f"{c['int8_macs_fraction']} of INT8's integer MACs; chosen {len(b.get('members') or [])}, "
                  f"closed to {len(b['keep'])} (stranded tensors added)")
        lat = b.get("latency") or {}
        if "ratio" in lat:
            from edgec.core.debug.bisect import latency_line
            print("latency (edgec.benchmark, interleaved): " + latency_line(lat))
        if lat.get("advice"):
            print(f"advice: {lat['advice']}")
        print(f"flag line: {b['flag_line']}")
    print(f"\nuptime: {os.popen('uptime').read().strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
