"""OpenVINO backend benchmark: EfficientNet-Lite0 on the CPU, every precision and INT8 path side by side.

    python benchmarks/bench_openvino.py                       # full run (~10 min on 2 shared cores)
    python benchmarks/bench_openvino.py --calib-samples 100 --eval-samples 200 --runs 50   # quicker

The last lines print issue #5's target for the default INT8 path (ov-int8-core): latency / NNCF
default at 1 thread (<= 1.00 within 1 %) and top-1 agreement with FP32 on imagenet_eval500 (>= 99 %),
then the expected agreement and logit NMSE beside NNCF's and BF16's, which say the same thing without
the +-0.4-point lottery of a few near-tied images (smooth_agreement).

Variants, all built in this one run and timed interleaved (round-robin, one inference each per round,
so load from other jobs hits them alike):
  ort-fp32          onnxruntime CPU FP32: the speed baseline
  ov-fp32           edgec.compile --backend openvino --precision fp32
  ov-fp16           --precision fp16 (fp16 weights; bf16 kernels where the CPU has them)
  ov-int8-core      --precision int8, the default: the core's Q/DQ model with GPTQ weight rounding
                    (-O weight_rounding=gptq, backends/openvino/core_int8.py)
  ov-int8-core-nearest  the same with -O weight_rounding=nearest (round-to-nearest weights, the
                    core's own default and this backend's default before issue #5)
  ov-int8-core-maxdrop  the default with --max-drop (agreement points on the unlabelled calibration
                    images): the backend's latency-aware repair keeps layers in FP32 by accuracy gained
                    per microsecond (backends/openvino/repair.py)
  ov-int8-standin   onnxruntime quantize_static QDQ (per-channel, u8 act / s8 weights) lowered by this
                    backend: the stand-in for the core's Q/DQ, for comparison
  nncf-default      plain nncf.quantize(ov model, 300 samples): the anchor every OpenVINO user gets
  ov-int8-nncf      --precision int8 --option calibrator=nncf (NNCF on all calibration samples)
Accuracy: top-1 against the labels and top-1 agreement with FP32 (onnxruntime) on imagenet_eval500;
calibration always on imagenet_calib500.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MODEL = SHARED / "models" / "efficientnet_lite0.onnx"
CALIB = SHARED / "data" / "imagenet_calib500_jpeg.npz"
EVAL = SHARED / "data" / "imagenet_eval500_jpeg.npz"
PREPROCESS = "efficientnet-lite"


def load_pack(path: Path, n: int | None) -> tuple[np.ndarray, np.ndarray]:
    """JPEG pack -> NCHW float32 with EfficientNet-Lite preprocessing (MODELS.md)."""
    from PIL import Image

    z = np.load(path, allow_pickle=False)
    o = z["offsets"]
    count = len(o) - 1 if n is None else min(n, len(o) - 1)
    xs = np.empty((count, 3, 224, 224), np.float32)
    for i in range(count):
        img = np.asarray(Image.open(io.BytesIO(z["jpeg"][o[i]:o[i + 1]].tobytes())).convert("RGB"), np.float32)
        xs[i] = ((img / 255.0 - 0.498) / 0.502).transpose(2, 0, 1)
    return xs, z["labels"][:count].astype(np.int64)


class OrtRunner:
    def __init__(self, path, threads):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        # ORT's idle workers spin after each call; on a 2-core machine that took the second core from
        # whichever OpenVINO model ran next, and every OpenVINO variant ran as slowly at 2 threads as at 1.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.name = self.sess.get_inputs()[0].name

    def run(self, feeds):
        return {"logits": self.sess.run(None, dict(feeds))[0]}

    def time_once(self, feeds):
        t0 = time.perf_counter()
        self.sess.run(None, dict(feeds))
        return time.perf_counter() - t0


def standin_qdq(model_path: Path, calib: np.ndarray, out: Path) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"input": x[None]}

    pre = out / "pre.onnx"
    quant_pre_process(str(model_path), str(pre))
    dst = out / "standin_qdq.onnx"
    quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return dst


def lower_onnx(backend, qdq_path: Path, source_path: Path, out: Path) -> Path:
    """The backend on its own (no core quantization) for a Q/DQ model made elsewhere."""
    import onnx

    from edgec.core.backend import LoweringContext

    out.mkdir(parents=True, exist_ok=True)
    ctx = LoweringContext(model=onnx.load(qdq_path), source_model=onnx.load(source_path), precision="int8",
                          out_dir=out, options=backend.validate_options({}))
    backend.lower(ctx)
    return out


TARGET_AGREEMENT = 0.99  # issue #5: top-1 agreement with FP32 on imagenet_eval500
TARGET_RATIO = 1.01  # issue #5: at least as fast as nncf-default, within ~1 % measurement noise


def smooth_agreement(out: np.ndarray, ref: np.ndarray) -> dict:
    """Expected agreement (the core repair's flip model: each image's chance of flipping from its FP32
    logit gaps and the measured error) and logit NMSE. Measured agreement on 500 images moves in whole
    near-tied images: ~13 of eval500 have a top-2 gap under 0.1, and whether each flips is close to a
    coin toss for any INT8 or even BF16 error, so two calibrations of equal quality differ by +-0.4 points
    there; the expectation and the NMSE do not."""
    from edgec.core.quantization.repair import flip_probabilities

    p_flip, _ = flip_probabilities(out, ref)
    nmse = float(np.mean(np.sum((out - ref) ** 2, 1) / np.sum(ref ** 2, 1)))
    return {"est_agree": float(1.0 - p_flip.mean()), "nmse": nmse}


def print_target(results: dict, threads) -> None:
    """The issue's two numbers for the default INT8 path (ov-int8-core), met or not."""
    r, t = results.get("ov-int8-core"), 1 if 1 in threads else min(threads)
    if not r or "nncf-default" not in results:
        print("target: needs the ov-int8-core and nncf-default variants")
        return
    ratio, agree = r[f"vs_nncf_{t}t"], r["agree"]
    print(f"target latency: ov-int8-core / nncf-default at {t} thread = {ratio:.3f}x (<= 1.00 within 1 %): "
          f"{'MET' if ratio <= TARGET_RATIO else 'NOT MET'}")
    nn = results["nncf-default"]
    print(f"target accuracy: ov-int8-core top-1 agreement with FP32 = {agree * 100:.1f} % (>= 99 %; "
          f"nncf-default {nn['agree'] * 100:.1f} %): {'MET' if agree >= TARGET_AGREEMENT - 1e-9 else 'NOT MET'}")
    est = r["est_agree"]
    line = (f"  expected agreement {est * 100:.2f} % (nncf-default {nn['est_agree'] * 100:.2f} %), logit NMSE "
            f"{r['nmse']:.2e} (nncf-default {nn['nmse']:.2e})")
    if "ov-fp16" in results:
        f16 = results["ov-fp16"]
        line += f"; for scale, ov-fp16 (bf16 kernels): {f16['est_agree'] * 100:.2f} %, {f16['nmse']:.2e}"
    print(line)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calib-samples", type=int, default=500)
    ap.add_argument("--eval-samples", type=int, default=500)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--runs", type=int, default=100, help="timed rounds per thread count")
    ap.add_argument("--max-drop", type=float, default=0.5,
                    help="agreement budget (points) for the ov-int8-core-maxdrop variant")
    ap.add_argument("--skip", nargs="*", default=[], help="variants to leave out")
    ap.add_argument("--json", type=Path, help="write the results here too")
    ap.add_argument("--keep", type=Path, help="keep the artifacts in this folder")
    ap.add_argument("--reuse", action="store_true",
                    help="with --keep: time the artifacts a previous run left there instead of rebuilding")
    args = ap.parse_args(argv)
    if not MODEL.exists():
        print(f"skip: {MODEL} not found (../shared beside the repo)", file=sys.stderr)
        return 0
    os.environ.setdefault("EDGEC_PROGRESS", "0")

    import openvino as ov

    import edgec
    from edgec.core.registry import get_backend

    backend = get_backend("openvino")
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="edgec-ov-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    xc, _ = load_pack(CALIB, args.calib_samples)
    xe, ye = load_pack(EVAL, args.eval_samples)
    calib_npz = work / "calib.npz"
    np.savez(calib_npz, input=xc)
    print(f"openvino {ov.get_version()}, CPU capabilities "
          f"{ov.Core().get_property('CPU', 'OPTIMIZATION_CAPABILITIES')}; calib {len(xc)}, eval {len(xe)}", flush=True)

    built: dict[str, dict] = {}  # name -> {"dir", "compile_s", "manifest", "compute"}
    if args.reuse:
        for d in sorted(work.iterdir()):
            if (d / "bench.json").exists():
                rec = json.loads((d / "bench.json").read_text())
                built[d.name] = {"dir": d, "compile_s": rec["compile_s"], "manifest": rec["manifest"]}
        print(f"reusing {sorted(built)} from {work}", flush=True)

    def compile_variant(name, precision, options=None, **kw):
        if name in args.skip or name in built:
            return
        out = work / name
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        try:
            art = edgec.compile(MODEL, backend="openvino", precision=precision, options=options or {},
                                calibration=calib_npz if precision == "int8" else None, output=out,
                                calib_samples=args.calib_samples, min_cosine=0.0, **kw)
        except Exception as e:  # a variant that fails is reported, the others still run
            print(f"{name}: FAILED {type(e).__name__}: {e}", flush=True)
            return
        info = art.manifest.get("backend_info", {}).get("layers", {})
        built[name] = {"dir": out, "compile_s": time.perf_counter() - t0, "manifest": art.manifest,
                       "compute": info.get("compute_layers_by_precision")}
        print(f"{name}: compiled in {built[name]['compile_s']:.1f} s, compute layers {built[name]['compute']}", flush=True)

    compile_variant("ov-fp32", "fp32")
    compile_variant("ov-fp16", "fp16")
    compile_variant("ov-int8-core", "int8")
    compile_variant("ov-int8-core-nearest", "int8", {"weight_rounding": "nearest"})
    compile_variant("ov-int8-nncf", "int8", {"calibrator": "nncf"})
    # The core's accuracy repair, budget in agreement points measured on the (unlabelled) calibration
    # images, so the eval set stays unseen.
    compile_variant("ov-int8-core-maxdrop", "int8", validation=calib_npz, max_drop=args.max_drop)
    if "ov-int8-standin" not in args.skip and "ov-int8-standin" not in built:
        t0 = time.perf_counter()
        q = standin_qdq(MODEL, xc, work)
        d = lower_onnx(backend, q, MODEL, work / "ov-int8-standin")
        built["ov-int8-standin"] = {"dir": d, "compile_s": time.perf_counter() - t0,
                                    "manifest": {"precision": "int8", "options": backend.validate_options({}),
                                                 "inputs": [{"name": "input", "dtype": "float32", "shape": [1, 3, 224, 224]}],
                                                 "outputs": [{"name": "logits", "dtype": "float32", "shape": [1, 1000]}]}}
        print(f"ov-int8-standin: built in {built['ov-int8-standin']['compile_s']:.1f} s", flush=True)
    if "nncf-default" not in args.skip and "nncf-default" not in built:
        import nncf

        t0 = time.perf_counter()
        fp = ov.convert_model(str(MODEL))
        qm = nncf.quantize(fp, nncf.Dataset(list(xc), lambda x: x[None]))  # NNCF defaults: subset_size=300
        d = work / "nncf-default"
        d.mkdir(exist_ok=True)
        ov.save_model(qm, str(d / "model.xml"), compress_to_fp16=False)
        built["nncf-default"] = {"dir": d, "compile_s": time.perf_counter() - t0,
                                 "manifest": built.get("ov-int8-standin", {}).get("manifest") or {
                                     "precision": "int8", "options": backend.validate_options({}),
                                     "inputs": [{"name": "input", "dtype": "float32", "shape": [1, 3, 224, 224]}],
                                     "outputs": [{"name": "logits", "dtype": "float32", "shape": [1, 1000]}]}}
        print(f"nncf-default: built in {built['nncf-default']['compile_s']:.1f} s", flush=True)

    for name, rec in built.items():
        (rec["dir"] / "bench.json").write_text(json.dumps({"compile_s": rec["compile_s"], "manifest": rec["manifest"]},
                                                          default=str))

    order = ["ort-fp32", "ov-fp32", "ov-fp16", "ov-int8-core", "ov-int8-core-nearest", "ov-int8-core-maxdrop",
             "ov-int8-standin", "nncf-default", "ov-int8-nncf"]
    results: dict[str, dict] = {}
    # Accuracy: one pass over the eval set per variant at the largest thread count.
    th = max(args.threads)
    ref = OrtRunner(MODEL, th)
    ref_logits = np.concatenate([ref.run({"input": x[None]})["logits"] for x in xe])
    ref_pred = ref_logits.argmax(1)
    results["ort-fp32"] = {"top1": float((ref_pred == ye).mean()), "agree": 1.0, "est_agree": 1.0, "nmse": 0.0}
    for name in order[1:]:
        if name not in built:
            continue
        r = backend.load(built[name]["dir"], built[name]["manifest"], threads=th)
        logits = np.concatenate([r.run({"input": x[None]})["logits"] for x in xe])
        pred = logits.argmax(1)
        lay = backend.layer_info(r)
        results[name] = {"top1": float((pred == ye).mean()), "agree": float((pred == ref_pred).mean()),
                         **smooth_agreement(logits, ref_logits),
                         "compile_s": round(built[name]["compile_s"], 1),
                         "compute_layers": lay["compute_layers_by_precision"],
                         "inference_precision": lay["compiled_properties"].get("inference_precision_hint")}
        r.close()
    # Latency: interleaved rounds per thread count.
    feeds = {"input": xe[:1]}
    for threads in args.threads:
        runners = {"ort-fp32": OrtRunner(MODEL, threads)}
        for name in order[1:]:
            if name in built:
                runners[name] = backend.load(built[name]["dir"], built[name]["manifest"], threads=threads)
        for r in runners.values():
            for _ in range(10):
                r.time_once(feeds)
        print(f"timing {len(runners)} variants at {threads} thread(s), {args.runs} rounds", flush=True)
        times = {k: [] for k in runners}
        # A fresh random order every round: runtimes keep worker threads spinning for a moment after
        # each call, which slows whichever model runs next, so a fixed order would favour some variants.
        rng = np.random.default_rng(0)
        names = list(runners)
        for _ in range(args.runs):
            for i in rng.permutation(len(names)):
                times[names[i]].append(runners[names[i]].time_once(feeds) * 1e3)
        for k, v in times.items():
            results[k][f"median_ms_{threads}t"] = round(float(np.median(v)), 3)
            results[k][f"p90_ms_{threads}t"] = round(float(np.percentile(v, 90)), 3)
            # Ratios per round, then the median: robust to load that other jobs put on the machine.
            if "nncf-default" in times:
                results[k][f"vs_nncf_{threads}t"] = round(float(np.median(np.array(v) / np.array(times["nncf-default"]))), 3)
            results[k][f"speedup_vs_ort_{threads}t"] = round(float(np.median(np.array(times["ort-fp32"]) / np.array(v))), 3)

    print()
    th_cols = args.threads
    print(f"{'variant':20s} {'top1':>6s} {'agree':>6s} {'E[agr]':>6s} {'nmse':>8s} " + " ".join(f"{'ms@' + str(t) + 't':>8s}" for t in th_cols)
          + " " + " ".join(f"{'vsNNCF@' + str(t):>9s}" for t in th_cols)
          + " " + " ".join(f"{'xORT@' + str(t):>7s}" for t in th_cols) + "  compile_s  compute layers")
    for k in order:
        if k not in results:
            continue
        r = results[k]
        print(f"{k:20s} {r['top1'] * 100:5.1f}% {r['agree'] * 100:5.1f}% {r['est_agree'] * 100:5.2f}% {r['nmse']:8.2e} "
              + " ".join(f"{r[f'median_ms_{t}t']:8.2f}" for t in th_cols) + " "
              + " ".join(f"{r.get(f'vs_nncf_{t}t', float('nan')):8.2f}x" for t in th_cols) + " "
              + " ".join(f"{r[f'speedup_vs_ort_{t}t']:6.2f}x" for t in th_cols)
              + f"  {r.get('compile_s', '-'):>9}  {r.get('compute_layers', '')}")
    print("top1: against labels; agree: top-1 agreement with onnxruntime FP32; E[agr]: expected agreement "
          "(smooth_agreement); nmse: logit NMSE vs FP32; ms: median latency, batch 1; "
          "vsNNCF: latency / nncf-default latency (<1 = faster); xORT: speed-up over onnxruntime FP32 "
          "(both medians of per-round ratios)")
    print_target(results, args.threads)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
