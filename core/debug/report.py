"""`edgec debug -o DIR`: debug.json and index.html, written into a staging dir and published atomically.

The page is static HTML with an inline SVG (no script, no network): the total SQNR of every compared
tensor along the graph, and below it the SQNR each one's own segment adds (the lower, the worse), so
the layer where accuracy breaks is the dip in the lower line, not the slope of the upper one.
"""
from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 1100, 400, 60, 20, 60, 110


def _svg(layers: list[dict], keep: set[str]) -> str:
    pts = [(i, e) for i, e in enumerate(layers)]
    vals = [v for _, e in pts for v in (e.get("sqnr_db"), e.get("own_sqnr_db")) if v is not None]
    if not vals:
        return "<p>No tensor could be compared.</p>"
    lo, hi = min(vals + [0.0]), max(vals) + 5
    n = max(len(layers) - 1, 1)

    def x(i):
        return PAD_L + (W - PAD_L - PAD_R) * i / n

    def y(v):
        return PAD_T + (H - PAD_T - PAD_B) * (1 - (v - lo) / (hi - lo or 1))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
           'font-family="sans-serif" font-size="10">',
           f'<rect x="0" y="0" width="{W}" height="{H}" fill="white"/>']
    step = 10 if hi - lo > 40 else 5
    g = step * math.floor(lo / step)
    while g <= hi:
        out.append(f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y(g):.1f}" y2="{y(g):.1f}" stroke="#ddd"/>'
                   f'<text x="{PAD_L - 6}" y="{y(g) + 3:.1f}" text-anchor="end">{g:g}</text>')
        g += step
    out.append(f'<text x="14" y="{(H - PAD_B) / 2:.0f}" transform="rotate(-90 14 {(H - PAD_B) / 2:.0f})" '
               'text-anchor="middle">SQNR (dB), higher is better</text>')
    for key, color, label in (("sqnr_db", "#1f77b4", "total error vs FP32"),
                              ("own_sqnr_db", "#d62728", "error this layer adds (own)")):
        seq = [(x(i), y(e[key])) for i, e in pts if e.get(key) is not None]
        if seq:
            out.append('<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>'
                       % (color, " ".join(f"{a:.1f},{b:.1f}" for a, b in seq)))
            for a, b in seq:
                out.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2.5" fill="{color}"/>')
    for i, e in pts:
        if e.get("layer") in keep or e["tensor"] in keep:
            out.append(f'<rect x="{x(i) - 4:.1f}" y="{PAD_T}" width="8" height="{H - PAD_T - PAD_B}" '
                       'fill="#2ca02c" opacity="0.15"/>')
        label = html.escape(f"{e['op']} {e['tensor']}"[:34])
        out.append(f'<text x="{x(i):.1f}" y="{H - PAD_B + 8}" transform="rotate(60 {x(i):.1f} {H - PAD_B + 8})">'
                   f'{label}</text>')
    # the legend sits above the plot area, where no point can hide under it
    lx, ly = PAD_L, 4
    out.append(f'<line x1="{lx}" x2="{lx + 20}" y1="{ly + 12}" y2="{ly + 12}" stroke="#1f77b4" stroke-width="2"/>'
               f'<text x="{lx + 26}" y="{ly + 15}">total error vs FP32</text>'
               f'<line x1="{lx + 160}" x2="{lx + 180}" y1="{ly + 12}" y2="{ly + 12}" stroke="#d62728" stroke-width="2"/>'
               f'<text x="{lx + 186}" y="{ly + 15}">error this layer adds over its inputs (own)</text>')
    if keep:
        out.append(f'<rect x="{lx + 430}" y="{ly + 7}" width="12" height="10" fill="#2ca02c" opacity="0.3"/>'
                   f'<text x="{lx + 448}" y="{ly + 15}">kept in FP32 by --bisect</text>')
    out.append("</svg>")
    return "\n".join(out)



def _fmt(v, spec=".4g"):
    return "-" if v is None else format(v, spec)


def render_html(rep: dict) -> str:
    keep = set((rep.get("bisect") or {}).get("keep") or [])
    esc = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             f"<title>edgec debug: {esc(str(rep.get('artifact')))}</title>",
             "<style>body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse;font-size:12px}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}td.l,th.l{text-align:left}"
             "tr.worst td{background:#fde0dc}tr.keep td{background:#e3f4e3}code{background:#f4f4f4;overflow-wrap:anywhere}</style></head><body>",
             f"<h1>edgec debug</h1><p><b>{esc(str(rep.get('backend')))} {esc(str(rep.get('precision')))}</b> artifact "
             f"<code>{esc(str(rep.get('artifact')))}</code> vs FP32 <code>{esc(str(rep.get('source')))}</code>, "
             f"{rep.get('samples')} samples of {esc(str(rep.get('data')))}.</p>"]
    audit = rep.get("audit") or {}
    parts.append(f"<p><b>Audit</b> (read from the runtime): {esc(audit.get('summary') or audit.get('unavailable') or '-')}</p>")
    exp = rep.get("exposure") or {}
    if "unavailable" in exp:
        parts.append(f"<p><b>Layers not compared:</b> {esc(exp['unavailable'])}</p>")
    else:
        note = esc(exp.get("note") or "")
        fid = exp.get("outputs_cosine_vs_artifact")
        parts.append(f"<p>{exp.get('compared')} tensors compared. {note}"
                     + (f" Outputs with tensors exposed vs the artifact as compiled: cosine {fid:.6f}." if fid is not None else "")
                     + "</p>")
    b = rep.get("bisect")
    if b:
        parts.append(f"<h2>Bisection</h2><p>demand {esc(json.dumps(b['demand']))}: "
                     f"{'met' if b['met'] else 'NOT met'} on the selection data with {len(b['keep'])} {b.get('unit', 'layers')} kept in float: "
                     f"<code>{esc(', '.join(b['keep']) or '(none)')}</code></p><p>build it: <code>{esc(b.get('flag_line', ''))}</code></p>")
        if b.get("holdout"):
            h = b["holdout"]
            parts.append(f"<p>held-out ({h['samples']} samples of {esc(str(h['data']))}): agreement INT8 "
                         f"{h['int8_agreement']:.2f} ± {h['int8_se']:.2f} %, keep-set {h['keep_agreement']:.2f} ± "
                         f"{h['keep_se']:.2f} %; paired gain {h['paired']['diff_points']:+.2f} ± {h['paired']['se_points']:.2f} "
                         f"points. {'meets' if h.get('met') else 'does NOT meet'} the demand.</p>")
        c = b.get("cost")
        if c:
            parts.append(f"<p>int8 work left: {c['int8_layers']} of {c['int8_layers_base']} weighted layers, "
                         f"{100 * (c['int8_macs_fraction'] or 0):.0f} % of INT8's integer MACs.</p>")
        lat = b.get("latency") or {}
        if "ratio" in lat:
            from .bisect import latency_line
            parts.append(f"<p>latency: {esc(latency_line(lat))}</p>")
        if lat.get("advice"):
            style = "" if lat.get("faster_than_fp32") else " style='color:#b00'"
            parts.append(f"<p{style}><b>advice:</b> {esc(lat['advice'])}</p>")
    parts.append("<h2>Per-layer error along the graph</h2>")
    parts.append(_svg(rep.get("layers") or [], keep))
    worst = set(rep.get("worst") or [])
    parts.append("<h2>Layers</h2><table><tr><th class='l'>#</th><th class='l'>tensor</th><th class='l'>op</th>"
                 "<th class='l'>layer (--keep-fp32 name)</th><th>cosine</th><th>NMSE</th><th>SQNR dB</th><th>max |err|</th>"
                 "<th>own NMSE</th><th>own SQNR dB</th></tr>")
    for i, e in enumerate(rep.get("layers") or []):
        cls = "keep" if (e.get("layer") in keep or e["tensor"] in keep) else ("worst" if e["tensor"] in worst else "")
        parts.append(f"<tr class='{cls}'><td class='l'>{i}</td><td class='l'>{esc(e['tensor'])}</td><td class='l'>{esc(e['op'])}</td>"
                     f"<td class='l'>{esc(e.get('layer') or '-')}</td><td>{_fmt(e.get('cosine'), '.6f')}</td>"
                     f"<td>{_fmt(e.get('nmse'))}</td><td>{_fmt(e.get('sqnr_db'), '.1f')}</td><td>{_fmt(e.get('max_abs_err'))}</td>"
                     f"<td>{_fmt(e.get('own_nmse'))}</td><td>{'exact' if e.get('own_nmse') == 0 else _fmt(e.get('own_sqnr_db'), '.1f')}</td></tr>")
    parts.append("</table>")
    if audit.get("layers"):
        parts.append("<h2>Audit per compute layer</h2><table><tr><th class='l'>layer</th><th class='l'>op</th>"
                     "<th class='l'>runs</th><th class='l'>kernel</th><th class='l'>why</th></tr>")
        for r in audit["layers"]:
            parts.append(f"<tr><td class='l'>{esc(r['name'])}</td><td class='l'>{esc(str(r['op']))}</td>"
                         f"<td class='l'>{esc(str(r.get('precision')))}</td><td class='l'>{esc(str(r.get('kernel') or '-'))}</td>"
                         f"<td class='l'>{esc(r.get('why') or '')}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(rep: dict, out_dir) -> dict:
    """debug.json + index.html into `out_dir` (created; files replaced atomically)."""
    from edgec.core.artifact import check_writable_parent
    from edgec.core.manifest import to_json

    out = Path(out_dir)
    check_writable_parent(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "debug.json", "html": out / "index.html"}
    for key, text in (("json", to_json(rep) + "\n"), ("html", render_html(rep))):
        tmp = files[key].with_name(f".{files[key].name}.tmp-{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, files[key])
    return {k: str(v) for k, v in files.items()}

