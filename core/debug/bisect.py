"""`edgec debug --bisect`: the fewest tensors (or layers) to keep in float so the model meets a demand,
each candidate compiled with `--float-tensors` (`--keep-fp32`) and measured on the backend's own runtime
(Polygraphy's `debug precision`, for every backend).

The candidate list is complete: the tensors ranked by their own added error (compare.tensor_ranking)
first, then every other tensor the quantizer quantized (the manifest's quantization.quantized_activations:
graph inputs, tensors whose exposed value was suspect or never exposed, Concat inputs), in graph order.
Its all-float end is the FP32 model, so the search reaches any demand FP32 itself meets; a list of only
the ranked tensors could not (SqueezeNet 1.1: 97.67 % agreement with all 29 ranked tensors in float).
Phase 1 finds the shortest prefix that meets the demand by doubling k and then bisecting between the
last miss and the first hit (about 2 log2(n) compiles); phase 2 (`shrink`) tries dropping each member of
that prefix, least ranked first, and keeps every drop that still meets the demand, so a tensor that only
came along with the prefix does not stay. Each candidate is a real `edgec.compile(float_tensors=...)`,
which is exactly what the printed flag line builds; its validation on the selection data (on the
backend's runtime, as every compile validates) is the measurement. Agreement on a few hundred images
moves by single images, so the result is measured again on held-out data (`holdout`) with its standard
error and a paired comparison against the plain INT8 artifact, and timed interleaved against it.
"""
from __future__ import annotations

import math
import shlex
import shutil
from pathlib import Path
from typing import Callable

import numpy as np


def meets(row: dict, min_agreement: float | None, max_drop: float | None) -> bool:
    """The demand on the row's conservative bound when the row has one (Judge), else on the observed value."""
    agree = row.get("agreement_bound", row.get("agreement"))
    drop = row.get("drop_bound", row.get("drop"))
    if min_agreement is not None and (agree is None or agree < min_agreement):
        return False
    if max_drop is not None and (drop is None or drop > max_drop):
        return False
    return True


class Judge:
    """A candidate's smooth agreement on the selection data, from its outputs on the backend's runtime.

    Counting flips on a few hundred images moves in steps of one image (0.33 points on 300), and a
    search that accepts the first candidate to touch the demand picks noise: on SqueezeNet 1.1 (ORT),
    a 7-tensor keep-set at 98.33 % observed on calib500[200:] measured 94.80 +- 0.99 % on eval500,
    below plain INT8 (96.20 +- 0.86 %). The core repair's estimator (quantization/repair.py: each
    image's probability that the FP32 winner is overtaken, from its logit gaps and the measured
    output error) predicts unseen agreement within about a point, and its bound (estimate - one
    standard error) is what the demand is judged on, as `--min-agreement` on compile does.

    `z` is how many standard errors the bound sits below the estimate. One (compile's repair) still
    let the search pick noise at the margin: the OpenVINO 98 % keep-set chosen at bound 98.25 (z=1)
    measured 97.80 +- 0.66 % on eval500. The default, 2, asks the one-SE bound to clear the target by
    one more SE of the selection's own estimate: the error a selection on 300 images carries into
    held-out data, which a search over many candidates meets at its most favourable."""

    def __init__(self, fp32_model, selection, threads: int | None = 1, z: float = 2.0):
        from edgec.core.quantization.repair import Evaluator

        self.evaluator = Evaluator(fp32_model, selection, progress=False)
        self.name = fp32_model.graph.output[0].name  # the output the evaluator scores
        self.threads = threads
        self.z = z

    def __call__(self, artifact_dir) -> dict:
        import edgec
        from edgec.core.quantization.repair import assess

        run = edgec.load(artifact_dir, threads=self.threads)
        try:
            outs = []
            for f in self.evaluator.feeds:
                o = np.asarray(run.run(f)[self.name])
                outs.append(o.reshape(o.shape[0], -1) if o.ndim else o.reshape(1, 1))
        finally:
            run.close()
        from edgec.core.quantization.repair import CONFIDENCE_Z

        a = assess(self.evaluator, np.concatenate(outs).astype(np.float32))
        a_se = (a["est_agreement"] - a["agreement_bound"]) / CONFIDENCE_Z
        d_se = (a["drop_bound"] - a["est_drop"]) / CONFIDENCE_Z
        return {"est_agreement": round(a["est_agreement"], 3), "agreement_se": round(a_se, 3),
                "agreement_bound": round(a["est_agreement"] - self.z * a_se, 3),
                "est_drop": round(a["est_drop"], 3), "drop_bound": round(a["est_drop"] + self.z * d_se, 3),
                "bound_z": self.z}


def _row(k: int, keep: list[str], manifest: dict) -> dict:
    v = manifest["validation"]
    agree = None if v.get("top1_agreement") is None else 100.0 * v["top1_agreement"]
    if v.get("top1_accuracy") is not None and v.get("reference_top1_accuracy") is not None:
        drop = 100.0 * (v["reference_top1_accuracy"] - v["top1_accuracy"])
    else:
        drop = None if agree is None else 100.0 - agree
    return {"k": k, "keep": keep, "agreement": agree, "drop": drop, "cosine": v.get("cosine"),
            "samples": v.get("samples"), "runtime": v.get("runtime")}


def search(ranking: list[str], probe: Callable[[int], dict], min_agreement: float | None,
           max_drop: float | None) -> tuple[int | None, list[dict]]:
    """The smallest prefix length k of `ranking` whose probe meets the demand (None if even all miss)."""
    tried: dict[int, dict] = {}

    def ok(k: int) -> bool:
        if k not in tried:
            tried[k] = probe(k)
        return meets(tried[k], min_agreement, max_drop)

    n = len(ranking)
    if ok(0):
        return 0, [tried[0]]
    lo, hi = 0, None
    k = 1
    while k <= n:
        if ok(k):
            hi = k
            break
        lo = k
        k = min(n, k * 2) if k < n else n + 1
    if hi is None:
        return None, [tried[i] for i in sorted(tried)]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi, [tried[i] for i in sorted(tried)]


UNITS = {"tensors": ("float_tensors", "--float-tensors"), "layers": ("keep_fp32", "--keep-fp32")}


def universe(manifest: dict, unit: str, layers: list[dict] | None = None) -> list[str]:
    """Everything the unit can keep in float, in graph order: the quantized activations the quantizer
    recorded (tensors), or the weighted layers that run int8 (layers). An artifact from before the
    record falls back to every tensor the runtime exposed after a Q/DQ, suspect ones included."""
    q = manifest.get("quantization") or {}
    if unit == "layers":
        from edgec.core.quantization.graph import WEIGHTED_OPS

        nodes = (q.get("placement") or {}).get("nodes") or {}
        ops = {e.get("layer") for e in layers or [] if e.get("layer")}
        weighted = [n for n, p in nodes.items() if p == "int8" and (n in ops or not layers)]
        return weighted or sorted(ops)
    if q.get("quantized_activations"):
        return list(q["quantized_activations"]) + [t for t in q.get("float_tensors") or []
                                                   if t not in q["quantized_activations"]]
    return [e["tensor"] for e in layers or [] if "quantizelinear" in str(e.get("runtime_tensor")).lower()]


def candidates(ranking: list[str], everything: list[str]) -> list[str]:
    """The ranked names first (those the unit can keep), then every other one of `everything`."""
    allowed = set(everything)
    ranked = [t for t in dict.fromkeys(ranking) if not everything or t in allowed]
    seen = set(ranked)
    return ranked + [t for t in everything if t not in seen]


def shrink(keep: list[str], probe: Callable[[list[str]], dict], min_agreement: float | None,
           max_drop: float | None, budget: int) -> tuple[list[str], list[dict]]:
    """Greedy backward elimination: drop each member of `keep`, last (least ranked) first, and keep the
    drop when the smaller set still meets the demand; at most `budget` probes that compiled (a probe
    whose closed set was compiled before comes back marked `reused` and is free)."""
    keep = list(keep)
    rows: list[dict] = []
    for t in reversed(list(keep)):
        if sum(not r.get("reused") for r in rows) >= budget or len(keep) <= 1:
            break
        trial = [x for x in keep if x != t]
        row = probe(trial)
        row["dropped"] = t
        rows.append(row)
        if meets(row, min_agreement, max_drop):
            keep = trial
    return keep, rows


def flag_line(model: str, backend: str, precision: str, keep: list[str], extra: list[str], unit: str = "tensors") -> str:
    parts = ["edgec", "compile", model, "--backend", backend, "--precision", precision] + extra
    if keep:
        parts += [UNITS[unit][1], ",".join(keep)]
    return " ".join(shlex.quote(p) for p in parts)


def bisect(model, backend: str, precision: str, ranking: list[str], *, calibration, selection, workdir: Path,
           min_agreement: float | None = None, max_drop: float | None = None, compile_kwargs: dict | None = None,
           say: Callable[[str], None] = lambda s: None, base: tuple | None = None, unit: str = "tensors",
           everything: list[str] | None = None, shrink_budget: int = 0, judge: Callable | None = None,
           cost=None, order: str = "error", own_error: dict[str, float] | None = None) -> dict:
    """Search the keep-set over candidates(ranking, everything); every candidate artifact goes to
    workdir/keep-K (prefixes) or workdir/try-N (shrink trials); only the chosen one stays on disk.

    With `cost` (a cost.CostModel, tensors only) each candidate is closed over the tensors it strands
    (cost.close: a Q/DQ pair no int8 layer reads or writes is latency and rounding for nothing), a row
    says how much int8 work is left (cost.int8_macs), and `order="cost"` ranks by own error per int8
    MAC a tensor would cost (cost.order_by_cost) instead of by own error alone."""
    import edgec
    from edgec.core.errors import ValidationFailed

    kwargs = dict(compile_kwargs or {})
    kwargs.setdefault("min_cosine", -1.0)  # a candidate is judged on the demand, not on the cosine gate
    workdir = Path(workdir)
    if cost is not None and order == "cost":
        ranking = cost.order_by_cost([t for t in dict.fromkeys(ranking) if not everything or t in set(everything)],
                                     own_error or {})
    cands = candidates(ranking, everything or [])
    n_ranked = len(set(cands) & set(ranking))
    trials = [0]
    seen: dict[tuple, dict] = {}  # closed keep-set -> its row: closing makes different members compile the same

    def compile_row(members: list[str], dest: Path, k: int) -> dict:
        keep = cost.close(members) if cost is not None else list(members)
        key = tuple(sorted(keep))
        if key in seen:
            row = dict(seen[key], k=k, members=list(members), reused=True)
            say(f"bisect: {len(members)} chosen close to the same {len(keep)} {unit} as before: not recompiled")
            return row
        say(f"bisect: compiling with {len(keep)} {unit} kept in float"
            + (f" ({len(members)} chosen + {len(keep) - len(members)} stranded)" if len(keep) != len(members) else ""))
        try:
            art = edgec.compile(model, backend=backend, precision=precision, calibration=calibration,
                                validation=selection, output=dest, force=True,
                                **{UNITS[unit][0]: keep or None}, **kwargs)
            manifest = art.manifest
        except ValidationFailed as e:
            manifest = e.manifest
        row = _row(k, keep, manifest)
        row["members"] = list(members)
        row["artifact"] = str(dest)
        if cost is not None:
            row.update(cost.int8_macs(keep))
        if judge is not None:
            row.update(judge(dest))
        say(f"bisect: {len(keep)} kept, agreement {row['agreement']:.2f} %" if row["agreement"] is not None
            else f"bisect: {len(keep)} kept")
        seen[key] = row
        return row

    def probe(k: int) -> dict:
        if k == 0 and base is not None:  # (artifact dir, manifest) compiled already, validated on `selection`
            row = _row(0, [], base[1])
            row["artifact"], row["members"] = str(base[0]), []
            if cost is not None:
                row.update(cost.int8_macs([]))
            if judge is not None:
                row.update(judge(base[0]))
            return row
        row = compile_row(cands[:k], workdir / f"keep-{k}", k)
        row["phase"] = "prefix"
        return row

    def probe_set(keep: list[str]) -> dict:
        trials[0] += 1
        row = compile_row(keep, workdir / f"try-{trials[0]}", len(keep))
        row["phase"] = "shrink"
        return row

    k, steps = search(cands, probe, min_agreement, max_drop)
    chosen = next((s for s in steps if s["k"] == k), None)
    if chosen is not None and k and shrink_budget > 0:
        members, rows = shrink(chosen.get("members", chosen["keep"]), probe_set, min_agreement, max_drop,
                               shrink_budget)
        steps += rows
        met_rows = [r for r in rows if meets(r, min_agreement, max_drop)]
        if met_rows:  # shrink keeps a drop only when it meets the demand: the last such trial is the result
            chosen = met_rows[-1]
    for s in steps:  # only the base and the chosen artifacts are worth keeping on disk
        if s["k"] != 0 and s["artifact"] != (chosen or {}).get("artifact") and Path(s["artifact"]).parent == workdir:
            shutil.rmtree(s["artifact"], ignore_errors=True)
    demand = {"min_agreement": min_agreement, "max_drop": max_drop}
    return {"demand": {k_: v for k_, v in demand.items() if v is not None}, "met": chosen is not None, "unit": unit,
            "judged_on": "agreement_bound" if judge is not None else "observed agreement",
            "keep": chosen["keep"] if chosen else cands, "k": len(chosen["keep"]) if chosen else None,
            "members": chosen.get("members") if chosen else None, "order": order if cost is not None else "error",
            "closed": cost is not None,
            "cost": {key: chosen[key] for key in ("int8_layers", "int8_layers_base", "int8_macs_fraction")
                     if chosen and key in chosen} or None,
            "prefix_k": k, "candidates": len(cands), "ranked": n_ranked, "steps": steps,
            "selection": {"data": getattr(selection, "source", ""), "samples": len(selection)},
            "base_artifact": steps[0]["artifact"], "artifact": chosen["artifact"] if chosen else None}


def agreement_per_image(artifacts: dict[str, str], reference_model, data, threads: int = 1) -> dict[str, np.ndarray]:
    """{name: bool per image, top-1 of the artifact == top-1 of FP32} on `data`, one reference pass."""
    import edgec
    from edgec.core import progress
    from edgec.core.validate import ReferenceRunner

    ref = ReferenceRunner(reference_model, threads=threads)
    runners = {n: edgec.load(p, threads=threads) for n, p in artifacts.items()}
    agree: dict[str, list[bool]] = {n: [] for n in runners}
    labels_ok: dict[str, list[bool]] = {n: [] for n in runners}
    ref_ok: list[bool] = []
    try:
        out = ref.output_names[0]
        for s in progress.bar(data, total=len(data), desc="held-out", unit="sample"):
            r = np.asarray(ref.run(s.feeds)[out]).reshape(-1)
            if s.label is not None:
                ref_ok.append(int(r.argmax()) == int(s.label))
            for n, run in runners.items():
                a = np.asarray(run.run(s.feeds)[out]).reshape(-1)
                agree[n].append(int(a.argmax()) == int(r.argmax()))
                if s.label is not None:
                    labels_ok[n].append(int(a.argmax()) == int(s.label))
    finally:
        for run in runners.values():
            run.close()
    res = {n: np.array(v) for n, v in agree.items()}
    res.update({f"{n}:top1": np.array(v) for n, v in labels_ok.items() if v})
    if ref_ok:
        res["reference:top1"] = np.array(ref_ok)
    return res


def mean_se(x: np.ndarray) -> tuple[float, float]:
    n = len(x)
    p = float(np.mean(x)) if n else float("nan")
    return 100.0 * p, 100.0 * math.sqrt(max(p * (1 - p), 0.0) / max(n - 1, 1))


def paired(a: np.ndarray, b: np.ndarray) -> dict:
    """b - a in points, its standard error, and the discordant counts (McNemar's exact two-sided p)."""
    d = b.astype(float) - a.astype(float)
    n = len(d)
    se = 100.0 * float(np.std(d, ddof=1)) / math.sqrt(n) if n > 1 else float("nan")
    gained, lost = int(((d > 0)).sum()), int(((d < 0)).sum())
    from math import comb
    m = gained + lost
    p = 1.0 if m == 0 else min(1.0, 2 * sum(comb(m, i) for i in range(min(gained, lost) + 1)) / 2 ** m)
    return {"diff_points": round(100.0 * float(d.mean()), 3), "se_points": round(se, 3), "gained": gained,
            "lost": lost, "mcnemar_p": round(p, 4)}


def latency_ratio(base: str, keep: str, threads: int = 1, runs: int = 200, feeds=None, fp32: str | None = None,
                  cost: dict | None = None) -> dict:
    """Median latency of the keep-set artifact over the plain INT8 one, and with `fp32` (an FP32 artifact
    of the same backend) of FP32 over INT8, all three in one `edgec benchmark INT8 KEEP FP32` (the one
    interleaved round-robin loop, seeded inputs, a block CI on each ratio), without its memory runs;
    then the advice: a keep-set that is not faster than FP32 is not worth building (`advice`).
    `feeds` is accepted for callers that pass a sample; the benchmark's seeded inputs time the same."""
    import edgec

    paths = [base, keep] + ([fp32] if fp32 else [])
    rep = edgec.benchmark(paths, threads=threads, iterations=runs, warmup=10, measure_memory=False)
    rows = rep.artifacts
    err = next((r.get("error") for r in rows if r.get("error")), None)
    if err:
        return {"error": err}
    b, k = rows[0], rows[1]
    vs = k.get("vs_first") or {}
    out = {"threads": threads, "runs": runs, "int8_median_ms": round(b["latency_ms"]["median"], 3),
           "keep_median_ms": round(k["latency_ms"]["median"], 3), "ratio": round(vs["latency_ratio"], 3),
           "ratio_ci95": [round(x, 3) for x in vs.get("latency_ratio_ci95") or []],
           "load_average": rep.settings.get("host", {}).get("load_average"),
           "how": "edgec.benchmark([int8, keep" + (", fp32" if fp32 else "") + "], threads, iterations): "
                  "interleaved, as `edgec benchmark` times"}
    if fp32:
        f = rows[2]
        fvs = f.get("vs_first") or {}
        out.update(fp32_median_ms=round(f["latency_ms"]["median"], 3), fp32_ratio=round(fvs["latency_ratio"], 3),
                   fp32_ratio_ci95=[round(x, 3) for x in fvs.get("latency_ratio_ci95") or []],
                   keep_vs_fp32=round(vs["latency_ratio"] / fvs["latency_ratio"], 3))
    out.update(advise(out, cost))
    return out


def advise(lat: dict, cost: dict | None = None) -> dict:
    """The verdict on a keep-set's latency: faster than FP32 only when the keep-set's interval (over INT8)
    lies wholly below FP32's, else 'use FP32': as fast or faster, and no quantization error at all."""
    no_int8 = bool(cost) and cost.get("int8_layers") == 0
    if "fp32_ratio" not in lat:
        if no_int8:
            return {"faster_than_fp32": False, "advice": "use FP32: the keep-set leaves no layer int8"}
        return {}
    kci, fci = lat.get("ratio_ci95") or [lat["ratio"]] * 2, lat.get("fp32_ratio_ci95") or [lat["fp32_ratio"]] * 2
    faster = (not no_int8) and kci[1] < fci[0]
    why = "it leaves no layer int8 (the FP32 model plus whatever Q/DQ is left)" if no_int8 else (
        f"keep-set / FP32 = {lat['keep_vs_fp32']:.2f}" + ("" if lat["keep_vs_fp32"] >= 1 else ", within the noise"))
    if faster:
        return {"faster_than_fp32": True,
                "advice": f"the keep-set runs at {lat['keep_vs_fp32']:.2f}x FP32's latency: build it"}
    return {"faster_than_fp32": False,
            "advice": f"use FP32 (--precision fp32): the keep-set is not faster than FP32 ({why}), and FP32 "
                      "has no quantization error to keep out"}


def latency_line(lat: dict) -> str:
    """INT8, keep-set and (when timed) FP32 medians and ratios over INT8, from one interleaved benchmark."""
    def ci(key):
        v = lat.get(key)
        return f" [{v[0]:.3f}, {v[1]:.3f}]" if v else ""
    s = f"INT8 {lat['int8_median_ms']} ms; keep-set {lat['keep_median_ms']} ms = {lat['ratio']:.3f}x INT8{ci('ratio_ci95')}"
    if "fp32_ratio" in lat:
        s += (f"; FP32 {lat['fp32_median_ms']} ms = {lat['fp32_ratio']:.3f}x INT8{ci('fp32_ratio_ci95')}; "
              f"keep-set / FP32 = {lat['keep_vs_fp32']:.3f}")
    load = lat.get("load_average")
    return s + (f" (medians of {lat['runs']} interleaved runs each, {lat['threads']} thread, edgec benchmark's loop"
                + (f", load {load[0]:.2f}" if load else "") + ")")
