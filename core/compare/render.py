"""The report's human forms: a markdown table, the latency-vs-accuracy plot, and an HTML page of both."""
from __future__ import annotations

import html
import os
from pathlib import Path

METRIC_LABEL = {"top1_accuracy": "top-1 accuracy (%)", "top1_agreement": "top-1 agreement with FP32 (%)",
                "cosine": "cosine similarity to FP32"}
COLUMNS = ("backend", "precision", "status", "top-1 acc", "agreement", "cosine", "median ms", "p90 ms", "runs",
           "speedup", "size MB", "weights ANS MB", "peak RSS MB", "compile s", "pareto")


def _pct(x):
    return "" if x is None else f"{100 * x:.1f}%"


def _ms(x):
    return "" if x is None else (f"{x:.2f}" if x >= 1 else f"{x:.3f}")


def _num(x, fmt):
    return "" if x is None else format(x, fmt)


def cells(row: dict) -> list[str]:
    name = (f"{row['model']}: " if row.get("model") else "") + row["backend"] + (" (ref)" if row["reference"] else "")
    status = row["status"] + (" (reused)" if row["reused"] and row["status"] == "ok" else "")
    agreement = _pct(row["top1_agreement"])
    if row["top1_agreement"] is None and row["cosine"] is not None and "random inputs" in (row.get("validated_on") or ""):
        agreement = "n/a: random inputs"
    # Cached cells carry the compile time of the run that built them: say so, it is not this run's cost.
    compile_s = _num(row["compile_seconds"], ".1f") + (" (cached)" if row["reused"] and row["compile_seconds"] is not None else "")
    prec = row["precision"] + (f" {row['variant']}" if row.get("variant") else "")
    return [name, prec, status, _pct(row["top1_accuracy"]), agreement,
            _num(row["cosine"], ".5f"), _ms(row["latency_ms_median"]), _ms(row["latency_ms_p90"]),
            _num(row.get("latency_runs"), "d"),
            _speedup(row),
            "" if row["size_bytes"] is None else f"{row['size_bytes'] / 1e6:.2f}",
            "" if row.get("weights_ans_bytes") is None else f"{row['weights_ans_bytes'] / 1e6:.3f}",
            "" if row.get("peak_rss_bytes") is None else f"{row['peak_rss_bytes'] / 1e6:.0f}",
            compile_s, "*" if row["pareto"] else ""]


def _speedup(row: dict) -> str:
    if row["speedup_vs_reference"] is None:
        return ""
    ci = row.get("speedup_ci95")
    return f"{row['speedup_vs_reference']:.2f}x" + (f" ±{(ci[1] - ci[0]) / 2:.2f}" if ci and not row["reference"] else "")


def _problems(report) -> list[str]:
    return [f"{r['backend']} {r['precision']}: {r['status']}: {r['error']}" for r in report.rows if r["error"]]


def _settings(report) -> str:
    m, b = report.meta, report.meta["benchmark"]
    where = "; ".join(f"timed on {g['node']} ({g['node_type']})" for g in b.get("groups") or [])
    return (f"{Path(m['model']).name}; latency: >= {b['runs']} interleaved runs and >= {b.get('min_seconds', 0):g} s after "
            f"{b['warmup']} warm-up, threads={b['threads']}, input: {b['input']}; speedup vs onnxruntime fp32 from the "
            f"same run" + (f" on the same node; {where}" if where else "")
            + "; compile s marked (cached) is the earlier run's build, reused here")


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
LABEL_PT = 8.0
_BOX = dict(boxstyle="square,pad=0.1", fc="white", ec="none", alpha=0.8)  # readable over grid and front lines


def _overlapping(boxes) -> bool:
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def _place_labels(fig, ax, labels) -> None:
    """adjustText (a maintained force-directed placer) when installed, checked afterwards; when it leaves
    any two labels overlapping, or is missing, a column of labels in the right margin with leader lines,
    one line per label in y order: a layout in which labels cannot overlap at all."""
    renderer = fig.canvas.get_renderer()
    try:
        from adjustText import adjust_text
    except ImportError:
        adjust_text = None
    if adjust_text is not None:
        texts = [ax.text(x, y, t, fontsize=LABEL_PT, zorder=4, bbox=_BOX) for t, x, y in labels]
        try:
            adjust_text(texts, x=[x for _, x, _ in labels], y=[y for _, _, y in labels], ax=ax,
                        arrowprops=dict(arrowstyle="-", color="grey", lw=0.6), expand=(1.15, 1.4),
                        ensure_inside_axes=True, time_lim=3)
            fig.canvas.draw()
            boxes = [t.get_window_extent(renderer) for t in texts]
            axes_box = ax.get_window_extent(renderer)
            inside = all(axes_box.x0 - 1 <= b.x0 and b.x1 <= axes_box.x1 + 1 and axes_box.y0 - 1 <= b.y0
                         and b.y1 <= axes_box.y1 + 1 for b in boxes)
            if inside and not _overlapping(boxes):
                return
        except Exception:  # a placer failure must not lose the plot: the column layout below always works
            pass
        for t in texts:
            t.remove()
        for p in list(ax.patches) + [c for c in ax.get_children() if type(c).__name__ == "Annotation"]:
            try:
                p.remove()
            except Exception:
                pass
    _column_labels(fig, ax, labels)


def _column_labels(fig, ax, labels) -> None:
    fig.subplots_adjust(right=0.64)
    leg = ax.get_legend()
    if leg is not None:  # the leader lines run right: keep the legend out of their way
        leg.set_loc("lower left")
    order = sorted(range(len(labels)), key=lambda i: (-labels[i][2], labels[i][1]))
    n = max(len(labels), 1)
    size = min(LABEL_PT, max(4.5, 0.78 * 72 * ax.get_window_extent().height / fig.dpi / n))
    step = 1.0 / n
    for rank, i in enumerate(order):
        text, x, y = labels[i]
        ty = 1 - step * (rank + 0.5)
        ax.annotate(text, (x, y), xycoords="data", xytext=(1.02, ty), textcoords="axes fraction", fontsize=size,
                    va="center", ha="left", annotation_clip=False, bbox=_BOX,
                    arrowprops=dict(arrowstyle="-", color="grey", lw=0.5, shrinkA=0, shrinkB=3))


def plot(report, path: Path) -> bool:
    """Write pareto.png; False (and a note) when matplotlib is missing or nothing was timed."""
    try:
        from edgec.core.sandbox import pyplot
        plt = pyplot()
    except ImportError:
        report.meta["notes"].append("pareto.png not written: matplotlib is missing; pip install 'edgec[plot]'")
        return False
    metric = report.meta.get("accuracy_metric")
    pts = [r for r in report.rows if r["status"] == "ok" and r["latency_ms_median"] is not None]
    scale = 1.0 if metric == "cosine" else 100.0
    fig, ax = plt.subplots(figsize=(11, 6), dpi=120)
    labels = []
    if metric and pts:
        multi = len({r.get("model") for r in pts}) > 1
        backends = sorted({r["backend"] for r in pts})
        colours = {b: plt.get_cmap("tab10")(i % 10) for i, b in enumerate(backends)}
        xs = [r["latency_ms_median"] for r in pts]
        ys = [r[metric] * scale for r in pts]
        pad = max((max(ys) - min(ys)) * 0.25, 0.5 if scale == 100 else 1e-4)
        ax.set_ylim(min(ys) - pad, max(ys) + pad)
        ax.set_xlim(0, max(xs) * 1.4)
        for r, x, y in zip(pts, xs, ys):
            ax.scatter(x, y, s=120 if r["pareto"] else 60, marker=MARKERS.get(r["precision"], "o"),
                       color=colours[r["backend"]], edgecolors="black" if r["pareto"] else "none", linewidths=1.5,
                       zorder=3)
            label = (f"{r['model']} " if multi else "") + f"{r['backend']} {r['precision']}" \
                + (f" {r['variant']}" if r.get("variant") else "") + (" (ref)" if r["reference"] else "")
            if r["speedup_vs_reference"] is not None and not r["reference"]:
                label += f" {r['speedup_vs_reference']:.2f}x"
            if r.get("label_note"):
                label += f"  {r['label_note']}"
            labels.append((label, x, y))
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
    if labels:  # after the layout: the placer works in the final axes coordinates
        _place_labels(fig, ax, labels)
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
