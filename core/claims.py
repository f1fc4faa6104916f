"""Accuracy demands (--max-drop, --min-agreement): what `met` means, in words a user can check.

The int8 repairs (core/quantization/repair.py, backends/openvino/repair.py) search on a smooth,
conservative *estimate* of the drop; that is a good guide for the search but it is not the number the
user will see. SqueezeNet 1.1 with --max-drop 0.5 wrote `met: true` from the estimate (0.16, bound
0.49) while the manifest's own validation of the lowered artifact on the same 500 images measured a
1.0-point drop. After validation this stage records both and decides `met` by one rule:

    met  <=>  measured drop <= budget  and  measured top-1 agreement >= min_agreement,

measured by the artifact on its own runtime on the validation data (`validation` in the manifest),
with the standard error of the measured drop beside it. `met_estimate` keeps the search's verdict; a
contradiction is warned about on stderr. The measurement is on the images the search selected on, so
it is optimistic too: `edgec validate ARTIFACT --data HELD_OUT` gives an independent figure.
"""
from __future__ import annotations

import math

RULE = ("met = drop measured by the artifact on its own runtime on the validation data <= budget and "
        "measured top-1 agreement >= min_agreement (the estimate only guided the search)")


def measured(validation: dict, metric: str) -> dict | None:
    """Measured drop (points) with its standard error, and agreement (%), from a validation report.

    Top-1 drop is a paired difference over the same images, d_i in {-1, 0, 1}; d_i != 0 only where
    the two models disagree, so E[d^2] <= 1 - agreement. Without per-image records that bound gives
    an upper bound on the standard error, stated as such (`drop_se_is_upper_bound`)."""
    agree = validation.get("top1_agreement")
    if agree is None:
        return None
    n_all = int(validation.get("samples") or 0)
    out = {"agreement": round(100 * agree, 3), "samples": n_all,
           "agreement_se": round(100 * math.sqrt(agree * (1 - agree) / max(n_all, 1)), 3)}
    if metric == "top1" and validation.get("top1_accuracy") is not None:
        n = int(validation.get("labelled_samples") or n_all)
        drop = validation["reference_top1_accuracy"] - validation["top1_accuracy"]
        var_ub = max((1 - agree) - drop * drop, 0.0)
        out.update(metric="top1", drop=round(100 * drop, 3), samples=n,
                   drop_se=round(100 * math.sqrt(var_ub / max(n - 1, 1)), 3), drop_se_is_upper_bound=True)
    else:
        out.update(metric="agreement", drop=round(100 * (1 - agree), 3), drop_se=out["agreement_se"],
                   drop_se_is_upper_bound=False)
    return out


def reconcile_claims(c) -> None:
    """A compile stage after validation: `quantization.max_drop.met` follows RULE."""
    m = c.manifest or {}
    md = (m.get("quantization") or {}).get("max_drop")
    if not isinstance(md, dict) or "met" not in md:
        return
    meas = measured(m.get("validation") or {}, md.get("metric", "top1"))
    md.setdefault("met_estimate", md["met"])
    md["rule"] = RULE
    if meas is None:  # not a classifier: only the estimate exists, and it says so
        md["met"] = bool(md["met_estimate"])
        md["rule"] = "no top-1 in the validation outputs: met is the search's estimate (met_estimate)"
        return
    md["measured"] = meas
    budget, need = md.get("budget"), md.get("min_agreement")
    met = (budget is None or meas["drop"] <= budget) and (need is None or meas["agreement"] >= need)
    md["met"] = bool(met)
    if md["met_estimate"] and not met:
        from edgec.core.data_guard import warn
        want = " and ".join(x for x in (f"drop <= {budget}" if budget is not None else "",
                                        f"agreement >= {need} %" if need is not None else "") if x)
        warn(f"accuracy demand ({want}) not met: measured drop {meas['drop']:.2f} ± {meas['drop_se']:.2f} points, "
             f"agreement {meas['agreement']:.2f} % on {meas['samples']} validation samples, although the search's "
             f"estimate met it; see manifest quantization.max_drop")


def describe(md: dict) -> str | None:
    """One line for the CLI's compile summary."""
    meas = md.get("measured")
    if not meas:
        return None
    want = ", ".join(x for x in (f"max drop {md['budget']}" if md.get("budget") is not None else "",
                                 f"min agreement {md['min_agreement']} %" if md.get("min_agreement") is not None
                                 else "") if x)
    est = md.get("final_estimate") or {}
    est_txt = f"; estimate {est.get('est_drop')} (bound {est.get('drop_bound')})" if est else ""
    return (f"demand       {want}: measured drop {meas['drop']:.2f} ± {meas['drop_se']:.2f} ({meas['metric']}), "
            f"agreement {meas['agreement']:.2f} % on {meas['samples']} samples -> "
            f"{'met' if md['met'] else 'NOT met'}{est_txt}")
