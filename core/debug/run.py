"""`debug_artifact`: the layerwise comparison and the audit of one compiled artifact, as one JSON-ready dict."""
from __future__ import annotations

from pathlib import Path

import onnx

from edgec.core.data import Dataset
from edgec.core.errors import EdgecError, InputError


class Slice(Dataset):
    """`data` without its first `skip` samples: select on calib500[200:] when calib500[:200] calibrated."""

    def __init__(self, base: Dataset, skip: int):
        self.base, self.skip = base, skip
        self.source = f"{base.source}[{skip}:]"

    def __len__(self):
        return max(len(self.base) - self.skip, 0)

    @property
    def has_labels(self):
        return self.base.has_labels

    def __iter__(self):
        for i, s in enumerate(self.base):
            if i >= self.skip:
                yield s


def compiled_from(manifest: dict) -> onnx.ModelProto:
    """The FP32 model the artifact's quantizer saw, rebuilt from the manifest: the source, its recorded
    --input-shape, the optimizer (deterministic) when it ran, the opset conversion int8 made, and the
    node names the quantizer gives (so a layer's name here is one --keep-fp32 accepts)."""
    from edgec.core.model_io import load_model
    from edgec.core.quantization.graph import ensure_node_names
    from edgec.core.registry import get_backend

    src = manifest.get("source")
    if not src or not Path(src).is_file():
        raise InputError(f"the artifact's FP32 source {src!r} is not there; debug needs it (pass the model: "
                         "`edgec debug MODEL --backend ...`)")
    model = load_model(Path(src))
    if manifest.get("input_shapes"):
        from edgec.core.shapes import apply_input_shapes
        model = apply_input_shapes(model, manifest["input_shapes"])
    be = get_backend(manifest["backend"])
    if manifest.get("passes"):
        from edgec.core.optimizer import optimize
        model = optimize(model, opset_range=be.requirements.opset_range).model
    if manifest.get("precision") == "int8":
        from edgec.core.quantization.opset import prepare
        model, _, _ = prepare(model, be.quant_flavour(manifest.get("options") or {}))
    return ensure_node_names(model)


def debug_artifact(artifact_dir, data, *, threads: int | None = 1, samples: int | None = 16,
                   top: int = 5) -> dict:
    """Compare every tensor the artifact's backend can expose with FP32 on `data` (first `samples`)."""
    from edgec.core.manifest import read_manifest
    from edgec.core.registry import get_backend

    from .audit import audit_artifact
    from .compare import compare_layers, layer_ranking, tensor_ranking, worst
    from .layers import float_tensors

    artifact_dir = Path(artifact_dir)
    manifest = read_manifest(artifact_dir)
    be = get_backend(manifest["backend"])
    fp32 = compiled_from(manifest)
    data = data.take(samples) if samples else data
    out: dict = {"artifact": str(artifact_dir), "backend": be.name, "precision": manifest.get("precision"),
                 "source": manifest.get("source"), "data": getattr(data, "source", ""), "samples": len(data)}
    if manifest.get("compression"):
        out["note"] = "the artifact was compressed (pruned/clustered); the reference here is the uncompressed FP32"
    runner = None
    try:
        runner = be.intermediates(artifact_dir, manifest, float_tensors(fp32), threads)
        reason = None if runner is not None else f"backend '{be.name}' does not implement the intermediates hook"
    except EdgecError as e:
        reason = str(e)
    if runner is None:
        out.update(layers=[], exposure={"unavailable": reason})
    else:
        plain = None
        try:
            if be.available().can_run:
                plain = be.load(artifact_dir, manifest, threads=threads)
            rep = compare_layers(fp32, runner, data, threads=threads, plain=plain)
        finally:
            runner.close()
            if plain is not None:
                plain.close()
        out.update(layers=rep.layers, exposure=rep.exposure, not_exposed=len(rep.not_compared),
                   worst=[e["tensor"] for e in worst(rep.layers, top)], ranking=layer_ranking(rep.layers),
                   tensor_ranking=tensor_ranking(rep.layers))
    out["audit"] = audit_artifact(artifact_dir, manifest)
    return out


def format_layers(rep: dict, top: int = 5) -> str:
    from edgec.core.cli_common import table

    lines = [f"debug        {rep['artifact']} ({rep['backend']} {rep['precision']}), {rep['samples']} samples "
             f"from {rep['data']}"]
    exp = rep.get("exposure") or {}
    if "unavailable" in exp:
        lines.append(f"layers       not compared: {exp['unavailable']}")
    else:
        lines.append(f"layers       {exp.get('compared')} tensors compared ({rep.get('not_exposed', 0)} FP32 tensors "
                     f"not exposed by the runtime: fused away)")
        if "outputs_cosine_vs_artifact" in exp:
            lines.append(f"exposure     outputs with tensors exposed vs the artifact as compiled: cosine "
                         f"{exp['outputs_cosine_vs_artifact']:.6f} ({exp.get('note')})")

        def f(x, fmt):
            return "-" if x is None else format(x, fmt)
        def own(e):
            return "exact" if e.get("own_nmse") == 0 else f(e.get("own_sqnr_db"), ".1f")
        rows = [[e["tensor"], e["op"], f(e["cosine"], ".5f"), f(e["sqnr_db"], ".1f"), f(e["max_abs_err"], ".3g"),
                 own(e), e.get("layer") or "-"] for e in rep["layers"]]
        lines.append(table(rows, ["tensor", "op", "cosine", "SQNR dB", "max|err|", "own SQNR dB", "layer"]))
        worst_rows = [e for t in rep.get("worst", []) for e in rep["layers"] if e["tensor"] == t]
        if worst_rows:
            lines.append("largest own added error (lowest own SQNR): " + "; ".join(
                f"{e['tensor']} ({e['own_sqnr_db']} dB, layer {e.get('layer') or '-'})" for e in worst_rows[:top]))
    from .audit import format_audit
    lines.append(format_audit(rep["audit"]).splitlines()[0])
    return "\n".join(lines)
