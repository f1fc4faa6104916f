"""Quantization benchmark: edgec's INT8 against FP32 and ONNX Runtime's own quantize_static.

Calibrates on imagenet_calib500[:200], uses calib500[200:500] (labelled) as the validation split of
the repair rows (max_drop 0.5 top-1 points, min_agreement 99 %, both), and measures on
imagenet_eval500 (never the images it calibrated or repaired on). Prints, per model: top-1, drop,
agreement with FP32, logit NMSE, calibration+quantization time, INT8 speedup over FP32 (1 thread,
interleaved, median of 3 rounds), and for the repair rows the tensors/layers returned to float and
the validation estimates they were chosen on. `--curve` adds eval500 agreement vs speedup for the
top-k ranked tensors in float. Fashion-MNIST: calibrates on 200 training images, measures on the
10,000 test images.

    python benchmarks/bench_quantization.py                 # everything (~25 min on 2 shared cores)
    python benchmarks/bench_quantization.py --models squeezenet1_1 --no-ort --curve prefix,ranked
"""
from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from edgec.core.data import ArrayDataset, Dataset
from edgec.core.quantization import DEFAULT_METHOD, format_placement, quantize

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PREPROCESS = {"efficientnet_lite0": "efficientnet-lite", "squeezenet1_1": "squeezenet-bgr"}


def imagenet(split: str, model: str, start: int = 0, stop: int | None = None) -> Dataset:
    """imagenet_<split>[start:stop] decoded and preprocessed for `model` by edgec's own data loader."""
    from edgec.core.backend import TensorSpec
    from edgec.core.data import open_dataset

    path = SHARED / "data" / f"imagenet_{split}_jpeg.npz"
    m = onnx.load(SHARED / "models" / f"{model}.onnx", load_external_data=False)
    specs = [TensorSpec(i.name, "float32", tuple(d.dim_value for d in i.type.tensor_type.shape.dim))
             for i in m.graph.input]
    ds = open_dataset(path, specs, preprocess=PREPROCESS[model])
    return _Slice(ds, start, len(ds) if stop is None else stop)


class _Slice(Dataset):
    def __init__(self, base, start, stop):
        self.base, self.start, self.stop, self.source = base, start, stop, f"{base.source}[{start}:{stop}]"

    def __len__(self):
        return self.stop - self.start

    @property
    def has_labels(self):
        return self.base.has_labels

    def __iter__(self):
        for i, s in enumerate(self.base):
            if i >= self.stop:
                return
            if i >= self.start:
                yield s


def _idx(path: Path) -> np.ndarray:
    raw = gzip.open(path).read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_mnist_calib(n: int = 200) -> tuple[Dataset, str]:
    """Training images when Debian's dataset-fashion-mnist is installed (never calibrate on the test set)."""
    train = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
    if train.exists():
        x = _idx(train)[:n]
        src = "fashion-mnist train[:%d]" % n
    else:
        x = np.load(SHARED / "data" / "fashion_mnist_test.npz")["images"][-n:]
        src = "fashion_mnist_test[-%d:] (train set not installed)" % n
    return ArrayDataset({"input": (x[:, None].astype(np.float32) / 255.0)}, source=src), src


def fashion_mnist_test(input_name: str = "input") -> tuple[np.ndarray, np.ndarray]:
    z = np.load(SHARED / "data" / "fashion_mnist_test.npz")
    return z["images"][:, None].astype(np.float32) / 255.0, z["labels"].astype(np.int64)




def session(model, threads=None):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def predict(model, X, batch_ok=False):
    s = session(model)
    name = s.get_inputs()[0].name
    if batch_ok:
        return np.concatenate([s.run(None, {name: X[i:i + 1000]})[0] for i in range(0, len(X), 1000)])
    return np.concatenate([s.run(None, {name: X[i:i + 1]})[0] for i in range(len(X))])


def speedup(fp32, int8, x, runs=30, rounds=3):
    """FP32 median latency / INT8 median latency, 1 thread, the two interleaved; median over rounds
    (the machine is shared, so one round can be skewed by a neighbour's job)."""
    a, b = session(fp32, 1), session(int8, 1)
    name = a.get_inputs()[0].name
    for _ in range(3):
        a.run(None, {name: x}), b.run(None, {name: x})
    ratios = []
    for _ in range(rounds):
        ta, tb = [], []
        for _ in range(runs):
            t0 = time.perf_counter(); a.run(None, {name: x}); ta.append(time.perf_counter() - t0)
            t0 = time.perf_counter(); b.run(None, {name: x}); tb.append(time.perf_counter() - t0)
        ratios.append(float(np.median(ta) / np.median(tb)))
    return float(np.median(ratios))


def ort_reference(model_path, calib):
    """ONNX Runtime's quantize_static: QDQ, per-channel, MinMax, u8 activations / s8 weights."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            s = next(self.it, None)
            return None if s is None else s.feeds

    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "q.onnx"
        quantize_static(str(model_path), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return onnx.load(out)


def row(tag, out, ref_pred, Y, seconds=None, spd=None, ref_logits=None):
    """`ref_logits`: also print the logit NMSE vs FP32, the continuous error that agreement samples
    (on SqueezeNet 1.1, 12 % of eval500 images have a top-2 logit gap under 0.05 std, so a few
    images flip at any error level and agreement moves +-1 point between equivalent models)."""
    p = out.argmax(1)
    top1 = 100 * float((p == Y).mean())
    ref_top1 = 100 * float((ref_pred == Y).mean())
    agree = 100 * float((p == ref_pred).mean())
    extra = (f"  time {seconds:5.1f}s" if seconds is not None else "") + (f"  speedup x{spd:.2f}" if spd else "")
    if ref_logits is not None:
        extra += f"  logit NMSE {float(((out - ref_logits) ** 2).mean() / (ref_logits ** 2).mean()):.1e}"
    print(f"  {tag:<34} top-1 {top1:5.1f}  drop {ref_top1 - top1:+5.1f}  agreement {agree:5.1f}%{extra}", flush=True)
    return {"top1": top1, "drop": ref_top1 - top1, "agreement": agree}


def imagenet_model(name, args):
    path = SHARED / "models" / f"{name}.onnx"
    model = onnx.load(path)
    ev = list(imagenet("eval500", name))
    X = np.concatenate([s.feeds["input"] for s in ev])
    Y = np.array([s.label for s in ev])
    calib = imagenet("calib500", name, 0, args.calib_samples)
    val = imagenet("calib500", name, args.calib_samples, 500)
    ref_logits = predict(model, X)
    ref = ref_logits.argmax(1)
    print(f"\n{name}: FP32 top-1 {100 * (ref == Y).mean():.1f} on imagenet_eval500 ({len(Y)} images); "
          f"calibration {len(calib)} images, max_drop validation {len(val)} images (calib500[{args.calib_samples}:])")
    if not args.no_ort:
        t0 = time.perf_counter()
        q = ort_reference(path, calib)
        dt = time.perf_counter() - t0
        row("onnxruntime quantize_static", predict(q, X), ref, Y, dt, speedup(model, q, X[:1]), ref_logits)
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        res = quantize(model, "int8", calibration=calib, method=args.method, cache_dir=Path(cache), progress=False)
        dt = time.perf_counter() - t0
    row(f"edgec int8 ({args.method})", predict(res.model, X), ref, Y, dt, speedup(model, res.model, X[:1]),
                ref_logits)
    print("    " + format_placement(res.report).replace("\n", "\n    "))
    t0 = time.perf_counter()
    wr = quantize(model, "int8", calibration=calib, method=args.method, cache_dir=Path(args.cache),
                  weight_rounding=True, progress=False)
    dt = time.perf_counter() - t0
    row("edgec int8 + weight_rounding", predict(wr.model, X), ref, Y, dt, speedup(model, wr.model, X[:1]), ref_logits)
    if args.no_repair:
        return
    ranked = None
    for tag, demand in (("max_drop=0.5 (top-1)", dict(max_drop=0.5)),
                        (f"min_agreement={args.min_agreement:g}", dict(min_agreement=args.min_agreement)),
                        (f"max_drop=0.5 + min_agreement={args.min_agreement:g}",
                         dict(max_drop=0.5, min_agreement=args.min_agreement))):
        t0 = time.perf_counter()
        r = quantize(model, "int8", calibration=calib, method=args.method, cache_dir=Path(args.cache),
                     validation=val, progress=False, **demand)
        dt = time.perf_counter() - t0
        row(f"edgec int8 {tag}", predict(r.model, X), ref, Y, dt, speedup(model, r.model, X[:1]), ref_logits)
        md = r.report["max_drop"]
        est = md["final_estimate"]
        print(f"    {len(md['float_tensors'])} activation tensor(s) float, {len(md['kept_fp32'])} layer(s) FP32 "
              f"({md['kept_weight_share'] * 100:.1f}% of weights); {'met' if md['met'] else 'NOT met'} on the "
              f"validation split: top-1 drop {md['final_drop']:.2f} (<= {est['drop_bound']:.2f}), agreement "
              f"{md['final_agreement']:.1f}% (estimate {est['est_agreement']:.1f}, >= {est['agreement_bound']:.1f}); "
              f"{len(md['steps'])} evaluations", flush=True)
        if "min_agreement" in tag and ranked is None:
            ranked = r.report.get("sensitivity") or []
    if args.curve:
        for order in args.curve.split(","):
            curve(model, wr.model, order, ranked, X, Y, ref, ref_logits, val)


def curve(model, q, order_name, ranked, X, Y, ref, ref_logits, val):
    """Agreement on eval500 against speed as the first k tensors of one order go float: `prefix` (graph
    order from the input), `suffix` (from the output) or `ranked` (leave-one-out gain on the validation
    split, as the min_agreement row ranked them)."""
    from edgec.core.quantization.float_tensors import float_tensors, quantized_activations
    from edgec.core.quantization.graph import ensure_node_names
    from edgec.core.quantization.repair import Evaluator, assess

    named = ensure_node_names(_copy(model))
    graph_order = list(dict.fromkeys(quantized_activations(q)))
    order = {"prefix": graph_order, "suffix": graph_order[::-1],
             "ranked": [r["tensor"] for r in ranked or []]}[order_name]
    order += [t for t in graph_order if t not in order]
    ev = Evaluator(named, val, progress=False)
    print(f"  curve ({order_name}): first k of {len(order)} activation tensors in float "
          "(validation agreement estimate, then eval500)")
    ks = sorted({k for k in (0, 1, 2, 4, 8, 12, 16, 24, 32, 48, 64, len(order)) if k <= len(order)})
    for k in ks:
        m, nodes = float_tensors(q, named, order[:k])
        est = assess(ev, ev.outputs(m))
        out = predict(m, X)
        row(f"k={k:3d} ({len(nodes):2d} FP32 layers) est {est['est_agreement']:5.1f}", out, ref, Y,
            spd=speedup(model, m, X[:1]), ref_logits=ref_logits)


def _copy(model):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    return m


def fashion(args):
    model = onnx.load(SHARED / "models" / "fashion_mnist_cnn.onnx")
    X, Y = fashion_mnist_test()
    calib, src = fashion_mnist_calib(args.calib_samples)
    ref = predict(model, X, batch_ok=True).argmax(1)
    print(f"\nfashion_mnist_cnn: FP32 accuracy {100 * (ref == Y).mean():.2f} on 10,000 test images; calibration {src}")
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        res = quantize(model, "int8", calibration=calib, method=args.method, cache_dir=Path(cache), progress=False)
        dt = time.perf_counter() - t0
    out = predict(res.model, X, batch_ok=True)
    p = out.argmax(1)
    print(f"  edgec int8 ({args.method}): accuracy {100 * (p == Y).mean():.2f} (drop "
          f"{100 * ((ref == Y).mean() - (p == Y).mean()):+.2f}), agreement {100 * (p == ref).mean():.2f}%, "
          f"time {dt:.1f}s, speedup x{speedup(model, res.model, X[:1]):.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="efficientnet_lite0,squeezenet1_1,fashion_mnist_cnn")
    ap.add_argument("--method", default=DEFAULT_METHOD)
    ap.add_argument("--calib-samples", type=int, default=200)
    ap.add_argument("--no-ort", action="store_true", help="skip onnxruntime's quantize_static reference")
    ap.add_argument("--no-repair", action="store_true", help="skip the max_drop / min_agreement rows")
    ap.add_argument("--min-agreement", type=float, default=99.0, help="agreement demand of the repair rows")
    ap.add_argument("--curve", default="", metavar="ORDERS",
                    help="also print eval500 agreement and speedup with the first k tensors of these orders in "
                         "float: prefix,suffix,ranked (comma-separated)")
    ap.add_argument("--cache", default=tempfile.mkdtemp(prefix="edgec-calib-"),
                    help="calibration cache for the max_drop runs (the timed plain run always starts cold)")
    args = ap.parse_args()
    if not (SHARED / "models").is_dir():
        sys.exit(f"needs the real models and data under {SHARED}")
    for name in args.models.split(","):
        if name == "fashion_mnist_cnn":
            fashion(args)
        else:
            imagenet_model(name, args)


if __name__ == "__main__":
    main()
