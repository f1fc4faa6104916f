"""What `edgec auto` tries, in which order, and what it may skip: pure functions over a hardware profile
and the outcomes measured so far (no compiling here, so the rules are testable on their own).

A candidate is backend x precision x calibration method x accuracy repair (x compression when a profile
lists some). The profile's technique order gives the tiers; inside a tier the profile's targets are tried
in order with the default calibration first. Calibration variants and repair are follow-ups: they only
run for an int8 cell that missed the accuracy budget but was faster than the best cell so far.

Pruning never guesses a latency: a candidate is skipped only when a measured cell bounds it from below
(same graph with other scales; repair adds float ops; fp16 without fp16 arithmetic runs as fp32; and
fp32 after an int8 cell of the same backend, on hardware whose profile says int8 kernels win there).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_CALIB = "auto"


@dataclass(frozen=True)
class Demands:
    """The user's thresholds; None = not asked. max_drop is in points (top-1 with labels, else agreement)."""

    max_drop: float | None = None
    max_latency_ms: float | None = None
    max_size_mb: float | None = None
    min_accuracy: float | None = None  # top-1 %, absolute: compares models with one bar
    # Cosine to the FP32 outputs over all of --val (the worst output's): the demand for models whose outputs are not classes
    # (a backbone's features, a detector's maps), where top-1 drop and agreement mean nothing.
    min_cosine: float | None = None


@dataclass
class Candidate:
    model: str  # the model's label (file stem)
    backend: str
    precision: str
    tier: int  # index of the profile technique
    kind: str = "primary"  # baseline | primary | calib | repair
    calib_method: str | None = None
    repair: bool = False
    options: dict = field(default_factory=dict)
    latency_source: str = "device"
    proxy: str | None = None
    why: str = ""

    @property
    def variant(self) -> str | None:
        """None for the plain backend x precision cell: with the sweep's options it is exactly the cell
        `edgec compare` builds (same name, same cache key), so a compare run's cells are auto's too."""
        if self.precision != "int8" or (self.calib_method in (None, DEFAULT_CALIB) and not self.repair):
            return None
        return (self.calib_method or DEFAULT_CALIB) + ("-repair" if self.repair else "")

    @property
    def name(self) -> str:
        return f"{self.backend}-{self.precision}" + (f"-{self.variant}" if self.variant else "")

    @property
    def key(self) -> str:
        return f"{self.model}:{self.name}"

    @property
    def base_name(self) -> str:
        """The default-calibration int8 cell this one is a variant of (itself for primaries)."""
        return f"{self.backend}-{self.precision}"

    def cell(self, max_drop: float | None) -> dict:
        """This candidate as a `compare(cells=...)` entry."""
        extra: dict[str, Any] = {}
        if self.options:
            extra["options"] = dict(self.options)
        if self.precision == "int8":
            if self.calib_method not in (None, DEFAULT_CALIB):
                extra["calib_method"] = self.calib_method
            if self.repair:
                extra["max_drop"] = max_drop
        return {"backend": self.backend, "precision": self.precision, "variant": self.variant, "compile": extra}

    def describe(self) -> str:
        bits = [self.backend, self.precision]
        if self.precision == "int8":
            bits.append(f"calib={self.calib_method or DEFAULT_CALIB}")
            if self.repair:
                bits.append("repair")
        return " ".join(bits)


@dataclass
class Outcome:
    """One measured candidate, as auto judges it."""

    status: str  # compare's row status
    rel: float | None = None  # median latency / the reference cell's, same interleaved run
    latency_ms: float | None = None
    drop: float | None = None  # points vs the model's FP32 (accuracy with labels, else agreement)
    drop_se: float | None = None
    accuracy: float | None = None  # top-1 %
    size_mb: float | None = None
    error: str | None = None
    misses: list[str] = field(default_factory=list)  # thresholds missed, as text
    playoff_ms: float | None = None  # median in the playoff run, when it took part

    @property
    def rank_ms(self) -> float | None:
        """What the winner is chosen on: the playoff's median where there was one, else the final run's."""
        return self.playoff_ms if self.playoff_ms is not None else self.latency_ms

    @property
    def meets(self) -> bool:
        return self.status == "ok" and self.latency_ms is not None and not self.misses

    @property
    def missed_accuracy(self) -> bool:
        return self.status == "failed_validation" or any(m.startswith(("drop", "accuracy", "cosine"))
                                                         for m in self.misses)


def drop_and_se(row: dict, ref_accuracy: float | None) -> tuple[float | None, float | None, str | None]:
    """Points lost vs FP32 and its paired standard error (an upper bound), from a compare row: the same
    rule as compile's `met` (core/claims.measured): top-1 drop with labels, else 100 - agreement."""
    from edgec.core.claims import measured

    if not row.get("validation_samples") or row.get("top1_agreement") is None:
        return None, None, None
    labelled = row.get("top1_accuracy") is not None and ref_accuracy is not None
    m = measured({"top1_agreement": row["top1_agreement"], "samples": row["validation_samples"],
                  "top1_accuracy": row.get("top1_accuracy"), "reference_top1_accuracy": ref_accuracy},
                 "top1" if labelled else "agreement")
    return m["drop"], m["drop_se"], "top-1 accuracy" if m["metric"] == "top1" else "top-1 agreement"


def judge(row: dict, ref_row: dict | None, ref_accuracy: float | None, demands: Demands,
          max_model_mb: float | None = None) -> Outcome:
    """A compare row against the demands. `rel` uses the row's own run's reference latency."""
    o = Outcome(status=row["status"], error=row.get("error"), latency_ms=row.get("latency_ms_median"))
    ref_ms = (ref_row or {}).get("latency_ms_median")
    if o.latency_ms is not None and ref_ms:
        o.rel = o.latency_ms / ref_ms
    o.drop, o.drop_se, metric = drop_and_se(row, ref_accuracy)
    if row.get("top1_accuracy") is not None:
        o.accuracy = 100 * row["top1_accuracy"]
    if row.get("size_bytes") is not None:
        o.size_mb = row["size_bytes"] / 1e6
    if o.status != "ok":
        return o
    if demands.max_drop is not None:
        if o.drop is None:
            o.misses.append("drop unknown: no real validation data (give --val)")
        elif o.drop > demands.max_drop:
            o.misses.append(f"drop {o.drop:.2f} ± {o.drop_se:.2f} points of {metric} > {demands.max_drop:g}")
    if demands.min_accuracy is not None:
        if o.accuracy is None:
            o.misses.append("accuracy unknown: --val has no labels")
        elif o.accuracy < demands.min_accuracy:
            o.misses.append(f"accuracy {o.accuracy:.1f}% < {demands.min_accuracy:g}%")
    if demands.min_cosine is not None:
        cos = row.get("cosine")
        if cos is None:
            o.misses.append("cosine unknown: the cell was not validated")
        elif cos < demands.min_cosine:
            o.misses.append(f"cosine {cos:.5f} < {demands.min_cosine:g}")
    if demands.max_latency_ms is not None and o.latency_ms is not None and o.latency_ms > demands.max_latency_ms:
        o.misses.append(f"latency {o.latency_ms:.3f} ms > {demands.max_latency_ms:g}")
    size_cap = demands.max_size_mb if demands.max_size_mb is not None else max_model_mb
    if size_cap is not None and o.size_mb is not None and o.size_mb > size_cap:
        o.misses.append(f"size {o.size_mb:.2f} MB > {size_cap:g}"
                        + ("" if demands.max_size_mb is not None else " (the profile's memory limit)"))
    return o


def int8_beats_fp32(profile: dict, host_vnni: bool) -> bool:
    claim = profile.get("int8_beats_fp32", False)
    return host_vnni if claim == "vnni" else bool(claim)


def primaries(profile: dict, model: str) -> list[Candidate]:
    """Every tier's default cell per target, in the profile's order (technique, then target)."""
    out = []
    for tier, tech in enumerate(profile["techniques"]):
        for t in profile["targets"]:
            out.append(Candidate(model, t["backend"], tech["precision"], tier, "primary",
                                 DEFAULT_CALIB if tech["precision"] == "int8" else None,
                                 options=dict(t.get("options") or {}), latency_source=t["latency"],
                                 proxy=t.get("proxy"), why=tech.get("why", "")))
    return out


def baseline(profile: dict, model: str) -> Candidate:
    b = profile["baseline"]
    t = next((t for t in profile["targets"] if t["backend"] == b["backend"]), None)
    if t is None:  # the accuracy reference is the FP32 ONNX on onnxruntime, timed on this host
        return Candidate(model, b["backend"], b["precision"], -1, "baseline", latency_source="device",
                         why="FP32 reference")
    return Candidate(model, b["backend"], b["precision"], -1, "baseline", options=dict(t.get("options") or {}),
                     latency_source=t["latency"], proxy=t.get("proxy"), why="FP32 baseline on the target")


def follow_ups(profile: dict, base: Candidate, tried_methods: set[str], demands: Demands) -> list[Candidate]:
    """Calibration variants, then repair, of an int8 cell that missed the accuracy budget."""
    out = []
    for m in profile["calib_methods"]:
        if m not in tried_methods:
            out.append(Candidate(base.model, base.backend, "int8", base.tier, "calib", m, options=base.options,
                                 latency_source=base.latency_source, proxy=base.proxy,
                                 why=f"{base.name} missed the accuracy budget: another activation range method"))
    if profile.get("repair") and demands.max_drop is not None:
        out.append(Candidate(base.model, base.backend, "int8", base.tier, "repair", base.calib_method, True,
                             options=base.options, latency_source=base.latency_source, proxy=base.proxy,
                             why=f"{base.name} missed the accuracy budget: return the most sensitive layers to float "
                                 f"until --max-drop {demands.max_drop:g} holds"))
    return out


def lower_bound(c: Candidate, measured: dict[str, tuple[Candidate, Outcome]], profile: dict,
                host_vnni: bool) -> tuple[float | None, str | None]:
    """(relative latency c cannot beat, the measured cell that says so), or (None, None) when nothing does."""
    def rel_of(name):
        hit = measured.get(f"{c.model}:{name}")
        return (hit[1].rel, name) if hit and hit[1].rel is not None else (None, None)

    if c.kind in ("calib", "repair"):
        return rel_of(c.base_name)  # same graph, other scales / more float: never faster than the base
    if c.precision == "fp16" and not profile["constraints"].get("fp16_arithmetic"):
        return rel_of(f"{c.backend}-fp32")  # no fp16 arithmetic: it runs as fp32 plus conversions
    if c.precision == "fp32" and int8_beats_fp32(profile, host_vnni):
        int8s = [(o.rel, cand.name) for cand, o in measured.values()
                 if cand.model == c.model and cand.backend == c.backend and cand.precision == "int8"
                 and o.meets and o.rel is not None]
        if int8s:
            return min(int8s)
    return None, None


def prune_reason(c: Candidate, measured: dict[str, tuple[Candidate, Outcome]], best: tuple[Candidate, Outcome] | None,
                 profile: dict, demands: Demands, host_vnni: bool) -> str | None:
    """Why `c` need not run, or None. Only a measured lower bound prunes; the best is the fastest cell that
    meets every threshold so far (relative latency, each from its own interleaved run)."""
    bound, by = lower_bound(c, measured, profile, host_vnni)
    if bound is None:
        return None
    if best is not None and best[1].rel is not None and bound >= best[1].rel:
        return (f"cannot beat {best[0].name} ({best[1].rel:.3f}x the reference's latency): {by}, measured at "
                f"{bound:.3f}x, bounds it from below")
    return None
