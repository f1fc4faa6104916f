"""TFLite backend benchmark (issue #15's Done-when numbers), one run, ratios side by side at 1 thread.

    python benchmarks/bench_tflite.py                                   # full: calib500 -> eval500
    python benchmarks/bench_tflite.py --calib-samples 100 --eval-samples 100 --runs 30   # quicker

Prints:
  * EfficientNet-Lite0 full-integer INT8 .tflite (core every_tensor Q/DQ, calibrated on
    imagenet_calib500, measured on imagenet_eval500): top-1 agreement with FP32 and its standard
    error, cosine; the same with -O io=int8 (integer inputs/outputs);
  * latency on LiteRT/XNNPACK vs edgec's onnxruntime INT8 of the same model, timed interleaved
    (round-robin, one inference each per round) at 1 thread, median ms and the ratio;
  * fp32, fp16 and int8-dynamic .tflite cosine for every model in ../shared/models.
The machine load (`uptime`) is printed first: only the interleaved ratios mean anything on a shared box.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PP = {"efficientnet_lite0": "efficientnet-lite", "squeezenet1_1": "squeezenet-bgr",
      "mobilenetv2_backbone": "imagenet", "fashion_mnist_cnn": "unit"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calib-samples", type=int, default=500)
    ap.add_argument("--eval-samples", type=int, default=500)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--skip-float", action="store_true", help="skip the fp32/fp16/dynamic sweep over all models")
    args = ap.parse_args(argv)
    os.environ.setdefault("EDGEC_PROGRESS", "0")
    import edgec

    print("load:", os.popen("uptime").read().strip(), flush=True)
    calib = SHARED / "data" / "imagenet_calib500_jpeg.npz"
    val = SHARED / "data" / "imagenet_eval500_jpeg.npz"
    model = SHARED / "models" / "efficientnet_lite0.onnx"
    tmp = Path(tempfile.mkdtemp(prefix="bench_tflite_"))
    common = dict(calibration=calib, validation=val, preprocess=PP["efficientnet_lite0"],
                  calib_samples=args.calib_samples, val_samples=args.eval_samples, threads=1, force=True)
    arts = {}
    for name, backend, opts in (("tflite-int8", "tflite", {}), ("tflite-int8-io", "tflite", {"io": "int8"}),
                                ("ort-int8", "onnxruntime", {})):
        a = edgec.compile(model, backend, "int8", output=tmp / name, options=opts, **common)
        v = a.manifest["validation"]
        n, p = v["samples"], v["top1_agreement"]
        se = math.sqrt(p * (1 - p) / n)
        arts[name] = a
        extra = ""
        if backend == "tflite":
            bi = a.manifest["backend_info"]
            extra = (f"  activations {bi['file']['activation_dtypes']}  xnnpack {bi['layers']['ops_delegated']}/"
                     f"{bi['layers']['ops']} ops  io {[e['dtype'] for e in bi['io']['inputs']]}")
        print(f"{name:15s} top-1 agreement {100 * p:.1f} % +- {100 * se:.1f} (n={n})  cosine {v['cosine']:.5f}"
              f"  passed={v['passed']}{extra}", flush=True)
    # FP32 of both runtimes in the same interleaved set: how much each gains from its INT8 kernels.
    for name, backend in (("tflite-fp32", "tflite"), ("ort-fp32", "onnxruntime")):
        arts[name] = edgec.compile(model, backend, "fp32", output=tmp / name, validation=val,
                                   preprocess=PP["efficientnet_lite0"], val_samples=20, threads=1, force=True)
    # Interleaved latency at 1 thread.
    runners = {k: edgec.load(a.path, threads=1) for k, a in arts.items()}
    x = {"input": np.random.default_rng(0).normal(0, 1, (1, 3, 224, 224)).astype(np.float32)}
    times = {k: [] for k in runners}
    order = list(runners)
    for _ in range(5):
        for r in runners.values():
            r.time_once(x)
    for i in range(args.runs):
        for k in order[i % len(order):] + order[:i % len(order)]:
            times[k].append(runners[k].time_once(x))
    med = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
    for k, m in med.items():
        print(f"latency {k:15s} median {m:.2f} ms (1 thread, {args.runs} interleaved runs)")
    print(f"INT8 speedup over own FP32: LiteRT {med['tflite-fp32'] / med['tflite-int8']:.2f}x, "
          f"onnxruntime {med['ort-fp32'] / med['ort-int8']:.2f}x; LiteRT FP32 / ORT FP32 "
          f"{med['tflite-fp32'] / med['ort-fp32']:.3f}")
    ratio = med["tflite-int8"] / med["ort-int8"]
    ratio_io = med["tflite-int8-io"] / med["ort-int8"]
    print("cpu:", _cpu())
    agree = arts["tflite-int8"].manifest["validation"]["top1_agreement"]
    n = arts["tflite-int8"].manifest["validation"]["samples"]
    se = math.sqrt(agree * (1 - agree) / n)
    print(f"DONE-WHEN agreement {100 * agree:.1f} % +- {100 * se:.1f} (target >= 98.5): "
          f"{'met' if agree >= 0.985 else 'NOT met'}; latency LiteRT/ORT INT8 {ratio:.3f} (target <= 1.00): "
          f"{'met' if ratio <= 1.0 else 'NOT met'}; int8-I/O variant ratio {ratio_io:.3f}, validated "
          f"{arts['tflite-int8-io'].manifest['validation']['passed']}")
    for r in runners.values():
        r.close()
    micro_conv(tmp, args.runs)
    if args.skip_float:
        return 0
    for m in sorted(PP):
        path = SHARED / "models" / f"{m}.onnx"
        row = []
        for precision, opts in (("fp32", {}), ("fp16", {}), ("int8", {"int8": "dynamic"})):
            kw = {}
            if m != "fashion_mnist_cnn":
                kw = dict(validation=val, preprocess=PP[m], val_samples=50)
                if precision == "int8":
                    kw.update(calibration=calib, calib_samples=8)
            elif precision == "int8":
                kw = dict(calibration=SHARED / "data" / "fashion_mnist_test.npz", calib_samples=8, preprocess="unit")
            try:
                a = edgec.compile(path, "tflite", precision, output=tmp / f"{m}-{precision}", options=opts,
                                  force=True, threads=1, **kw)
                v = a.manifest["validation"]
                row.append(f"{precision}{'-dynamic' if opts else ''} cos {v['cosine']:.6f}"
                           f"{' agree %.1f' % (100 * v['top1_agreement']) if v.get('top1_agreement') is not None else ''}")
            except Exception as e:  # report and go on: one model's failure is a row, not the end
                row.append(f"{precision}: {type(e).__name__}: {str(e)[:120]}")
        print(f"{m:22s} " + " | ".join(row), flush=True)
    return 0


def micro_conv(tmp: Path, runs: int) -> None:
    """One 1x1 conv (256 -> 256 channels, 28x28), fp32 and int8 on both runtimes, interleaved: whether
    a latency gap is the int8 kernels' ISA (without VNNI, XNNPACK's qs8 GEMM widens to 16-bit madds
    while MLAS's u8s8 uses VPMADDUBSW) rather than the .tflite."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edgec.backends.tflite.backend import TFLiteBackend
    from edgec.backends.tflite.convert import to_tflite
    from edgec.backends.tflite.runner import TFLiteRunner
    from edgec.core.backend import QuantFlavour
    from edgec.core.data import ArrayDataset
    from edgec.core.quantization import quantize

    rng = np.random.default_rng(0)
    c = 256
    g = helper.make_graph([helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv")], "micro",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 28, 28])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 28, 28])],
                          [numpy_helper.from_array(rng.normal(0, .1, (c, c, 1, 1)).astype(np.float32), "w"),
                           numpy_helper.from_array(np.zeros(c, np.float32), "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    cal = ArrayDataset({"x": rng.normal(0, 1, (8, c, 28, 28)).astype(np.float32)})
    q_t = quantize(m, "int8", flavour=TFLiteBackend.requirements.quant, calibration=cal, progress=False).model
    q_o = quantize(m, "int8", flavour=QuantFlavour(reduce_range=True), calibration=cal, progress=False).model
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    x = {"x": rng.normal(0, 1, (1, c, 28, 28)).astype(np.float32)}
    fns = {}
    for name, model in (("ort-fp32", m), ("ort-int8", q_o)):
        sess = ort.InferenceSession(model.SerializeToString(), so)
        fns[name] = lambda sess=sess: sess.run(None, x)
    for name, model, opts in (("tflite-fp32", m, {}), ("tflite-int8", q_t, {"io": "int8"})):
        data, info = to_tflite(model, opts)
        p = tmp / f"micro-{name}.tflite"
        p.write_bytes(data)
        r = TFLiteRunner(p, info["io"], threads=1)
        fns[name] = lambda r=r: r.time_once(x)
    import time

    t = {k: [] for k in fns}
    for _ in range(max(runs, 50)):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            t[k].append(time.perf_counter() - t0)
    med = {k: 1e3 * float(np.median(v)) for k, v in t.items()}
    print("micro 1x1 conv 256->256 @28x28, 1 thread, ms: " + ", ".join(f"{k} {v:.3f}" for k, v in med.items()) +
          f"; int8 speedup LiteRT {med['tflite-fp32'] / med['tflite-int8']:.2f}x, "
          f"onnxruntime {med['ort-fp32'] / med['ort-int8']:.2f}x")


def _cpu() -> str:
    """Model name and the SIMD flags int8 kernels depend on (VNNI makes XNNPACK's qs8 GEMMs 2-4x faster)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    name = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    keep = [f for f in flags if f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")]
    return f"{name} ({', '.join(keep) or 'no avx2'})"


if __name__ == "__main__":
    sys.exit(main())
