"""Issue 17: how fast edgec itself is, first run and cached re-run, as a user runs it (one `edgec`
process per command, so imports count).

    python benchmarks/bench_speed.py                # everything (~6 min quiet, far more on a shared machine)
    python benchmarks/bench_speed.py --only backends,bundled-tvm

Cells (EfficientNet-Lite0: calibration imagenet_calib500[:200], validation imagenet_eval500, 500 images):
  backends         `edgec backends` and `edgec --help`, median of 5 each
  ort-int8         onnxruntime INT8, default settings: first run (empty cache), then the same command again
  openvino-int8    OpenVINO INT8, default settings: first run, re-run
  tvm              TVM fp32 cold (empty cache), then int8 of the same model (another precision)
  bundled-tvm      the bundled Fashion-MNIST CNN on TVM fp32 (cold)
Each compile prints wall seconds, the child's CPU seconds (user+sys: on a loaded machine the steadier
figure), the manifest's per-stage seconds, the cache hits, and top-1 agreement with FP32 with its
standard error. The load average is printed before and after; the targets are for a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
EFF = SHARED / "models" / "efficientnet_lite0.onnx"
CALIB = SHARED / "data" / "imagenet_calib500_jpeg.npz"
EVAL = SHARED / "data" / "imagenet_eval500_jpeg.npz"
BUNDLED = REPO / "examples" / "fashion_mnist"
EDGEC = [sys.executable, "-m", "edgec.core.cli"]
TARGETS = {"ort-int8": (30, 15), "openvino-int8": (30, 15), "tvm": (30, 10), "bundled-tvm": (10, None)}


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} CPUs"


def run(argv, env) -> tuple[float, float, subprocess.CompletedProcess]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc


def compile_cell(label, model, backend, precision, cache_dir, out, extra=(), threads=None):
    env = {**os.environ, "EDGEC_CACHE_DIR": str(cache_dir), "EDGEC_PROGRESS": "0"}
    argv = [*EDGEC, "compile", str(model), "-b", backend, "-p", precision, "-o", str(out), "--force", "--json", *extra]
    if threads:
        argv += ["--threads", str(threads)]
    wall, cpu, proc = run(argv, env)
    if proc.returncode != 0:
        print(f"  {label:<34} FAILED (exit {proc.returncode}): {(proc.stderr.strip().splitlines() or ['?'])[-1][:200]}")
        return None
    m = json.loads(proc.stdout)
    v = m["validation"]
    agree = v.get("top1_agreement")
    n = v.get("samples") or 0
    se = math.sqrt(agree * (1 - agree) / n) if agree is not None and n else None
    q = m.get("quantization") or {}
    caches = {"calibration": (q.get("calibration") or {}).get("cache"),
              "gptq": (q.get("weight_rounding") or {}).get("cache"),
              "bias": (q.get("bias_correction") or {}).get("cache"),
              "reference": "hit" if (v.get("reference_cache") or {}).get("misses") == 0 else "miss"}
    caches = ",".join(f"{k}={c}" for k, c in caches.items() if c)
    stages = " ".join(f"{k} {s:.1f}" for k, s in (m.get("stage_seconds") or {}).items() if s >= 0.1)
    agr = f"agreement {100 * agree:.1f} +- {100 * se:.1f} % (n={n})" if se is not None else ""
    print(f"  {label:<34} {wall:7.1f} s wall {cpu:7.1f} s cpu  {agr}")
    print(f"  {'':<34} stages: {stages}")
    print(f"  {'':<34} caches: {caches}")
    return wall


def cell_backends(_):
    env = {**os.environ, "EDGEC_PROGRESS": "0"}
    for argv, label in (([*EDGEC, "backends"], "edgec backends"), ([*EDGEC, "--help"], "edgec --help")):
        runs = [run(argv, env) for _ in range(5)]
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        ok = all(r[2].returncode == 0 for r in runs)
        print(f"  {label:<34} {wall:7.2f} s wall {cpu:7.2f} s cpu (median of 5){'' if ok else '  FAILED'}"
              f"   target <= 1 s")


def _eff_data():
    return ["--calib", str(CALIB), "--calib-samples", "200", "--val", str(EVAL), "--preprocess", "efficientnet-lite"]


def cell_int8(backend, a, tmp):
    cache = tmp / f"cache-{backend}"
    first = compile_cell(f"{backend} int8, first run", EFF, backend, "int8", cache, tmp / f"{backend}-int8", _eff_data(), a.threads)
    again = compile_cell(f"{backend} int8, re-run (cached)", EFF, backend, "int8", cache, tmp / f"{backend}-int8", _eff_data(), a.threads)
    return first, again


def cell_tvm(a, tmp):
    cache = tmp / "cache-tvm"
    data = ["--val", str(EVAL), "--preprocess", "efficientnet-lite"]
    cold = compile_cell("tvm fp32, cold", EFF, "tvm", "fp32", cache, tmp / "tvm-fp32", data, a.threads)
    other = compile_cell("tvm int8 after fp32 (same model)", EFF, "tvm", "int8", cache, tmp / "tvm-int8", _eff_data(), a.threads)
    return cold, other


def cell_bundled(a, tmp):
    m = BUNDLED / "model.onnx"
    data = ["--val", str(BUNDLED / "val.npz"), "--preprocess", "unit"]
    return compile_cell("bundled model tvm fp32, cold", m, "tvm", "fp32", tmp / "cache-bundled", tmp / "bundled", data,
                        a.threads), None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="backends,ort-int8,openvino-int8,tvm,bundled-tvm")
    p.add_argument("--threads", type=int, help="--threads for every compile (default: the runtimes' own)")
    a = p.parse_args(argv)
    cells = [c.strip() for c in a.only.split(",") if c.strip()]
    if any(c != "backends" and c != "bundled-tvm" for c in cells) and not EFF.exists():
        print(f"{EFF} not found: the EfficientNet-Lite0 cells need ../shared"); return 2
    print(f"edgec speed (issue 17); {load()}")
    tmp = Path(tempfile.mkdtemp(prefix="edgec-bench-speed-"))
    results = {}
    try:
        for c in cells:
            print(f"{c}:")
            if c == "backends":
                cell_backends(a)
            elif c in ("ort-int8", "openvino-int8"):
                results[c] = cell_int8(c.split("-")[0].replace("ort", "onnxruntime"), a, tmp)
            elif c == "tvm":
                results[c] = cell_tvm(a, tmp)
            elif c == "bundled-tvm":
                results[c] = cell_bundled(a, tmp)
            else:
                print(f"  unknown cell {c!r}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("targets (issue 17, on a quiet machine):")
    for c, (first, again) in results.items():
        t1, t2 = TARGETS[c]
        line = f"  {c:<14} first {first:.1f} s (target <= {t1} s)" if first else f"  {c:<14} first: failed"
        if t2 is not None:
            line += f", second {again:.1f} s (target <= {t2} s)" if again else ", second: failed"
        print(line)
    print(f"done; {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
