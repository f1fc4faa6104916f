"""The precision audit: each backend's `audit` rows (what its runtime executes per compute layer) in one
shape, and the line a person reads first: "87 of 92 conv/gemm layers run INT8; 5 float: <names> (why)".

The rows come from the runtime (ORT's optimized graph, OpenVINO's execution graph, the .tflite's tensor
types, QNN's graph assignment, ...), never from the quantizer's intentions; this module only counts.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Mapping

from edgec.core.errors import EdgecError

INTEGER = ("int8", "int16", "uint8", "uint16", "int4")
MAX_NAMES = 8


def is_integer(precision: str | None) -> bool:
    return bool(precision) and precision.split()[0] in INTEGER


def summary_line(rows: list[dict], backend: str = "") -> str:
    if not rows:
        return f"{backend or 'this backend'}: no conv/gemm layer found in the artifact"
    ints = [r for r in rows if is_integer(r.get("precision"))]
    kinds = sorted({r["precision"].split()[0].upper() for r in ints}) or ["INT8"]
    rest = [r for r in rows if not is_integer(r.get("precision"))]
    line = f"{len(ints)} of {len(rows)} conv/gemm layers run {'/'.join(kinds)}"
    if not rest:
        return line
    groups: OrderedDict[str, list[str]] = OrderedDict()
    for r in rest:
        groups.setdefault(f"{r.get('precision')}: {r.get('why') or 'no reason given by the runtime'}", []).append(r["name"])
    parts = []
    for why, names in groups.items():
        shown = ", ".join(names[:MAX_NAMES]) + (f", ... {len(names) - MAX_NAMES} more" if len(names) > MAX_NAMES else "")
        parts.append(f"{shown} ({why})")
    return f"{line}; {len(rest)} not integer: " + "; ".join(parts)


def audit_artifact(artifact_dir, manifest: Mapping | None = None) -> dict:
    """{"backend", "layers": rows, "summary": line} for a compiled artifact, or {"unavailable": why}."""
    from edgec.core.manifest import read_manifest
    from edgec.core.registry import get_backend

    artifact_dir = Path(artifact_dir)
    manifest = manifest or read_manifest(artifact_dir)
    be = get_backend(manifest["backend"])
    try:
        rows = be.audit(artifact_dir, manifest)
    except EdgecError as e:
        return {"backend": be.name, "unavailable": str(e)}
    if rows is None:
        return {"backend": be.name, "unavailable": f"backend '{be.name}' does not implement the audit hook"}
    return {"backend": be.name, "precision": manifest.get("precision"), "layers": rows,
            "summary": summary_line(rows, be.name)}


def format_audit(audit: dict) -> str:
    if "unavailable" in audit:
        return f"audit        {audit['unavailable']}"
    lines = [f"audit        {audit['summary']}"]
    from edgec.core.cli_common import table
    rows = [[r["name"], r["op"], r.get("precision"), r.get("kernel") or "-", r.get("why") or ""] for r in audit["layers"]]
    lines.append(table(rows, ["layer", "op", "runs", "kernel", "why"]))
    return "\n".join(lines)


def inspect_artifact(path, as_json: bool) -> int:
    """`edgec inspect ARTIFACT`: the audit, read from the runtime now (the manifest's copy is from compile)."""
    from edgec.core.cli_common import dump
    from edgec.core.manifest import read_manifest
    from edgec.core.verify import verify_files

    manifest = read_manifest(Path(path))
    verify_files(Path(path), manifest)
    audit = audit_artifact(path, manifest)
    if as_json:
        dump(audit)
    else:
        print(f"artifact     {path} ({manifest.get('backend')} {manifest.get('precision')})")
        print(format_audit(audit))
    return 0


def audit_stage(c) -> None:
    """Compile stage: the manifest's `audit`, read from the staged artifact on its runtime. An audit that
    cannot be read is recorded as such; it never fails a validated compile."""
    from edgec.core.errors import EdgecError as _E

    be = c.backend
    if not hasattr(be, "audit"):
        return
    try:
        rows = be.audit(c.staging, c.manifest)
    except _E as e:
        c.manifest["audit"] = {"unavailable": str(e)}
        return
    except Exception as e:  # noqa: BLE001 - a runtime that cannot report its graph: say so, keep the artifact
        c.manifest["audit"] = {"unavailable": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}
        return
    if rows is None:
        c.manifest["audit"] = {"unavailable": f"backend '{be.name}' does not implement the audit hook"}
        return
    c.manifest["audit"] = {"summary": summary_line(rows, be.name), "layers": rows}
