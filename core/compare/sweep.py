"""`edgec.compare`: compile every (backend, precision) cell, validate it on its own runtime, time all
cells interleaved, and write report.json / report.md / pareto.png / index.html.

A failing cell becomes a row with its status and one-line error, never an aborted sweep. Cells whose
inputs are unchanged since the last run reuse their artifacts (see `cache.py`), so a sweep resumes.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from edgec.core import progress
from edgec.core.backend import PRECISIONS
from edgec.core.benchmark.stats import interval
from edgec.core.compare import cache
from edgec.core.compare.bench import first_line
from edgec.core.compare.cell import CellJob, cell_resources
from edgec.core.compare.executor import TimingCell, merge_timing, open_executor
from edgec.core.errors import InputError
from edgec.core.version import __version__

REFERENCE = ("onnxruntime", "fp32")

# Every row carries every key (None where it does not apply), so scripts and tables never special-case.
ROW_KEYS = ("backend", "precision", "variant", "status", "error", "reference", "reused", "top1_accuracy", "top1_agreement",
            "cosine", "validation_samples", "validated_on", "latency_ms_median", "latency_ms_p90", "latency_runs",
            "speedup_vs_reference", "speedup_ci95", "size_bytes", "weights_ans_bytes", "peak_rss_bytes", "memory_increment_bytes", "compile_seconds",
            "artifact", "pareto", "compiled_on", "timed_on")
# ok: compiled, validated, timed. failed_validation: compiled but outside the cosine threshold (metrics, no
# artifact). error: compile/load/benchmark raised. unavailable: backend missing here. unsupported: precision.
STATUSES = ("ok", "failed_validation", "error", "unavailable", "unsupported")


@dataclass
class CompareReport:
    """What `edgec.compare` returns: `rows` (one dict per cell, keys ROW_KEYS) plus run settings."""

    meta: dict
    rows: list[dict]
    out_dir: Path
    files: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {**self.meta, "cells": self.rows, "files": self.files}

    def row(self, backend: str, precision: str, variant: str | None = None) -> dict | None:
        return next((r for r in self.rows if r["backend"] == backend and r["precision"] == precision
                     and r["variant"] == variant), None)

    @property
    def ok(self) -> list[dict]:
        return [r for r in self.rows if r["status"] == "ok"]

    @property
    def pareto(self) -> list[dict]:
        """Cells no other cell beats on both latency and accuracy, fastest first."""
        return sorted((r for r in self.rows if r["pareto"]), key=lambda r: r["latency_ms_median"])

    def markdown(self) -> str:
        from edgec.core.compare.render import markdown
        return markdown(self)


@dataclass
class _Cell:
    backend: str
    precision: str
    reference: bool = False
    added: bool = False
    status: str = "pending"
    error: str | None = None
    reused: bool = False
    artifact: Path | None = None
    manifest: dict | None = None
    validation: dict | None = None
    compile_seconds: float | None = None
    latency: Any = None
    memory: dict | None = None
    resources: dict = field(default_factory=dict)
    compiled_on: str | None = None
    timed_on: str | None = None  # "node type @ node": speedups only against the reference timed on the same node
    ref_ms: float | None = None
    ref_blocks: list[float] | None = None
    # A variant of the backend x precision cell (edgec auto's candidates): its name suffix and the compile
    # keyword arguments it adds (calib_method, max_drop, compression, backend options merged over the sweep's).
    variant: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.backend}-{self.precision}" + (f"-{self.variant}" if self.variant else "")

    def compile_kwargs(self, options: Mapping[str, Mapping[str, Any]]) -> dict:
        extra = dict(self.extra)
        opts = {**options.get(self.backend, {}), **extra.pop("options", {})}
        return {**extra, "options": opts or None}


def _split(items) -> list[str]:
    if items is None:
        return []
    if isinstance(items, str):
        items = items.split(",")
    return [s.strip() for s in items if s and s.strip()]


def _plan(backends: Sequence[str], precisions: Sequence[str], variants: Sequence[Mapping] | None = None
          ) -> tuple[list[_Cell], bool]:
    if variants is not None:
        cells = [_Cell(v["backend"], v["precision"], variant=v.get("variant"), extra=dict(v.get("compile") or {}))
                 for v in variants]
    else:
        cells = [_Cell(b, p) for b in backends for p in precisions]
    ref = next((c for c in cells if (c.backend, c.precision) == REFERENCE and not c.extra), None)
    added = ref is None
    if added:
        ref = _Cell(*REFERENCE, added=True)
        cells.insert(0, ref)
    ref.reference = True
    return cells, added


def _screen(cell: _Cell, executor, threads, model_bytes: int) -> None:
    """Mark cells that cannot be compiled here (unknown/unavailable backend, unsupported precision); a
    backend that builds here but runs only elsewhere passes when the executor can place it there."""
    from edgec.core.registry import get_backend

    try:
        be = get_backend(cell.backend)
    except Exception as e:
        cell.status, cell.error = "unavailable", first_line(e)
        return
    cell.resources = cell_resources(be, threads, model_bytes)
    av = be.available()
    if not av.ok:
        cell.status = "unavailable"
        cell.error = f"backend '{be.name}' is not available: {av.reason}" + (f"; fix: {av.hint}" if av.hint else "")
    elif not av.can_run and not (cell.resources["custom"] and executor.offers(cell.resources["custom"])):
        cell.status = "unavailable"
        cell.error = f"backend '{be.name}' can build here but not run: {av.reason}" + (f"; fix: {av.hint}" if av.hint else "")
    elif cell.precision not in be.requirements.precisions:
        cell.status = "unsupported"
        cell.error = (f"backend '{be.name}' does not support precision '{cell.precision}' "
                      f"(supported: {', '.join(be.requirements.precisions)})")


def _bench_feeds(model_path: Path, validation, calibration, preprocess) -> tuple[dict, str]:
    """One input for timing: the first validation (else calibration) sample, else seeded random."""
    import numpy as np

    from edgec.core.stages import open_data
    from edgec.core.model_io import input_specs, load_model, random_feeds

    model = load_model(model_path, check=False)
    for data, what in ((validation, "validation"), (calibration, "calibration")):
        if data is None:
            continue
        try:
            ds = open_data(data, model, preprocess, what)
            return next(iter(ds)).feeds, f"first {what} sample"
        except Exception:  # bad data is each cell's error to report; timing can use any valid input
            continue
    return random_feeds(input_specs(model), np.random.default_rng(0)), "seeded random input"


def _size(manifest: dict | None) -> int | None:
    files = (manifest or {}).get("files")
    return sum(int(f.get("size", 0)) for f in files.values()) if files else None


def _ans(manifest: dict | None) -> int | None:
    """The weights entropy-coded (ANS; core/compression/entropy.py): what compression shrinks, since the
    runtimes' files stay dense."""
    w = (((manifest or {}).get("size") or {}).get("weights")) or {}
    return w.get("ans_bytes")


def compare(model, backends: Iterable[str] | str | None = None, precisions: Iterable[str] | str = PRECISIONS, *,
            output, calibration=None, validation=None, preprocess: str | None = None,
            calib_samples: int | None = None, val_samples: int | None = None, calib_method: str | None = None,
            options: Mapping[str, Mapping[str, Any]] | None = None, min_cosine: float | None = None,
            threads: int | None = 1, runs: int = 50, warmup: int = 5, min_seconds: float = 1.0, force: bool = False,
            write: bool = True, memory: bool = True, cells: Sequence[Mapping] | None = None, executor="local",
            ray_address: str | None = None, compress: Sequence[str] | str | None = None) -> CompareReport:
    """Compile, validate and time `model` on every backend x precision; write the report into `output`.

    backends: names, or None for every registered backend (unavailable ones get a row saying why).
    options: per-backend options, e.g. {"openvino": {"device": "CPU"}}.
    threads: the one thread count every cell is validated and timed with (1 = comparable on shared hosts).
    force: recompile every cell even when a cached artifact matches.
    runs: timed runs per cell at least; min_seconds: rounds go on until the timing loop has run this long, so
    sub-millisecond cells get thousands of runs and their p90 is a percentile, not one preemption.
    memory: measure each timed cell's peak RSS in a fresh child process (edgec.core.benchmark.memory).
    executor: "local" (this process), "ray" (a Ray cluster: ray_address "auto"/HOST:PORT, or a private
    loopback one), or an executor object the caller owns (see core/compare/executor.py).
    Speedups are relative to onnxruntime fp32 timed in the same run on the same node; it is added when not
    requested.
    cells: instead of the backends x precisions grid, these cells: dicts {"backend", "precision", "variant"
    (a unique name suffix), "compile" (extra edgec.compile kwargs)}; `edgec auto` sweeps its candidates so.
    compress: compression SPECs ("prune=0.5", "cluster=16", "prune=0.5,cluster=16"; see
    core/compare/compression_axis.py): every cell once more per SPEC, compiled with those steps.
    """
    from edgec.core.model_io import sha256_file

    model_path = Path(model) if not hasattr(model, "graph") else None
    if model_path is None:
        raise InputError("edgec.compare needs a model file path (the artifacts' validation refers back to it); "
                         "save the ModelProto with onnx.save first")
    if not model_path.is_file():
        raise InputError(f"model file not found: {model_path} (check the path)")
    precs = _split(precisions) or list(PRECISIONS)
    bad = [p for p in precs if p not in PRECISIONS]
    if bad:
        raise InputError(f"unknown precision '{bad[0]}' (choose from {', '.join(PRECISIONS)})")
    if cells is None and (backends is None or backends == "all"):
        import edgec
        names = [r["name"] for r in edgec.list_backends()]
    elif cells is None:
        names = _split(backends)
    if compress:
        from edgec.core.compare.compression_axis import grid_with_variants

        specs = [compress] if isinstance(compress, str) else list(compress)
        cells = grid_with_variants(names if cells is None else [], precs, specs, base_cells=cells)
    if cells is not None:
        names = list(dict.fromkeys(c["backend"] for c in cells))
        precs = list(dict.fromkeys(c["precision"] for c in cells))
    if not names:
        raise InputError("no backends to compare; pass --backends a,b (see `edgec backends`)")
    if runs < 1 or warmup < 0:
        raise InputError(f"--runs must be >= 1 and --warmup >= 0 (got {runs}, {warmup})")
    options = {k: dict(v) for k, v in (options or {}).items()}
    unknown = sorted(set(options) - set(names) - {REFERENCE[0]})
    if unknown:
        raise InputError(f"options given for backend '{unknown[0]}', which is not compared (backends: {', '.join(names)})")

    out_dir = Path(output)
    art_root = out_dir / "artifacts"
    art_root.mkdir(parents=True, exist_ok=True)
    variants = cells
    cells, ref_added = _plan(list(dict.fromkeys(names)), list(dict.fromkeys(precs)), variants)

    progress.say(f"compare: fingerprinting model and data for {len(cells)} cells")
    common = {
        "edgec_version": __version__,
        "model_sha256": sha256_file(model_path),
        "calibration": cache.data_fingerprint(calibration),
        "validation": cache.data_fingerprint(validation),
        "preprocess": preprocess,
        "calib_samples": calib_samples,
        "calib_method": calib_method,
        "val_samples": val_samples,
        "min_cosine": min_cosine,
    }

    ex, owned = open_executor(executor, ray_address)
    try:
        # Absolute paths: a job may run in another process or on another node, whose working directory differs.
        jobs = _jobs(cells, ex, common, options, model_path, art_root, force=force, threads=threads,
                     compile_args=dict(calibration=_absolute(calibration), validation=_absolute(validation),
                                       preprocess=preprocess,
                                       calib_samples=calib_samples, calib_method=calib_method,
                                       val_samples=val_samples, min_cosine=min_cosine, threads=threads))
        by_name = {c.name: c for c in cells}
        for out in ex.compile(jobs):
            c = by_name[out.name]
            c.status, c.error, c.manifest = out.status, out.error, out.manifest
            c.validation, c.compile_seconds, c.compiled_on = out.validation, out.compile_seconds, out.node

        feeds, feeds_from = _bench_feeds(model_path, validation, calibration, preprocess)
        groups = ex.time([TimingCell(c.name, c.backend, str(c.artifact), c.resources.get("custom", {}))
                          for c in cells if c.status == "ok"], feeds,
                         threads=threads, runs=runs, warmup=warmup, memory=memory, min_seconds=min_seconds)
        _apply_timing(cells, groups)
        executor_meta = ex.describe()
    finally:
        if owned:
            ex.close()

    meta = {
        "edgec_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": str(model_path.resolve()),
        "model_sha256": common["model_sha256"],
        "backends": names,
        "precisions": precs,
        "reference": {"backend": REFERENCE[0], "precision": REFERENCE[1], "added": ref_added},
        "calibration": None if calibration is None else str(calibration),
        "validation": None if validation is None else str(validation),
        "preprocess": preprocess,
        "calib_samples": calib_samples,
        "val_samples": val_samples,
        "benchmark": {"threads": threads, "runs": runs, "min_seconds": min_seconds, "warmup": warmup,
                      "input": feeds_from,
                      "order": "interleaved round-robin, rotating start",
                      "memory": ("peak RSS of a fresh child per cell over load + 10 runs; increment over a child "
                                 "that imported the same runtime") if memory else None,
                      "groups": [{"node_type": g.node_type, "node": g.node, "cells": sorted(g.results)}
                                 for g in groups]},
        "executor": executor_meta,
        "notes": [],
    }
    if ref_added:
        meta["notes"].append("onnxruntime fp32 was not requested; it was added as the speedup reference")
    rows = _rows(cells)
    metric = _mark_pareto(rows)
    meta["accuracy_metric"] = metric
    ref_acc = next((c.validation.get("reference_top1_accuracy") for c in cells
                    if c.validation and c.validation.get("reference_top1_accuracy") is not None), None)
    meta["reference_top1_accuracy"] = ref_acc
    ref_row = rows[[c.reference for c in cells].index(True)]
    if ref_row["latency_ms_median"] is None:
        meta["notes"].append(f"no speedups: the reference cell onnxruntime fp32 has no latency ({ref_row['status']})")
    report = CompareReport(meta, rows, out_dir)
    if write:
        from edgec.core.compare.render import write_all
        write_all(report)
    return report


def _jobs(cells: list[_Cell], ex, common: dict, options: dict, model_path: Path, art_root: Path, *, force: bool,
          threads, compile_args: dict) -> list[CellJob]:
    """Screen every cell, reuse cached outcomes, and turn the rest into jobs for the executor."""
    model_bytes = model_path.stat().st_size
    jobs = []
    for i, cell in enumerate(cells, 1):
        tag = f"compare [{i}/{len(cells)}] {cell.backend} {cell.precision}"
        _screen(cell, ex, threads, model_bytes)
        if cell.status != "pending":
            progress.say(f"{tag}: {cell.status}: {cell.error}")
            continue
        cell.artifact = art_root / cell.name
        inputs = {**common, "backend": cell.backend, "precision": cell.precision,
                  "options": options.get(cell.backend, {}), "toolchain": cache.toolchain_key(cell.backend)}
        if cell.extra:
            inputs["extra"] = cell.extra
        key = cache.cell_key(inputs)
        hit = None if force else cache.lookup(cell.artifact, key)
        if hit is not None:
            cell.reused = True
            cell.status, cell.error = hit["status"], hit.get("error")
            cell.manifest = hit.get("manifest")
            cell.validation = (cell.manifest or {}).get("validation") or hit.get("validation")
            cell.compile_seconds = (cell.manifest or {}).get("compile_seconds", hit.get("compile_seconds"))
            cell.compiled_on = hit.get("compiled_on")
            progress.say(f"{tag}: reusing {'artifact' if cell.status == 'ok' else 'cached result'} ({cell.status})")
            continue
        jobs.append(CellJob(cell.name, cell.backend, cell.precision, str(cell.artifact.resolve()), key, inputs,
                            {"model": str(model_path.resolve()), **compile_args, **cell.compile_kwargs(options)},
                            cell.resources))
    return jobs


def _absolute(data):
    return str(Path(data).resolve()) if isinstance(data, (str, Path)) and Path(data).exists() else data


def _apply_timing(cells: list[_Cell], groups) -> None:
    chosen = merge_timing(groups)
    ref = next(c for c in cells if c.reference)
    for c in cells:
        if c.name not in chosen:
            continue
        g, res = chosen[c.name]
        if res["error"]:
            c.status, c.error = "error", res["error"]
        c.latency, c.memory = res["latency"], res["memory"]
        where = res.get("where") or "host"
        c.timed_on = (g.node if g.node_type == g.node else f"{g.node_type} @ {g.node}") + (
            "" if where == "host" else f" ({where})")
        ref_res = g.results.get(ref.name) or {}
        # A speedup is a ratio of two latencies from the same hardware: a simulator's or an emulated board's
        # latency gets none against the host reference (and stays off the Pareto front, see _mark_pareto).
        ref_lat = ref_res.get("latency") if (ref_res.get("where") or "host") == where else None
        c.ref_ms = ref_lat.median_ms if ref_lat else None
        c.ref_blocks = ref_lat.block_medians_ms if ref_lat else None


def _rows(cells: list[_Cell]) -> list[dict]:
    rows = []
    for c in cells:
        v = c.validation or {}
        lat = c.latency
        # A handful of random inputs gives an agreement of 87.5 % for one flipped sample: not an accuracy.
        agree_ok = not v.get("random_inputs")
        rows.append({
            "backend": c.backend, "precision": c.precision, "variant": c.variant, "status": c.status, "error": c.error,
            "reference": c.reference, "reused": c.reused,
            "top1_accuracy": v.get("top1_accuracy") if agree_ok else None,
            "top1_agreement": v.get("top1_agreement") if agree_ok else None,
            "cosine": v.get("cosine"), "validation_samples": v.get("samples"),
            "validated_on": _validated_on(v) if v else None,
            "latency_ms_median": lat.median_ms if lat else None, "latency_ms_p90": lat.p90_ms if lat else None,
            "latency_runs": lat.runs if lat else None,
            "speedup_vs_reference": (c.ref_ms / lat.median_ms) if (lat and c.ref_ms) else None,
            "speedup_ci95": _speedup_ci(c),
            "size_bytes": _size(c.manifest) if c.status == "ok" else None,
            "weights_ans_bytes": _ans(c.manifest) if c.status == "ok" else None,
            "peak_rss_bytes": (c.memory or {}).get("peak_rss_bytes"),
            "memory_increment_bytes": (c.memory or {}).get("increment_bytes"),
            "compile_seconds": c.compile_seconds,
            "artifact": str(c.artifact.resolve()) if c.status == "ok" and c.artifact else None,
            "pareto": False, "compiled_on": c.compiled_on, "timed_on": c.timed_on,
        })
    return rows


def _speedup_ci(c: _Cell) -> list[float] | None:
    """The speedup's 95 % interval from paired block medians (the method `edgec benchmark` states), so a
    ratio from compare and one from benchmark can be checked against each other's noise."""
    mine = c.latency.block_medians_ms if c.latency else None
    if not (mine and c.ref_blocks and c.ref_ms) or len(mine) != len(c.ref_blocks):
        return None
    return interval(c.ref_ms / c.latency.median_ms, [r / m for r, m in zip(c.ref_blocks, mine)])


def _validated_on(v: dict) -> str:
    what = v.get("data") or "?"
    if v.get("random_inputs"):
        what += " (no --val: cosine only; agreement on random inputs is not shown)"
    if v.get("on_calibration_data"):
        what += " (calibration data: no --val)"
    return what


def accuracy_metric(rows: list[dict]) -> str | None:
    """The y-axis: labelled top-1 when every timed cell has it, else agreement with FP32, else cosine."""
    timed = [r for r in rows if r["status"] == "ok" and r["latency_ms_median"] is not None]
    for key in ("top1_accuracy", "top1_agreement", "cosine"):
        if timed and all(r[key] is not None for r in timed):
            return key
    return None


def _mark_pareto(rows: list[dict]) -> str | None:
    metric = accuracy_metric(rows)
    if metric is None:
        return None
    ref_node = next((r.get("timed_on") for r in rows if r.get("reference")), None)
    # Only latencies from the node that timed the reference are compared (one host per ratio).
    pts = [r for r in rows if r["status"] == "ok" and r["latency_ms_median"] is not None
           and r.get("timed_on") == ref_node]
    for r in pts:
        lat, acc = r["latency_ms_median"], r[metric]
        r["pareto"] = not any(o is not r and o["latency_ms_median"] <= lat and o[metric] >= acc
                              and (o["latency_ms_median"] < lat or o[metric] > acc) for o in pts)
    return metric
