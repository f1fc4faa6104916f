"""`edgec.auto`: from "these models, this device, these limits" to the best validated artifact.

Baseline first, then the profile's tiers round by round, each round one `edgec.compare` sweep over the
round's candidates plus the best cell so far (compare compiles, validates on the target's runtime, caches
and times them interleaved; a cached cell is reused, so a re-run resumes and the incumbent costs no
compile). Rounds stop when the budget is spent or every remaining candidate is bounded by a measured one.
A final sweep times every validated candidate of a model side by side; the winner is the fastest cell
there that meets every threshold, and is re-measured on --test when given (select on one split, report
on another).
"""
from __future__ import annotations

import datetime as _dt
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from edgec.core import progress
from edgec.core.auto import hardware
from edgec.core.auto.plan import (Candidate, Demands, Outcome, baseline, follow_ups, judge, primaries,
                                  prune_reason)
from edgec.core.errors import InputError
from edgec.core.version import __version__

ROUND_RUNS, ROUND_WARMUP = 20, 3


@dataclass
class Entry:
    """One candidate's history: its latest outcome and what auto decided about it."""

    cand: Candidate
    outcome: Outcome | None = None
    row: dict | None = None
    decision: str = "pending"  # won | lost | skipped | not run | not tried
    why: str = ""
    round: int | None = None


@dataclass
class AutoResult:
    """What `edgec.auto` returns: the winner (None when nothing met every threshold) and the report."""

    winner: dict | None
    report: dict
    out_dir: Path
    files: dict = field(default_factory=dict)

    @property
    def artifact(self) -> Path | None:
        return Path(self.winner["artifact"]) if self.winner else None


def _as_list(x, n: int, what: str) -> list:
    if x is None or isinstance(x, (str, Path)) or not isinstance(x, Sequence):
        return [x] * n
    x = list(x)
    if len(x) == 1:
        return x * n
    if len(x) != n:
        raise InputError(f"{what}: give one value for all {n} models or one per model (got {len(x)})")
    return x


def _labels(models: list[Path]) -> list[str]:
    out = []
    for m in models:
        lab = m.stem
        while lab in out:
            lab += "'"
        out.append(lab)
    return out


class _Search:
    def __init__(self, model: Path, label: str, profile: dict, demands: Demands, sweep_dir: Path, data: dict,
                 threads: int, clock, budget_s: float | None, host_vnni: bool):
        self.model, self.label, self.profile, self.demands = model, label, profile, demands
        self.sweep_dir, self.data, self.threads = sweep_dir, data, threads
        self.clock, self.budget_s, self.host_vnni = clock, budget_s, host_vnni
        self.entries: dict[str, Entry] = {}
        self.measured: dict[str, tuple[Candidate, Outcome]] = {}
        self.best: tuple[Candidate, Outcome] | None = None
        self.ref_accuracy: float | None = None
        self.rounds = 0
        self.playoff_result: dict | None = None
        self.base = baseline(profile, label)
        # On an integer-only device the FP32 ONNX on onnxruntime is the accuracy reference, not a deliverable.
        self.base_eligible = (any(t["backend"] == self.base.backend for t in profile["targets"])
                              and any(t["precision"] == self.base.precision for t in profile["techniques"]))
        self.max_model_mb = profile["constraints"].get("max_model_mb")

    # -- one compare sweep over some candidates --------------------------------------------------------
    def sweep(self, cands: list[Candidate], *, runs: int, warmup: int, write: bool = False, min_seconds: float = 0.25):
        from edgec.core.compare.sweep import compare

        uniq = list({c.name: c for c in cands}.values())
        # A --min-cosine demand is also each cell's validation threshold: compare's default (0.99 for int8)
        # would otherwise reject or accept cells on another bar than the user's.
        rep = compare(self.model, output=self.sweep_dir, cells=[c.cell(self.demands.max_drop) for c in uniq],
                      threads=self.threads, runs=runs, warmup=warmup, min_seconds=min_seconds, write=write,
                      memory=False, min_cosine=self.demands.min_cosine, **self.data)
        if rep.meta.get("reference_top1_accuracy") is not None:
            self.ref_accuracy = rep.meta["reference_top1_accuracy"]
        ref_row = next(r for r in rep.rows if r["reference"])
        out = {}
        for c in uniq:
            row = rep.row(c.backend, c.precision, c.variant)
            o = judge(row, ref_row, self.ref_accuracy, self.demands, self.max_model_mb)
            if c.kind != "baseline" and o.status == "ok":
                o.misses += integer_misses(self.profile, row.get("artifact"))
            out[c.name] = (row, o)
        return rep, out

    def budget_spent(self) -> bool:
        return self.budget_s is not None and self.clock() >= self.budget_s

    def run_round(self, cands: list[Candidate]) -> None:
        todo = []
        for c in cands:
            if c.key in self.measured:  # e.g. the baseline, again as its tier's primary: already measured
                continue
            e = self.entries.setdefault(c.key, Entry(c))
            why = prune_reason(c, self.measured, self.best, self.profile, self.demands, self.host_vnni)
            if why:
                e.decision, e.why = "skipped", why
            elif self.budget_spent():
                e.decision, e.why = "not tried", "the --budget-minutes budget was spent before its round"
            else:
                todo.append(c)
        if not todo:
            return
        self.rounds += 1
        progress.say(f"auto [{self.label}] round {self.rounds}: " + ", ".join(c.name for c in todo))
        extra = [self.best[0]] if self.best and self.best[0].name not in {c.name for c in todo} else []
        _, results = self.sweep(todo + extra, runs=ROUND_RUNS, warmup=ROUND_WARMUP)
        for c in todo + extra:
            row, o = results[c.name]
            e = self.entries.setdefault(c.key, Entry(c))
            e.row, e.outcome, e.round = row, o, (e.round if c in extra else self.rounds)
            if o.status in ("unavailable", "unsupported"):
                e.decision, e.why = "not run", o.error or o.status
                continue
            self.measured[c.key] = (c, o)
        # The best is re-judged on this round's run: the incumbent was timed beside the challengers.
        meeting = [(c, o) for c, o in (self.measured[c.key] for c in todo + extra if c.key in self.measured)
                   if o.meets and o.rel is not None]
        if meeting:
            cand = min(meeting, key=lambda t: t[1].rel)
            if self.best is None or cand[1].rel < self.best[1].rel or cand[0].key == self.best[0].key:
                self.best = cand

    def run(self) -> None:
        self.run_round([self.base])
        tiers = {}
        for c in primaries(self.profile, self.label):
            tiers.setdefault(c.tier, []).append(c)
        for tier, cands in sorted(tiers.items()):
            self.run_round(cands)
            if cands[0].precision != "int8":
                continue
            # Follow-ups for int8 cells that missed the accuracy budget: each method, then repair.
            for base in cands:
                hit = self.measured.get(base.key)
                if not hit or not hit[1].missed_accuracy:
                    continue
                tried = {base.calib_method}
                for f in follow_ups(self.profile, base, tried, self.demands):
                    self.run_round([f])
                    got = self.measured.get(f.key)
                    if got and got[1].meets:
                        break  # a variant met the budget: later ones cannot be faster (same graph or more float)

    def playoff(self, seconds: float, margin: float = 0.10, top: int = 3) -> dict | None:
        """The cells meeting every threshold within `margin` of the fastest, timed again side by side for
        `seconds` with edgec.benchmark (paired-block CI on each ratio): on a shared host a final run of 50
        rounds can rank two cells 6 % apart the wrong way round. Host-timed cells only (a board's clock is not
        this machine's). Sets `playoff` on each contender's outcome (median ms in this run)."""
        import edgec

        meeting = sorted(((c, o) for c, o in self.measured.values()
                          if o.meets and c.latency_source == "device" and (c.kind != "baseline" or self.base_eligible)),
                         key=lambda t: t[1].latency_ms)
        if len(meeting) < 2:
            return None
        close = [t for t in meeting if t[1].latency_ms <= meeting[0][1].latency_ms * (1 + margin)][:top]
        if len(close) < 2:
            return None
        arts = [self.entries[c.key].row["artifact"] for c, _ in close]
        progress.say(f"auto [{self.label}] playoff: {', '.join(c.name for c, _ in close)} within {100 * margin:.0f}% "
                     f"of each other, timed {seconds:g} s side by side")
        rep = edgec.benchmark(arts, threads=self.threads, duration=seconds, measure_memory=False,
                              input=self.data["validation"], preprocess=self.data["preprocess"])
        res = {"seconds": seconds, "margin": margin, "cells": []}
        for (c, o), a in zip(close, rep.artifacts):
            lat = a.get("latency_ms") or {}
            o.playoff_ms = lat.get("median")
            vs = a.get("vs_first") or {}
            res["cells"].append({"candidate": c.name, "median_ms": lat.get("median"), "min_ms": lat.get("min"),
                                 "ratio_vs_first": vs.get("latency_ratio"), "ratio_ci95": vs.get("latency_ratio_ci95")})
        self.playoff_result = res
        return res

    def final(self, runs: int, warmup: int, min_seconds: float):
        """Every validated candidate of this model timed side by side, once, with the full run count."""
        cands = [c for c, o in self.measured.values() if o.status == "ok"]
        if self.base.key not in {c.key for c in cands}:
            cands.insert(0, self.base)
        progress.say(f"auto [{self.label}] final: {len(cands)} validated cells timed side by side")
        rep, results = self.sweep(cands, runs=runs, warmup=warmup, write=True, min_seconds=min_seconds)
        for c in cands:
            row, o = results[c.name]
            e = self.entries.setdefault(c.key, Entry(c))
            e.row, e.outcome = row, o
            if c.key in self.measured:
                self.measured[c.key] = (c, o)
        return rep


def auto(models, hardware_name: str, *, calibration=None, validation=None, test=None, preprocess=None,
         max_drop: float | None = None, max_latency_ms: float | None = None, max_size_mb: float | None = None,
         min_accuracy: float | None = None, min_cosine: float | None = None, budget_minutes: float | None = 30.0,
         output,
         calib_samples: int | None = None, val_samples: int | None = None, threads: int = 1, runs: int = 50,
         warmup: int = 5, min_seconds: float = 1.0, playoff_seconds: float = 20.0, backends=None, force: bool = False,
         clock=None) -> AutoResult:
    """Search the hardware profile's candidates for each model; write the winner and the report into `output`.

    models: one ONNX path or several (each with its own `preprocess`: one value, or a list in model order).
    calibration / validation: the int8 calibration data and the selection data (labels give top-1 drops);
    test: held-out data the winner and its FP32 model are re-measured on (never used to choose).
    max_drop: points of top-1 (agreement without labels) each model may lose against its own FP32.
    min_cosine: cosine to the FP32 outputs over --val (the worst output's) every cell must reach (models whose outputs are not classes).
    budget_minutes: no new round starts after this much wall time (None = no limit).
    backends: search only these of the profile's targets (names or "a,b").
    playoff_seconds: cells within 10 % of the fastest are timed again this long side by side (0 = no playoff).
    """
    from edgec.core.host import u8s8_saturates

    models = [Path(m) for m in ([models] if isinstance(models, (str, Path)) else list(models))]
    if not models:
        raise InputError("edgec auto needs at least one model")
    for m in models:
        if not m.is_file():
            raise InputError(f"model file not found: {m} (check the path)")
    profile = restrict(hardware.load(hardware_name), backends)
    if calibration is None and any(t["precision"] == "int8" for t in profile["techniques"]):
        raise InputError(f"hardware '{hardware_name}' tries int8, which needs calibration data: pass --calib DATA "
                         "(a few hundred representative inputs)")
    if validation is None:
        raise InputError("edgec auto judges accuracy on real data: pass --val DATA (labels give top-1 drops); "
                         "random inputs would make every drop meaningless")
    for name, v in (("max_drop", max_drop), ("max_latency_ms", max_latency_ms), ("max_size_mb", max_size_mb),
                    ("budget_minutes", budget_minutes)):
        if v is not None and not (v == v and 0 <= v < float("inf")) or (name != "max_drop" and v is not None and v <= 0):
            raise InputError(f"--{name.replace('_', '-')} must be a finite positive number (got {v})")
    if min_cosine is not None and not (-1 <= min_cosine <= 1):
        raise InputError(f"--min-cosine must be a cosine between -1 and 1 (got {min_cosine})")
    demands = Demands(max_drop, max_latency_ms, max_size_mb, min_accuracy, min_cosine)
    preprocess = _as_list(preprocess, len(models), "--preprocess")
    labels = _labels(models)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    clock = clock or (lambda: time.monotonic() - t0)
    budget_s = None if budget_minutes is None else budget_minutes * 60
    host_vnni = not u8s8_saturates()  # an int8 dot product accumulating in int32 (VNNI/AMX, ARM sdot)

    searches = []
    for model, label, pp in zip(models, labels, preprocess):
        data = dict(calibration=calibration, validation=validation, preprocess=pp, calib_samples=calib_samples,
                    val_samples=val_samples, force=force)
        s = _Search(model, label, profile, demands, out / "models" / label, data, threads, clock, budget_s,
                    host_vnni)
        s.run()
        searches.append(s)
    finals = {s.label: s.final(runs, warmup, min_seconds) for s in searches}
    if playoff_seconds:
        for s in searches:
            s.playoff(playoff_seconds)
    seconds = round(time.monotonic() - t0, 1)

    from edgec.core.auto import report as _report
    rep = _report.build(searches, finals, profile, demands, meta={
        "edgec_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "hardware": {"name": profile["name"], "version": profile["version"], "description": profile["description"]},
        "models": [str(m.resolve()) for m in models],
        "calibration": None if calibration is None else str(calibration),
        "validation": None if validation is None else str(validation),
        "test": None if test is None else str(test),
        "preprocess": preprocess,
        "demands": demands.__dict__,
        "budget_minutes": budget_minutes,
        "seconds": seconds,
        "benchmark": {"threads": threads, "runs": runs, "warmup": warmup, "round_runs": ROUND_RUNS,
                      "playoff_seconds": playoff_seconds},
        "playoffs": {s.label: s.playoff_result for s in searches if s.playoff_result},
        "host_vnni": host_vnni,
    })
    winner = rep["winner"]
    if winner and test is not None:
        _report.measure_on_test(rep, test, preprocess[labels.index(winner["model"])], demands, threads)
    files = {}
    if winner:
        files["artifact"] = str(_publish_winner(Path(winner["artifact"]), out / "artifact"))
        winner["published"] = files["artifact"]
    files.update(_report.write_all(rep, out))
    rep["files"] = files
    _report.write_json(rep, out / "report.json")
    return AutoResult(winner, rep, out, files)


def integer_misses(profile: dict, artifact) -> list[str]:
    """What an artifact does that an integer-only / integer-I/O device cannot, from its manifest's backend info."""
    cons = profile["constraints"]
    if not (cons.get("integer_only") or cons.get("int8_io")) or not artifact:
        return []
    try:
        info = json.loads((Path(artifact) / "manifest.json").read_text()).get("backend_info") or {}
    except (OSError, ValueError):
        return ["integer-only: the artifact's manifest is unreadable"]
    out = []
    io = info.get("io") or {}
    if cons.get("int8_io"):
        dts = [t.get("dtype") for t in io.get("inputs", []) + io.get("outputs", [])]
        if not dts or any(d not in ("int8", "uint8") for d in dts):
            out.append(f"model I/O is {', '.join(map(str, dts)) or 'unknown'}: the device needs int8/uint8 I/O")
    if cons.get("integer_only"):
        dts = (info.get("file") or {}).get("tensor_dtypes")
        floats = sorted(d for d in (dts or {}) if d.startswith(("float", "bfloat")))
        if dts is None or floats:
            out.append("float tensors inside the model (" + (", ".join(floats) if floats else "unknown dtypes")
                       + "): the device is integer-only")
    return out


def restrict(profile: dict, backends) -> dict:
    """The profile with only the named targets (the baseline's accuracy reference stays)."""
    if backends is None:
        return profile
    names = [b.strip() for b in (backends.split(",") if isinstance(backends, str) else backends) if b and b.strip()]
    known = [t["backend"] for t in profile["targets"]]
    bad = [b for b in names if b not in known]
    if bad or not names:
        raise InputError(f"backend '{(bad or [''])[0]}' is not a target of hardware '{profile['name']}' "
                         f"(its targets: {', '.join(known)}); pass --backends from those")
    return {**profile, "targets": [t for t in profile["targets"] if t["backend"] in names]}


def _publish_winner(src: Path, dest: Path) -> Path:
    """Copy the winning artifact to OUT/artifact atomically (staging copy, then rename over the old one)."""
    tmp = dest.with_name(f".{dest.name}.tmp-{int(time.time() * 1e6)}")
    shutil.copytree(src, tmp)
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{int(time.time() * 1e6)}")
        dest.rename(old)
    tmp.rename(dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return dest


def explain(hardware_name: str, demands: Demands | None = None, backends=None) -> dict[str, Any]:
    """The plan `auto` would follow on this hardware, without running anything (`edgec auto --explain`)."""
    import edgec
    from edgec.core.host import u8s8_saturates

    profile = restrict(hardware.load(hardware_name), backends)
    vnni = not u8s8_saturates()
    demands = demands or Demands()
    here = {r["name"]: r for r in edgec.list_backends()}
    targets = []
    for t in profile["targets"]:
        r = here.get(t["backend"])
        state = ("runs here" if r and r.get("can_run") else
                 f"not here: {(r or {}).get('reason', 'not registered')}" + (f" ({r['hint']})" if r and r.get("hint") else ""))
        targets.append({**t, "here": state})
    b = baseline(profile, "MODEL")
    steps = [f"1. baseline: {b.describe()} ({b.why}) on the --val data"]
    n = 2
    for tier, tech in enumerate(profile["techniques"]):
        cands = [c for c in primaries(profile, "MODEL") if c.tier == tier]
        steps.append(f"{n}. {tech['precision']}: " + ", ".join(c.describe() for c in cands) + f"  -- {tech.get('why', '')}")
        n += 1
        if tech["precision"] == "int8":
            rest = [m for m in profile["calib_methods"] if m != "auto"]
            follow = f"   for each int8 cell that misses the accuracy budget but is faster than the best so far: calib {', '.join(rest)}"
            if profile.get("repair"):
                follow += ", then accuracy repair (max_drop: layers back to float)" + ("" if demands.max_drop is not None
                                                                                        else " [needs --max-drop]")
            else:
                follow += f"; no repair: {profile.get('repair_why', 'the profile disables it')}"
            steps.append(follow)
    rules = ["a candidate is skipped only when a measured cell bounds its latency from below and that bound is no "
             "better than the best cell meeting every threshold: calib variants and repair by their default-calib "
             "cell; fp16 by the same backend's fp32 when the device has no fp16 arithmetic"
             + ("; fp32 by the same backend's int8 once that meets every threshold"
                + (f" (only on hosts with VNNI/AMX int8; this one: {'yes' if vnni else 'no'})"
                   if profile.get("int8_beats_fp32") == "vnni" else "")
                if profile.get("int8_beats_fp32") else ""),
             "no round starts once --budget-minutes is spent",
             "compression (pruning, clustering) is not searched: it shrinks the packed artifact (edgec pack), not its "
             "files on disk or its latency, since the runtimes run dense kernels (benchmarks/bench_compression.py); "
             "use `edgec compile --prune/--cluster` on the winner for an OTA payload",
             "final: every validated cell of a model timed side by side (interleaved); the winner is the fastest "
             "meeting every threshold; --test re-measures it on held-out data"]
    return {"hardware": profile["name"], "version": profile["version"], "description": profile["description"],
            "constraints": profile["constraints"], "targets": targets, "steps": steps, "rules": rules,
            "not_here": profile.get("not_here", {}), "sources": profile.get("sources", [])}
