"""Optimizer benchmark: edgec vs onnxslim vs onnxsim on every model in ../shared/models.

For each model it prints node counts (original, edgec, onnxslim, onnxsim), edgec's equivalence
(max abs error vs output scale, seeded random inputs) and a latency ratio measured in one run,
1 thread, interleaved: onnxruntime at ORT_ENABLE_BASIC on the original model divided by
onnxruntime with all graph optimizations disabled (ORT_DISABLE_ALL) on the edgec-optimized
model. A ratio >= 1 means edgec's graph alone is at least as fast as ORT's basic rewrites.
Rows named `<model>+bn` are the same model re-written as an unfolded export (a BatchNormalization
after every Conv, weights compensated so the function is unchanged), to exercise the folding
passes on real weights.

    python benchmarks/bench_optimizer.py [--models DIR] [--rounds 200] [--json out.json]
"""
from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from edgec.core.optimizer import optimize

HERE = Path(__file__).resolve()
DEFAULT_MODELS = HERE.parents[1].parent / "shared" / "models"


def _session(model: onnx.ModelProto, level) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _feed(sess: ort.InferenceSession, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    types = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(double)": np.float64}
    return {i.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in i.shape])
            .astype(types.get(i.type, np.float32)) for i in sess.get_inputs()}


def latency_ratio(original: onnx.ModelProto, optimized: onnx.ModelProto, rounds: int) -> dict:
    """Median latency of (original, ORT basic) / (optimized, ORT disable-all), interleaved."""
    base = _session(original, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
    ours = _session(optimized, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    feed = _feed(base)
    feed_ours = {k: v for k, v in feed.items() if k in {i.name for i in ours.get_inputs()}}
    for _ in range(5):  # warm-up: allocations, caches
        base.run(None, feed)
        ours.run(None, feed_ours)
    t_base, t_ours = [], []
    for r in range(rounds):
        order = ((base, feed, t_base), (ours, feed_ours, t_ours))
        for sess, f, acc in (order if r % 2 == 0 else order[::-1]):
            t0 = time.perf_counter()
            sess.run(None, f)
            acc.append(time.perf_counter() - t0)
    mb, mo = statistics.median(t_base), statistics.median(t_ours)
    # Per-round paired ratios are robust to load from other jobs drifting over the run.
    paired = statistics.median(b / o for b, o in zip(t_base, t_ours))
    return {"basic_original_ms": mb * 1e3, "disable_all_edgec_ms": mo * 1e3,
            "ratio": mb / mo, "paired_ratio": paired}


def unfold_batchnorm(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """The same function written as an unfolded export: every Conv gets a BatchNormalization
    with random statistics, and its weights are divided through so the output is unchanged.
    This is what torch.onnx.export(..., do_constant_folding=False) style models look like."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {i.name: i for i in m.graph.initializer}
    nodes = []
    for node in m.graph.node:
        nodes.append(node)
        if node.op_type != "Conv" or len(node.input) < 3 or node.input[2] not in inits:
            continue
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        b = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
        c = w.shape[0]
        gamma, var = rng.uniform(0.5, 2.0, c), rng.uniform(0.5, 2.0, c)
        beta, mean = rng.normal(0, 0.1, c), rng.normal(0, 0.1, c)
        scale = gamma / np.sqrt(var + 1e-5)
        shift = beta - mean * scale
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(
            (w / scale.reshape((c,) + (1,) * (w.ndim - 1))).astype(np.float32), node.input[1]))
        inits[node.input[2]].CopyFrom(numpy_helper.from_array(
            ((b - shift) / scale).astype(np.float32), node.input[2]))
        names = [f"{node.name or node.output[0]}_bn_{k}" for k in ("g", "b", "m", "v")]
        for name, arr in zip(names, (gamma, beta, mean, var)):
            m.graph.initializer.append(numpy_helper.from_array(arr.astype(np.float32), name))
        out = node.output[0]
        node.output[0] = out + "_prebn"
        nodes.append(helper.make_node("BatchNormalization", [node.output[0], *names], [out],
                                      name=f"{node.name}_bn", epsilon=1e-5))
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return m


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


def _copy(m: onnx.ModelProto) -> onnx.ModelProto:
    c = onnx.ModelProto()
    c.CopyFrom(m)  # onnxslim/onnxsim may edit their argument
    return c


def bench_model(name: str, original: onnx.ModelProto, rounds: int) -> dict:
    import onnxsim
    import onnxslim

    t0 = time.perf_counter()
    res = optimize(_copy(original))
    t_edgec = time.perf_counter() - t0
    t0 = time.perf_counter()
    slim = _quiet(onnxslim.slim, _copy(original))
    t_slim = time.perf_counter() - t0
    t0 = time.perf_counter()
    sim, ok = _quiet(onnxsim.simplify, _copy(original))
    t_sim = time.perf_counter() - t0
    eq = res.report["equivalence"]
    row = {
        "model": name,
        "nodes_original": len(original.graph.node),
        "nodes_edgec": len(res.model.graph.node),
        "nodes_onnxslim": len(slim.graph.node),
        "nodes_onnxsim": len(sim.graph.node) if ok else None,
        "seconds_edgec": t_edgec, "seconds_onnxslim": t_slim, "seconds_onnxsim": t_sim,
        "max_abs_err": eq["max_abs_err"], "output_scale": eq["output_scale"],
        "equivalent": eq["ok"], "rel_err": eq["max_abs_err"] / max(eq["output_scale"], 1e-12),
        "fusions": len(res.report["fusions"]),
        "rolled_back": [p["name"] for p in res.report["passes"] if p["rolled_back"]],
    }
    row.update(latency_ratio(original, res.model, rounds))
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=Path, default=DEFAULT_MODELS)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--json", type=Path, help="also write the rows here")
    ap.add_argument("--no-unfolded", action="store_true",
                    help="skip the '+bn' rows (each model re-written with unfolded BatchNorms)")
    args = ap.parse_args(argv)
    paths = sorted(args.models.glob("*.onnx"))
    if not paths:
        print(f"no .onnx files in {args.models}", file=sys.stderr)
        return 2
    rows = []
    head = (f"{'model':<25} {'nodes':>5} {'edgec':>5} {'slim':>5} {'sim':>5}  {'rel.err':>8} "
            f"{'eq':>3}  {'basic(orig) ms':>14} {'off(edgec) ms':>13} {'ratio':>6} {'paired':>6}"
            f"  {'t edgec/slim/sim s':>18}")
    print(head)
    cases = [(p.stem, onnx.load(p)) for p in paths]
    if not args.no_unfolded:
        cases += [(f"{name}+bn", unfold_batchnorm(m)) for name, m in list(cases)]
    for name, model in cases:
        r = bench_model(name, model, args.rounds)
        rows.append(r)
        print(f"{r['model']:<25} {r['nodes_original']:>5} {r['nodes_edgec']:>5} "
              f"{r['nodes_onnxslim']:>5} {str(r['nodes_onnxsim']):>5}  {r['rel_err']:>8.1e} "
              f"{'ok' if r['equivalent'] else 'NO':>3}  {r['basic_original_ms']:>14.2f} "
              f"{r['disable_all_edgec_ms']:>13.2f} {r['ratio']:>6.3f} {r['paired_ratio']:>6.3f}"
              f"  {r['seconds_edgec']:.2f}/{r['seconds_onnxslim']:.2f}/{r['seconds_onnxsim']:.2f}",
              flush=True)
    print("ratio = median latency ORT_ENABLE_BASIC(original) / ORT_DISABLE_ALL(edgec-optimized), "
          f"1 thread, {args.rounds} interleaved rounds; paired = median of per-round ratios")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    bad = [r["model"] for r in rows if not r["equivalent"]
           or r["nodes_edgec"] > min(n for n in (r["nodes_onnxslim"], r["nodes_onnxsim"]) if n)]
    if bad:
        print(f"TARGET MISSED for: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
