"""`edgec.compare` over several models: the seeds' first step is choosing the network itself ("is a
MobileNet accurate enough, or do I need a bigger one?"), so one report and one Pareto chart span
models x backends x precisions. Each model is swept on its own (own preprocessing, own FP32 reference,
own interleaved timing run) into OUT/<model>/, then the rows are merged with a `model` column."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from edgec.core.compare.sweep import CompareReport, _mark_pareto, compare as compare_one
from edgec.core.errors import InputError


def compare(model, *args, preprocess=None, output, write: bool = True, **kwargs) -> CompareReport:
    """`edgec.compare`: one model (path) as before, or a list of model paths (preprocess: one, or one each)."""
    if isinstance(model, (str, Path)) or hasattr(model, "graph"):
        return compare_one(model, *args, preprocess=preprocess, output=output, write=write, **kwargs)
    models = [Path(m) for m in model]
    if not models:
        raise InputError("edgec compare needs at least one model")
    pps = preprocess if isinstance(preprocess, Sequence) and not isinstance(preprocess, str) else [preprocess]
    pps = list(pps) * len(models) if len(pps) == 1 else list(pps)
    if len(pps) != len(models):
        raise InputError(f"--preprocess: give one for all {len(models)} models or one per model (got {len(pps)})")
    out = Path(output)
    labels: list[str] = []
    for m in models:
        lab = m.stem
        while lab in labels:
            lab += "'"
        labels.append(lab)
    reports = [compare_one(m, *args, preprocess=pp, output=out / lab, write=write, **kwargs)
               for m, pp, lab in zip(models, pps, labels)]
    rows = [{"model": lab, **r, "pareto": False} for lab, rep in zip(labels, reports) for r in rep.rows]
    first = reports[0].meta
    meta = {**first, "model": ", ".join(m.name for m in models), "models": [str(m.resolve()) for m in models],
            "preprocess": pps, "reference_top1_accuracy": None,
            "notes": ["several models: each is timed interleaved in its own run, speedups are against its own "
                      "onnxruntime fp32; across models compare the latencies (same host, separate runs)"]
            + [f"{lab}: {n}" for lab, rep in zip(labels, reports) for n in rep.meta["notes"]]}
    meta["accuracy_metric"] = _mark_pareto(rows)
    report = CompareReport(meta, rows, out)
    if write:
        from edgec.core.compare.render import write_all
        write_all(report)
    return report
