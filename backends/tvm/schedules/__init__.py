"""Deterministic CPU schedule rules for fused TIR functions (`schedule=rules`, the default).

TVM 0.27's `dlight` has CPU rules only for GEMV and reductions, and the PyPI wheel offloads nothing to
BLAS/DNNL, so these rules are the untuned path's kernels, written the way TOPI's x86 schedules and
dlight's GPU rules are: each rule recognises a function by its block structure (iterators, access
patterns; never its name), schedules it with `tvm.s_tir.Schedule` primitives sized from the target's
vector width, and returns None for anything it does not recognise, which then gets the `sampled`
MetaSchedule schedule (build.sampled_schedules) instead.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from types import ModuleType

from edgec.backends.tvm.schedules import conv, dense, injective, reduction
from edgec.backends.tvm.schedules.common import is_scheduled, vector_shape


_log = logging.getLogger(__name__)

# (rule module with match(sch) -> match | None and schedule(sch, match, vs), the source name it records).
# First match wins; each rule checks the whole function, so order only matters for speed.
RULES: list[tuple[ModuleType, Callable[[object], str]]] = [
    (conv, lambda m: f"rules:{m.kind}"),
    (dense, lambda m: "rules:dense"),
    (reduction, lambda m: "rules:channel_last_reduction"),
    (injective, lambda m: "rules:injective"),
]


def rule_schedule(func, target) -> tuple[object, str] | None:
    """(s_tir.Schedule, rule name) for a PrimFunc (or an IRModule holding it as "main"), or None when no
    rule matches or a rule fails on it. The schedule's trace replays on the function, so tuning can
    store it as a MetaSchedule record (tuning.py seeds its database with these)."""
    from tvm import s_tir

    vs = vector_shape(target)
    for rule, source in RULES:
        sch = s_tir.Schedule(func)
        try:
            m = rule.match(sch)
            if m is None:
                continue
            rule.schedule(sch, m, vs)
        except Exception as e:  # noqa: BLE001 - a rule that cannot apply here leaves the function to `sampled`
            _log.debug("schedule rule %s failed: %s", rule.__name__, (str(e).strip().splitlines() or [""])[-1][:200])
            continue
        return sch, source(m)
    return None


def schedule_function(func, target) -> tuple[object, str] | None:
    """(scheduled PrimFunc, rule name), or None when no rule applies."""
    got = rule_schedule(func, target)
    if got is None:
        return None
    sch, name = got
    return sch.mod["main"].with_attr("tirx.is_scheduled", True), name


def apply_rules(mod, target) -> tuple[object, dict[str, str]]:
    """Schedule every not-yet-scheduled PrimFunc a rule matches; returns the module and
    {function name: rule} for the manifest."""
    import tvm

    out = mod
    applied: dict[str, str] = {}
    for gv, func in list(mod.functions.items()):
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        if is_scheduled(func):
            continue
        got = schedule_function(func, target)
        if got is None:
            continue
        new, name = got
        if out is mod:
            out = tvm.IRModule(dict(mod.functions.items()), attrs=mod.attrs)
        out[gv] = new
        applied[gv.name_hint] = name
    return out, applied
