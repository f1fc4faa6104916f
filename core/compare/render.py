"""The report's human forms: a markdown table, the latency-vs-accuracy plot, and an HTML page of both."""
from __future__ import annotations

import html
import os
from pathlib import Path

METRIC_LABEL = {"top1_accuracy": "top-1 accuracy (%)", "top1_agreement": "top-1 agreement with FP32 (%)",
                "cosine": "cosine similarity to FP32"}
COLUMNS = ("backend", "precision", "status", "top-1 acc", "agreement", "cosine", "median ms", "p90 ms", "speedup",
           "size MB", "peak RSS MB", "compile s", "pareto")


def _pct(x):
    return "" if x is None else f"{100 * x:.1f}%"


def _ms(x):
    return "" if x is None else (f"{x:.2f}" if x >= 1 else f"{x:.3f}")


def _num(x, fmt):
    return "" if x is None else format(x, fmt)


def cells(row: dict) -> list[str]:
    name = row["backend"] + (" (ref)" if row["reference"] else "")
    status = row["status"] + (" (reused)" if row["reused"] and row["status"] == "ok" else "")
    return [name, row["precision"], status, _pct(row["top1_accuracy"]), _pct(row["top1_agreement"]),
            _num(row["cosine"], ".5f"), _ms(row["latency_ms_median"]), _ms(row["latency_ms_p90"]),
            "" if row["speedup_vs_reference"] is None else f"{row['speedup_vs_reference']:.2f}x",
            "" if row["size_bytes"] is None else f"{row['size_bytes'] / 1e6:.2f}",
            "" if row.get("peak_rss_bytes") is None else f"{row['peak_rss_bytes'] / 1e6:.0f}",
            _num(row["compile_seconds"], ".1f"), "*" if row["pareto"] else ""]


def _problems(report) -> list[str]:
    return [f"{r['backend']} {r['precision']}: {r['status']}: {r['error']}" for r in report.rows if r["error"]]


def _settings(report) -> str:
    m, b = report.meta, report.meta["benchmark"]
    where = "; ".join(f"timed on {g['node']} ({g['node_type']})" for g in b.get("groups") or [])
    return (f"{Path(m['model']).name}; latency: {b['runs']} interleaved runs after {b['warmup']} warm-up, "
            f"threads={b['threads']}, input: {b['input']}; speedup vs onnxruntime fp32 from the same run"
            + (f" on the same node; {where}" if where else ""))


def markdown(report) -> str:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = [f"# edgec compare: {Path(report.meta['model']).name}", "", _settings(report), "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in cells(r)) + " |" for r in report.rows]
    if report.meta.get("accuracy_metric"):
        lines += ["", f"pareto: * marks cells no other cell beats on both median latency and "
                      f"{METRIC_LABEL[report.meta['accuracy_metric']]}"]
    if report.meta.get("reference_top1_accuracy") is not None:
        lines.append(f"FP32 reference (onnxruntime) top-1 accuracy on the validation data: "
                     f"{_pct(report.meta['reference_top1_accuracy'])}")
    for note in report.meta.get("notes", []):
        lines.append(f"note: {note}")
    probs = _problems(report)
    if probs:
        lines += ["", "## Cells without a result", ""] + [f"- {esc(p)}" for p in probs]
    return "\n".join(lines) + "\n"


MARKERS = {"fp32": "o", "fp16": "s", "int8": "^"}
# Label offsets in points, tried in order until a label overlaps no earlier label and stays inside the axes.
OFFSETS = [(7, 5), (7, -13), (-7, 5), (-7, -13), (7, 17), (7, -25), (-7, 17), (-7, -25), (7, 29), (7, -37)]


def _place_labels(fig, ax, labels) -> None:
    """Greedy placement: a dozen points need no optimizer (adjustText would add scipy to the plot extra)."""
    from matplotlib.transforms import Bbox

    renderer = fig.canvas.get_renderer()
    axes_box = ax.get_window_extent(renderer)
    # Points are obstacles too, so a label never sits on a neighbour's marker and reads as its name.
    r_px = 7 * fig.dpi / 72
    points = [ax.transData.transform((x, y)) for _, x, y in labels]
    placed = [Bbox.from_extents(px - r_px, py - r_px, px + r_px, py + r_px) for px, py in points]
    for text, x, y in labels:
        best = None
        own = ax.transData.transform((x, y))
        for dx, dy in OFFSETS:
            far = abs(dy) > 15
            ann = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=8.5, zorder=4,
                              ha="left" if dx > 0 else "right",
                              arrowprops=dict(arrowstyle="-", color="grey", lw=0.6) if far else None)
            box = ann.get_window_extent(renderer)
            inside = axes_box.x0 <= box.x0 and box.x1 <= axes_box.x1 and axes_box.y0 <= box.y0 and box.y1 <= axes_box.y1
            others = [b for b in placed if not (b.x0 < own[0] < b.x1 and b.y0 < own[1] < b.y1 and b.width < 3 * r_px)]
            if inside and not any(box.overlaps(b) for b in others):
                best = (ann, box)
                break
            ann.remove()
        if best is None:  # crowded: keep the first choice rather than drop the label
            ann = ax.annotate(text, (x, y), textcoords="offset points", xytext=OFFSETS[0], fontsize=8.5, zorder=4)
            best = (ann, ann.get_window_extent(renderer))
        placed.append(best[1])


def plot(report, path: Path) -> bool:
    """Write pareto.png; False (and a note) when matplotlib is missing or nothing was timed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        report.meta["notes"].append("pareto.png not written: matplotlib is missing; pip install 'edgec[plot]'")
        return False
    metric = report.meta.get("accuracy_metric")
    pts = [r for r in report.rows if r["status"] == "ok" and r["latency_ms_median"] is not None]
    scale = 1.0 if metric == "cosine" else 100.0
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    if metric and pts:
        backends = sorted({r["backend"] for r in pts})
        colours = {b: plt.get_cmap("tab10")(i % 10) for i, b in enumerate(backends)}
        xs = [r["latency_ms_median"] for r in pts]
        ys = [r[metric] * scale for r in pts]
        pad = max((max(ys) - min(ys)) * 0.25, 0.5 if scale == 100 else 1e-4)
        ax.set_ylim(min(ys) - pad, max(ys) + pad)
        ax.set_xlim(0, max(xs) * 1.4)
        labels = []
        for r, x, y in zip(pts, xs, ys):
            ax.scatter(x, y, s=120 if r["pareto"] else 60, marker=MARKERS.get(r["precision"], "o"),
                       color=colours[r["backend"]], edgecolors="black" if r["pareto"] else "none", linewidths=1.5,
                       zorder=3)
            label = f"{r['backend']} {r['precision']}" + (" (ref)" if r["reference"] else "")
            if r["speedup_vs_reference"] is not None and not r["reference"]:
                label += f" {r['speedup_vs_reference']:.2f}x"
            labels.append((label, x, y))
        _place_labels(fig, ax, labels)
        front = sorted(report.pareto, key=lambda r: r["latency_ms_median"])
        if front:
            # The staircase bounds the region the front dominates; it runs on to the right edge.
            fx = [r["latency_ms_median"] for r in front] + [ax.get_xlim()[1]]
            fy = [r[metric] * scale for r in front] + [front[-1][metric] * scale]
            ax.step(fx, fy, where="post", color="black", linestyle="--", linewidth=1, zorder=2,
                    label="Pareto front (outlined)")
        ref_acc = report.meta.get("reference_top1_accuracy")
        if metric == "top1_accuracy" and ref_acc is not None:
            ax.axhline(ref_acc * 100, color="grey", linewidth=0.8, linestyle=":", label="FP32 reference accuracy")
        for b in backends:
            ax.scatter([], [], color=colours[b], marker="o", label=b)
        for p in sorted({r["precision"] for r in pts}, key=list(MARKERS).index):
            ax.scatter([], [], color="grey", marker=MARKERS[p], label=p)
        ax.legend(loc="lower right", fontsize=8)
        ax.set_ylabel(METRIC_LABEL[metric] + ", higher is better")
    else:
        ax.text(0.5, 0.5, "no cell produced a timed, validated artifact", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlabel(f"median latency (ms, threads={report.meta['benchmark']['threads']}; lower is better)")
    ax.set_title(f"{Path(report.meta['model']).name}: latency vs accuracy", fontsize=11)
    ax.grid(True, alpha=0.3)
    missing = [f"{r['backend']} {r['precision']} ({r['status']})" for r in report.rows if r not in pts]
    if missing:
        fig.text(0.01, 0.01, "not plotted: " + ", ".join(missing), fontsize=7, color="dimgray", wrap=True)
    fig.tight_layout(rect=(0, 0.04 if missing else 0, 1, 1))
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return True


def page(report, has_png: bool) -> str:
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in COLUMNS)
    body = []
    for r in report.rows:
        tds = "".join(f"<td>{e(c)}</td>" for c in cells(r))
        cls = "ok" if r["status"] == "ok" else "bad"
        title = f' title="{e(r["error"])}"' if r["error"] else ""
        body.append(f'<tr class="{cls}"{title}>{tds}</tr>')
    probs = "".join(f"<li>{e(p)}</li>" for p in _problems(report))
    notes = "".join(f"<li>{e(n)}</li>" for n in report.meta.get("notes", []))
    img = '<img src="pareto.png" alt="latency vs accuracy, Pareto front marked">' if has_png else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>edgec compare: {e(Path(report.meta['model']).name)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:nth-child(-n+3){{text-align:left}}
tr.bad{{color:#888}}img{{max-width:100%}}</style></head><body>
<h1>edgec compare: {e(Path(report.meta['model']).name)}</h1>
<p>{e(_settings(report))}</p>
{img}
<table><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(body)}
</tbody></table>
{f'<h2>Cells without a result</h2><ul>{probs}</ul>' if probs else ''}
{f'<h2>Notes</h2><ul>{notes}</ul>' if notes else ''}
<p>Full data: <a href="report.json">report.json</a>, <a href="report.md">report.md</a>.</p>
</body></html>
"""


def write_json(report, path: Path) -> None:
    from edgec.core.manifest import to_json
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(to_json(report.to_json()) + "\n")
    tmp.replace(path)


def write_all(report) -> None:
    out = report.out_dir
    out.mkdir(parents=True, exist_ok=True)
    has_png = plot(report, out / "pareto.png")
    report.files = {"json": str(out / "report.json"), "markdown": str(out / "report.md"),
                    "html": str(out / "index.html")}
    if has_png:
        report.files["png"] = str(out / "pareto.png")
    (out / "report.md").write_text(markdown(report))
    (out / "index.html").write_text(page(report, has_png))
    write_json(report, out / "report.json")
