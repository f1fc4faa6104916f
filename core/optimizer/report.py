"""The human-readable table `edgec optimize` prints."""
from __future__ import annotations


def _num(n) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def format_report(report: dict) -> str:
    cols = ("pass", "changes", "nodes", "inits", "params", "MACs", "bytes", "ms", "note")
    rows = [("(input)", "", *_stats(report["before"]), "", "")]
    for p in report["passes"]:
        note = f"ROLLED BACK: {p['reason']}" if p["rolled_back"] else ""
        rows.append((p["name"], str(p["changes"]), *_stats(p), f"{p['seconds'] * 1e3:.0f}", note))
    rows.append(("(output)", "", *_stats(report["after"]), "", ""))
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols[:-1])]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths)) + "  note"]
    for r in rows:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r[:-1], widths)) + "  " + r[-1])
    eq = report["equivalence"]
    if eq.get("ok") is None:
        lines.append(f"equivalence: not checked ({eq.get('reason', '')})")
    else:
        lines.append(
            f"equivalence: {'OK' if eq['ok'] else 'FAILED'}  max abs err {eq['max_abs_err']:.3g}"
            f" (output scale {eq['output_scale']:.3g}, {eq['samples']} random samples)"
        )
    if report.get("fusions"):
        counts: dict[str, int] = {}
        for f in report["fusions"]:
            counts[f["pattern"]] = counts.get(f["pattern"], 0) + 1
        lines.append("fusions: " + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())))
    if report.get("fallback"):
        lines.append(f"WARNING: {report['fallback']}")
    return "\n".join(lines)


def _stats(s: dict) -> tuple[str, ...]:
    return (str(s["nodes"]), str(s["initializers"]), _num(s["parameters"]), _num(s["macs"]),
            _num(s["bytes"]))
