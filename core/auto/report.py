"""The auto report: every candidate with what auto decided and why, the winner and how it was chosen,
in JSON, markdown, HTML and one latency-vs-accuracy plot across models (compare's renderer)."""
from __future__ import annotations

import html
from pathlib import Path

from edgec.core.auto.plan import drop_and_se

COLUMNS = ("model", "candidate", "kind", "decision", "median ms", "p90 ms", "runs", "vs baseline", "drop (points)",
           "top-1", "size MB", "compile s", "latency from", "why")


def _row(s, e, final_rows: dict) -> dict:
    c, o = e.cand, e.outcome
    row = final_rows.get(c.name) or e.row or {}
    base_row = final_rows.get(s.base.name) or {}
    lat, base_lat = row.get("latency_ms_median"), base_row.get("latency_ms_median")
    return {
        "model": c.model, "candidate": c.name, "backend": c.backend, "precision": c.precision, "variant": c.variant,
        "kind": c.kind, "technique": c.tier, "calib_method": c.calib_method if c.precision == "int8" else None,
        "repair": c.repair, "options": c.options, "decision": e.decision, "why": e.why,
        "status": row.get("status", "not run"), "error": row.get("error"),
        "latency_ms_median": lat, "latency_ms_p90": row.get("latency_ms_p90"), "latency_runs": row.get("latency_runs"),
        "playoff_ms": o.playoff_ms if o else None,
        "speedup_vs_baseline": (base_lat / lat) if (lat and base_lat) else None,
        "speedup_vs_reference": row.get("speedup_vs_reference"),
        "drop_points": o.drop if o else None, "drop_se": o.drop_se if o else None,
        "top1_accuracy": row.get("top1_accuracy"), "top1_agreement": row.get("top1_agreement"),
        "cosine": row.get("cosine"), "validation_samples": row.get("validation_samples"),
        "validated_on": row.get("validated_on"), "size_bytes": row.get("size_bytes"),
        "compile_seconds": row.get("compile_seconds"), "reused": row.get("reused"),
        "latency_source": c.latency_source, "proxy": c.proxy if c.latency_source == "proxy" else None,
        "misses": list(o.misses) if o else [], "artifact": row.get("artifact"), "round": e.round,
        "reference": c.kind == "baseline", "pareto": False,
    }


def build(searches, finals, profile, demands, meta: dict) -> dict:
    rows, meeting = [], []
    for s in searches:
        final_rows = {}
        for r in finals[s.label].rows:
            final_rows[f"{r['backend']}-{r['precision']}" + (f"-{r['variant']}" if r["variant"] else "")] = r
        for e in s.entries.values():
            if e.cand.kind == "baseline" and not s.base_eligible:
                e.decision = "reference"
                e.why = (f"the FP32 accuracy reference: {e.cand.backend} {e.cand.precision} is not a deliverable on "
                         f"{profile['name']} ({'integer-only' if profile['constraints'].get('integer_only') else 'not a target'})")
            elif e.decision == "pending" and e.outcome is not None and e.outcome.meets:
                meeting.append((s, e))
    # A playoff ranks its contenders among themselves; they are the fastest of their model in the final run.
    winner_entry = min(meeting, key=lambda t: (t[1].outcome.playoff_ms is None, t[1].outcome.rank_ms)) if meeting else None
    multi = len(searches) > 1
    for s in searches:
        final_rows = {f"{r['backend']}-{r['precision']}" + (f"-{r['variant']}" if r["variant"] else ""): r
                      for r in finals[s.label].rows}
        for e in s.entries.values():
            if e.decision == "pending":
                e.decision, e.why = _decide(s, e, winner_entry, multi)
            rows.append(_row(s, e, final_rows))
    winner = None
    if winner_entry:
        s, e = winner_entry
        winner = next(r for r in rows if r["model"] == s.label and r["candidate"] == e.cand.name)
        winner = {k: winner[k] for k in ("model", "candidate", "backend", "precision", "variant", "latency_ms_median",
                                          "speedup_vs_baseline", "drop_points", "drop_se", "top1_accuracy",
                                          "size_bytes", "latency_source", "proxy", "artifact", "why")}
    _mark_pareto(rows)
    notes = []
    proxies = sorted({f"{r['backend']}: {r['proxy']}" for r in rows if r["proxy"]})
    if proxies:
        notes.append("latency from a proxy, not the device: " + "; ".join(proxies))
    if multi:
        notes.append("each model's cells are timed interleaved in their own run; across models latencies come "
                      "from separate runs on the same host")
    if any(r["decision"] == "not tried" for r in rows):
        notes.append(f"the budget of {meta['budget_minutes']} minutes was spent: 'not tried' cells never ran")
    notes.append("selection: on the --val data (drops are points vs each model's own FP32 with a paired, "
                 "conservative standard error)" + ("; the winner is re-measured on --test below"
                                                   if meta.get("test") else "; no --test data: no held-out check"))
    return {**meta, "profile": profile, "winner": winner, "cells": rows, "notes": notes,
            "met": winner is not None}


def _decide(s, e, winner_entry, multi: bool) -> tuple[str, str]:
    o = e.outcome
    if o is None:
        return "not run", "no result"
    if winner_entry and e is winner_entry[1]:
        others = sorted((x for x in s.entries.values() if x is not e and x.outcome and x.outcome.meets
                         and x.decision != "reference"),
                        key=lambda x: x.outcome.latency_ms)
        text = (f"fastest of {len(others) + 1} cell{'s' if others else ''} of {s.label} meeting every threshold in the "
                f"final side-by-side run ({o.latency_ms:.3f} ms)")
        po = s.playoff_result
        if po:
            me = next(c for c in po["cells"] if c["candidate"] == e.cand.name)
            rest = [c for c in po["cells"] if c is not me]
            text += (f"; playoff ({po['seconds']:g} s interleaved, cells within {100 * po['margin']:.0f}%): median "
                     f"{me['median_ms']:.3f} ms vs " + ", ".join(f"{c['candidate']} {c['median_ms']:.3f} ms" for c in rest))
            first = po["cells"][0]
            for c in po["cells"][1:]:
                ci = c.get("ratio_ci95")
                if ci and ci[0] <= 1 <= ci[1]:
                    text += (f" ({c['candidate']} / {first['candidate']} = {c['ratio_vs_first']:.3f}, 95% CI "
                             f"[{ci[0]:.3f}, {ci[1]:.3f}] includes 1: a tie within noise)")
        elif others:
            ru = others[0]
            pct = 100 * (ru.outcome.latency_ms / o.latency_ms - 1)
            text += f"; runner-up {ru.cand.name} is {pct:.1f}% slower"
            if pct < 5:
                text += " (within the timing noise of a shared host: a re-run may swap them)"
        return "won", text
    if o.status == "failed_validation":
        return "lost", f"failed validation: {o.error}"
    if o.status != "ok":
        return "lost", f"{o.status}: {o.error}"
    if o.misses:
        return "lost", "misses " + "; ".join(o.misses)
    if winner_entry is None:
        return "lost", "no result"
    w = winner_entry[1].outcome
    same = winner_entry[0] is s
    if o.playoff_ms is not None and w.playoff_ms is not None:
        pct = 100 * (o.playoff_ms / w.playoff_ms - 1)
        where = " in the playoff"
    else:
        pct = 100 * (o.latency_ms / w.latency_ms - 1) if w.latency_ms else float("nan")
        where = " in the final run" if same else " (separate runs)"
    return "lost", (f"meets every threshold but is {pct:.0f}% slower than {winner_entry[0].label}:"
                    f"{winner_entry[1].cand.name}{where}")


def _metric(rows) -> str | None:
    pts = [r for r in rows if r["status"] == "ok" and r["latency_ms_median"] is not None]
    for key in ("top1_accuracy", "top1_agreement", "cosine"):
        if pts and all(r[key] is not None for r in pts):
            return key
    return None


def _mark_pareto(rows) -> None:
    m = _metric(rows)
    pts = [r for r in rows if r["status"] == "ok" and r["latency_ms_median"] is not None]
    for r in pts if m else []:
        r["pareto"] = not any(o is not r and o["latency_ms_median"] <= r["latency_ms_median"] and o[m] >= r[m]
                              and (o["latency_ms_median"] < r["latency_ms_median"] or o[m] > r[m]) for o in pts)


def measure_on_test(rep: dict, test, preprocess, demands, threads: int) -> None:
    """Re-validate the winner against its FP32 model on held-out data: the number to quote, not the selection one."""
    import edgec

    w = rep["winner"]
    v = edgec.validate(w["artifact"], test, preprocess=preprocess, threads=threads)
    row = {"validation_samples": v.get("samples"), "top1_agreement": v.get("top1_agreement"),
           "top1_accuracy": v.get("top1_accuracy")}
    drop, se, metric = drop_and_se(row, v.get("reference_top1_accuracy"))
    t = {"data": str(test), "samples": v.get("samples"), "top1_accuracy": v.get("top1_accuracy"),
         "reference_top1_accuracy": v.get("reference_top1_accuracy"), "top1_agreement": v.get("top1_agreement"),
         "cosine": v.get("cosine"), "drop_points": drop, "drop_se": se, "metric": metric}
    if demands.max_drop is not None and drop is not None:
        t["meets_max_drop"] = drop <= demands.max_drop
    if demands.min_cosine is not None and t["cosine"] is not None:
        t["meets_min_cosine"] = t["cosine"] >= demands.min_cosine
    w["test"] = t
    if t.get("meets_min_cosine") is False:
        rep["notes"].append(f"on --test the winner's cosine is {t['cosine']:.5f}, below --min-cosine "
                            f"{demands.min_cosine:g}: it met the demand on --val only")
    if t.get("meets_max_drop") is False:
        rep["notes"].append(f"on --test the winner's drop is {drop:.2f} ± {se:.2f} points, above --max-drop "
                            f"{demands.max_drop:g}: it met the demand on --val only")


def _f(x, fmt):
    return "" if x is None else format(x, fmt)


def _cells(r) -> list[str]:
    drop = "" if r["drop_points"] is None else f"{r['drop_points']:.2f} ± {r['drop_se']:.2f}"
    cs = _f(r["compile_seconds"], ".1f") + (" cached" if r["reused"] and r["compile_seconds"] is not None else "")
    src = r["latency_source"] + (" (proxy)" if r["proxy"] else "")
    return [r["model"], r["candidate"], r["kind"], r["decision"], _f(r["latency_ms_median"], ".3f"),
            _f(r["latency_ms_p90"], ".3f"), _f(r["latency_runs"], "d"), _f(r["speedup_vs_baseline"], ".2f") + ("x" if r["speedup_vs_baseline"] else ""),
            drop, "" if r["top1_accuracy"] is None else f"{100 * r['top1_accuracy']:.1f}%",
            "" if r["size_bytes"] is None else f"{r['size_bytes'] / 1e6:.2f}", cs, src, r["why"]]


def _headline(rep) -> list[str]:
    d = {k: v for k, v in rep["demands"].items() if v is not None}
    lines = [f"hardware: {rep['hardware']['name']} (profile {rep['hardware']['version']}): {rep['hardware']['description']}",
             "demands: " + (", ".join(f"{k}={v:g}" for k, v in d.items()) or "none"),
             f"search: {rep['seconds']} s (budget {rep['budget_minutes']} min), threads={rep['benchmark']['threads']}, "
             f"final run {rep['benchmark']['runs']}+ interleaved runs per cell"]
    w = rep["winner"]
    if w:
        drop = "" if w["drop_points"] is None else f", drop {w['drop_points']:.2f} ± {w['drop_se']:.2f} points on --val"
        lines.append(f"WINNER: {w['model']}:{w['candidate']} at {w['latency_ms_median']:.3f} ms"
                     + (f" ({w['speedup_vs_baseline']:.2f}x the FP32 baseline)" if w["speedup_vs_baseline"] else "")
                     + drop + (f"; latency from a proxy: {w['proxy']}" if w["proxy"] else "")
                     + f"; artifact: {w.get('published') or w['artifact']}")
        lines.append(f"why: {w['why']}")
        t = w.get("test")
        if t:
            verdict = "" if t.get("meets_max_drop") is None else (" (meets --max-drop)" if t["meets_max_drop"]
                                                                   else " (MISSES --max-drop; it met it on --val only)")
            lines.append(f"held-out --test ({t['samples']} samples): top-1 {_f(t['top1_accuracy'] and 100 * t['top1_accuracy'], '.1f')}% vs FP32 "
                         f"{_f(t['reference_top1_accuracy'] and 100 * t['reference_top1_accuracy'], '.1f')}%, agreement "
                         f"{_f(t['top1_agreement'] and 100 * t['top1_agreement'], '.1f')}%, drop "
                         f"{_f(t['drop_points'], '.2f')} ± {_f(t['drop_se'], '.2f')} points{verdict}")
    else:
        lines.append("NO WINNER: no candidate met every threshold (see each row's why)")
    return lines


def markdown(rep) -> str:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["# edgec auto", ""] + [f"- {esc(x)}" for x in _headline(rep)] + [
        "", "| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in _cells(r)) + " |" for r in rep["cells"]]
    lines += [""] + [f"note: {esc(n)}" for n in rep["notes"]]
    return "\n".join(lines) + "\n"


def page(rep, has_png: bool) -> str:
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in COLUMNS)
    body = "\n".join(f'<tr class="{"won" if r["decision"] == "won" else ("ok" if r["status"] == "ok" else "bad")}">'
                     + "".join(f"<td>{e(c)}</td>" for c in _cells(r)) + "</tr>" for r in rep["cells"])
    img = '<img src="pareto.png" alt="latency vs accuracy of every candidate, Pareto front marked">' if has_png else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>edgec auto: {e(rep['hardware']['name'])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px}}tr.bad{{color:#888}}tr.won{{background:#e8f5e9;font-weight:bold}}
img{{max-width:100%}}</style></head><body>
<h1>edgec auto: {e(rep['hardware']['name'])}</h1>
<ul>{''.join(f'<li>{e(x)}</li>' for x in _headline(rep))}</ul>
{img}
<table><thead><tr>{head}</tr></thead><tbody>
{body}
</tbody></table>
<h2>Notes</h2><ul>{''.join(f'<li>{e(n)}</li>' for n in rep['notes'])}</ul>
<p>Full data: <a href="report.json">report.json</a>, <a href="report.md">report.md</a>; each model's sweep:
models/&lt;model&gt;/report.md.</p>
</body></html>
"""


def _plot(rep, path: Path) -> bool:
    from edgec.core.compare.render import plot
    from edgec.core.compare.sweep import CompareReport

    rows = []
    for r in rep["cells"]:
        if r["decision"] in ("skipped", "not run", "not tried"):
            continue
        # Speedups on the plot are against the profile's baseline (e.g. TVM fp32 on the board for rpi4).
        rows.append({**r, "speedup_vs_reference": r["speedup_vs_baseline"],
                     "label_note": "WINNER" if r["decision"] == "won" else None})
    meta = {"model": ", ".join(Path(m).name for m in rep["models"]), "benchmark": rep["benchmark"],
            "accuracy_metric": _metric(rows), "notes": [],
            "reference_top1_accuracy": None if len(rep["models"]) > 1 else next(
                (r["top1_accuracy"] for r in rows if r["reference"] and r["top1_accuracy"] is not None), None)}
    return plot(CompareReport(meta, rows, path.parent), path)


def write_json(rep, path: Path) -> None:
    from edgec.core.manifest import to_json
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(to_json(rep) + "\n")
    tmp.replace(path)


def write_all(rep, out: Path) -> dict:
    has_png = _plot(rep, out / "pareto.png")
    files = {"json": str(out / "report.json"), "markdown": str(out / "report.md"), "html": str(out / "index.html")}
    if has_png:
        files["png"] = str(out / "pareto.png")
    for name, text in (("report.md", markdown(rep)), ("index.html", page(rep, has_png))):
        tmp = out / (name + ".tmp")
        tmp.write_text(text)
        tmp.replace(out / name)
    return files


