"""`--max-drop` with `--ecq`: bisect the one rate-distortion slope lambda, not per-layer rungs.

ECQ already allocates bits across layers at an equal slope (ecq.py), so the per-layer ladder search
of pipeline._select would only undo that allocation. What is left to choose is the slope itself:
the largest lambda (the smallest model) whose compressed model still meets the budget on the
validation data, judged on the same conservative smooth bound as every other --max-drop search
(quantization/repair.assess). Size falls and drop rises with lambda, so a bisection on log10 lambda
finds it in a handful of probes; every probe is a full ECQ pass plus bias correction, i.e. exactly
the model that is returned, not an estimate of it.
"""
from __future__ import annotations

import math

from edgec.core.errors import InputError

from .entropy import size_report
from .layers import correct_bias, find_layers, write_back

DECADES = 3.0   # search lambda in [amount / 10**DECADES, amount]
PROBES = 6      # bisection steps after the first probe: lambda to within 10**(DECADES / 2**6) = 1.11x


def search(base, step, names: set[str], ctx, validation, budget: float, say, technique,
           bias_correction: bool = True):
    """(model, layers, report) for the largest slope <= step.amount meeting `budget`.

    `technique` is pipeline.run_ecq (passed in: pipeline imports this module). The report has the
    shape of pipeline._select's: amounts (per-layer slopes, all equal), budget, metric, tau (here
    the slope), met, trials, bias_corrected (layers whose bias the probe corrected)."""
    from edgec.core.quantization.repair import Evaluator, assess

    if validation is None:
        raise InputError("--max-drop needs validation data to measure the drop; pass --val DATA "
                         "(labelled data gives top-1, unlabelled gives agreement with FP32)")
    if not step.amount > 0:
        raise InputError(f"--ecq {step.amount}: the rate-distortion slope is a positive number, e.g. 3e-9")
    originals = {ly.name: ly for ly in find_layers(base)}
    evaluator = Evaluator(base, validation, progress=False)
    trials: list[dict] = []
    built: dict[float, tuple] = {}

    def probe(lam: float):
        layers = find_layers(base)
        technique([ly for ly in layers if ly.name in names], step, ctx, {n: lam for n in names})
        model = write_back(base, layers)
        corrected = 0
        if bias_correction and ctx.calibration is not None:
            ctx.hessians([ly for ly in layers if ly.done])
            corrected = correct_bias(model, layers, originals, ctx.means)
        row = assess(evaluator, evaluator.outputs(model))
        size = size_report(model, layers=False)["ans_bytes"]
        ok = row["drop_bound"] <= budget
        trials.append({"lambda": float(f"{lam:.4g}"), "drop": round(row["drop"], 3),
                       "drop_bound": round(row["drop_bound"], 3), "ans_bytes": size, "met": ok})
        say(f"max-drop search: ecq lambda {lam:.3g} -> drop {row['drop']:.2f} "
            f"(bound {row['drop_bound']:.2f}), {size / 1e6:.2f} MB")
        built[lam] = (model, layers, corrected)
        return ok

    hi = math.log10(step.amount)
    lo = hi - DECADES
    best = None
    if probe(10 ** hi):
        best = 10 ** hi
    else:
        for _ in range(PROBES):
            mid = (lo + hi) / 2
            if probe(10 ** mid):
                best, lo = 10 ** mid, mid
            else:
                hi = mid
                built.pop(10 ** mid)  # keep only what may be returned (models are MBs each)
    met = best is not None
    if best is None:  # even the gentlest slope misses: return it, and say so
        best = 10 ** lo
        if best not in built:
            probe(best)
    model, layers, corrected = built[best]
    return model, layers, {"bias_corrected": corrected, "amounts": [{n: best for n in names}], "budget": budget, "metric": evaluator.metric,
                           "samples": len(evaluator.feeds), "tau": float(f"{best:.4g}"), "searched": "ecq lambda",
                           "met": met, "trials": trials}
