"""Compression steps that change the graph, not only the weights: they run before the weight steps.

  prune_channels  reconstruct.prune_channels: remove channels (MACs and parameters drop)
  low_rank        lowrank.factorize: split layers into two thinner ones where that is faster
  distill         distill.finetune: knowledge-distillation fine-tuning against the FP32 input model
                  (with --ecq / --cluster it runs after them instead, their codes frozen: pipeline.compress, codes.py)

Each takes (model, step, ctx) and returns (model, report); step.options holds extras ({"tied": True}
for prune_channels, {"epochs": N} for distill, whose amount is its time budget in minutes). With --max-drop, prune_channels tries a
short ladder of ratios from the asked one down and keeps the first whose drop on the validation
data meets the budget on the conservative bound (quantization/repair.assess, as the weight steps
do); every rung is a full prune + evaluation, so the ladder is kept to four rungs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import onnx

from edgec.core.errors import InputError

LADDER = (1.0, 0.75, 0.5, 0.25)  # fractions of the asked ratio tried under --max-drop


@dataclass
class StructuredContext:
    teacher: onnx.ModelProto          # the model as it entered compression (distillation's teacher)
    calibration: object = None
    validation: object = None
    max_drop: float | None = None
    progress: Callable[[str], None] = lambda m: None


def run_prune_channels(model, step, ctx: StructuredContext):
    from .reconstruct import prune_channels

    opts = dict(step.options or {})
    table: dict = {}  # the sensitivity table, measured once for every rung of the ladder

    def once(ratio):
        if opts.get("allocate") == "sensitivity":  # ratio = fraction of MACs, shared out by sensitivity
            from .sensitivity import measure, prune_to_budget

            if "t" not in table:
                table["t"] = measure(model, ctx.calibration, method=step.method, tied=bool(opts.get("tied")),
                                     patterns=step.layers or None, progress=ctx.progress)
            return prune_to_budget(model, ratio, calibration=ctx.calibration, table=table["t"], method=step.method,
                                   tied=bool(opts.get("tied")), patterns=step.layers or None, progress=ctx.progress)
        return prune_channels(model, ratio, calibration=ctx.calibration, method=step.method,
                              patterns=step.layers or None, per_unit=step.per_layer, tied=bool(opts.get("tied")),
                              progress=ctx.progress)

    if ctx.max_drop is None:
        return once(step.amount)
    if ctx.validation is None:
        raise InputError("--max-drop needs validation data to measure the drop; pass --val DATA")
    from edgec.core.quantization.repair import Evaluator, assess

    ev = Evaluator(ctx.teacher, ctx.validation, progress=False)
    trials = []
    best = None
    for f in LADDER:
        ratio = round(step.amount * f, 4)
        m, rep = once(ratio)
        row = assess(ev, ev.outputs(m))
        trials.append({"ratio": ratio, "drop": round(row["drop"], 3), "drop_bound": round(row["drop_bound"], 3),
                       "macs": rep["macs_after"]})
        ctx.progress(f"max-drop: channels {ratio:.3g} -> drop {row['drop']:.2f} (bound {row['drop_bound']:.2f})")
        if row["drop_bound"] <= ctx.max_drop:
            best = (m, rep)
            break
    met = best is not None
    if best is None:  # nothing met: no channel pruning rather than a model over budget
        m, rep = model, {"technique": "prune_channels", "ratio": 0.0, "units": []}
    else:
        m, rep = best
    rep["max_drop"] = {"budget": ctx.max_drop, "metric": ev.metric, "samples": len(ev.feeds), "met": met,
                       "trials": trials}
    return m, rep


def run_low_rank(model, step, ctx: StructuredContext):
    from .lowrank import factorize

    return factorize(model, step.amount, calibration=ctx.calibration, patterns=step.layers or None,
                     progress=ctx.progress)


def run_distill(model, step, ctx: StructuredContext):
    from .distill import finetune

    if ctx.calibration is None:
        raise InputError("--finetune distill trains on unlabelled calibration images: pass --calib DATA")
    opts = dict(step.options or {})
    return finetune(model, ctx.teacher, ctx.calibration, minutes=step.amount, epochs=opts.get("epochs", 3),
                    progress=ctx.progress)


STRUCTURED: dict[str, Callable] = {"prune_channels": run_prune_channels, "low_rank": run_low_rank,
                                   "distill": run_distill}
ORDER = ("prune_channels", "low_rank", "distill")  # graph changes first, then the fine-tuning that heals them


def apply_structured(model: onnx.ModelProto, steps, *, calibration=None, validation=None, max_drop=None,
                     progress=None) -> tuple[onnx.ModelProto, list]:
    """(model, reports) after the structured steps, in ORDER; (model, []) when there are none."""
    steps = sorted([s for s in steps if s.technique in STRUCTURED], key=lambda s: ORDER.index(s.technique))
    if not steps:
        return model, []
    ctx = StructuredContext(model, calibration, validation, max_drop, progress or (lambda m: None))
    reports = []
    for st in steps:
        ctx.progress(f"structured step: {st.technique} {st.amount:g}")
        model, rep = STRUCTURED[st.technique](model, st, ctx)
        reports.append(rep)
    return model, reports
