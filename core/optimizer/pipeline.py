"""The pass manager: runs registered passes in order, measuring, verifying and rolling back.

Each pass works on an onnx-ir Model in place. Before a pass runs, the model is cloned (onnx-ir
clones share tensors, and passes never edit a tensor in place, so this is O(nodes)). If the pass
raises, or its result fails onnx.checker or numerical equivalence with the *original* model, the
clone is restored and the pass is reported with `rolled_back: true` and the reason.

Checking after every pass costs one model serialization and onnxruntime session each (seconds
for a VGG-sized model), so by default only the final model is checked, and the per-pass checks
run only when that final check fails (see `optimize`).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Union

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import TopologicalSortPass

from edgec.core.errors import InputError
from edgec.core.graph_stats import model_stats
from edgec.core.optimizer.registry import PassContext, get_pass
from edgec.core.optimizer.verify import LARGE_MODEL_BYTES, Comparison, ModelFile, Verifier, weight_bytes

# Folds first (they need unshared weights), then a second clean-up round, then CSE (which may
# make weights shared), then shapes for the final model and the fusion annotations.
DEFAULT_PIPELINE = (
    "version_conversion",
    "normalize",
    "shape_inference",
    "constant_folding",
    "noop_removal",
    "dead_code",
    "fold_pad",
    "fold_batchnorm",
    "fold_mul_add",
    "matmul_add_to_gemm",
    "constant_folding",
    "noop_removal",
    "cse",
    "dead_code",
    "opset_downgrade",
    "shape_inference",
    "fusion_annotation",
)

ModelInput = Union[onnx.ModelProto, ir.Model, str, os.PathLike]


@dataclass
class OptimizeResult:
    ir_model: ir.Model
    report: dict
    large: bool = False
    _proto: onnx.ModelProto | None = field(default=None, repr=False)

    @property
    def model(self) -> onnx.ModelProto:
        """The optimized model as a ModelProto, weights in memory (for large models use `save`)."""
        if self._proto is None:
            self._proto = ir.serde.serialize_model(self.ir_model)
        return self._proto

    def save(self, path: str | os.PathLike, external_data: str | None = None) -> None:
        """Write the model; weights go to `<name>.data` beside it when the model is large.

        Do not overwrite the external-data file the input model was loaded from (its tensors are
        read lazily from there); write to a new path.
        """
        if external_data is None and self.large:
            external_data = os.path.basename(os.fspath(path)) + ".data"
        model = self.ir_model
        if external_data is None:
            model = ir.external_data.load_to_model(model)
        ir.save(model, path, external_data=external_data)


def _load(model: ModelInput, base_dir: str | None) -> ir.Model:
    if isinstance(model, ir.Model):
        return model.clone()
    if isinstance(model, onnx.ModelProto):
        m = ir.serde.deserialize_model(model)
        if base_dir is not None:
            ir.external_data.set_base_dir(m.graph, base_dir)
        return m
    if isinstance(model, (str, os.PathLike)):
        if not os.path.exists(model):
            raise InputError(f"model file {os.fspath(model)!r} not found; pass an existing .onnx path")
        return ir.load(model)  # external data stays on disk until a pass reads it
    raise InputError(f"cannot optimize a {type(model).__name__}; pass an onnx.ModelProto or a path")


def _pipeline(passes: list[str] | None, skip: Iterable[str]) -> list[str]:
    names = list(DEFAULT_PIPELINE if passes is None else passes)
    skipped = set(skip)
    for name in names + sorted(skipped):
        get_pass(name)  # unknown names fail early, with the list of known ones
    return [n for n in names if n not in skipped]


def _eq(c: Comparison | None, samples: int) -> dict:
    if c is None:
        return {"max_abs_err": None, "output_scale": None, "ok": None, "samples": 0,
                "reason": "verification disabled"}
    nan = c.max_abs_err != c.max_abs_err
    return {"max_abs_err": None if nan else c.max_abs_err, "output_scale": c.output_scale,
            "ok": c.ok if not nan or not c.ok else None, "samples": samples if not nan else 0,
            "reason": c.reason}


def _run_passes(names, work, opset_range, before, verifier, say):
    """Run `names` on `work`; with a verifier, check after each pass that changed numerics."""
    ctx = PassContext(opset_range=opset_range)
    entries: list[dict] = []
    stats = before
    for name in names:
        info = get_pass(name)
        snapshot = work.clone()
        fusions = list(ctx.fusions)
        t0 = time.perf_counter()
        changes, reason, rolled_back = 0, "", False
        try:
            out = info.fn(work, ctx)
            if isinstance(out, tuple):
                work, changes = out
            else:
                changes = int(out or 0)
        except Exception as e:  # noqa: BLE001 - a buggy pass must not sink the compile
            reason, rolled_back = f"raised {type(e).__name__}: {e}", True
        if not rolled_back and changes and info.changes_numerics and verifier is not None:
            cmp = verifier.check(work, samples=1)  # the final check uses all samples
            if not cmp.ok:
                reason, rolled_back = cmp.reason, True
        if rolled_back:
            work, ctx.fusions = snapshot, fusions
            changes = 0
        elif changes:
            stats = model_stats(work)
        entries.append({"name": name, "applied": bool(changes), "changes": int(changes),
                        "rolled_back": rolled_back, "reason": reason,
                        "seconds": round(time.perf_counter() - t0, 4), **stats})
        say(f"{name}: " + (f"ROLLED BACK ({reason})" if rolled_back else f"{changes} changes"))
    TopologicalSortPass()(work)
    return work, ctx, entries


def optimize(
    model: ModelInput,
    *,
    passes: list[str] | None = None,
    skip: Iterable[str] = (),
    opset_range: tuple[int, int] | None = None,
    verify: bool = True,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    rtol: float = 1e-4,
    samples: int = 2,
    large_model_bytes: int = LARGE_MODEL_BYTES,
    base_dir: str | None = None,
    check_each_pass: bool = False,
) -> OptimizeResult:
    """Run the optimizer pipeline (or `passes`, minus `skip`) and verify the result.

    Verification is optimistic: one check of the final model (onnx.checker + onnxruntime against
    the original). Only when that fails is the pipeline re-run with a check after every pass
    (or always, with `check_each_pass=True`), rolling back and naming each pass that breaks
    equivalence. A pass that raises is rolled back either way.

    `rtol` bounds the max abs error relative to the largest |output| of the original. Models whose
    weights exceed `large_model_bytes` are verified and saved through external-data files.
    `base_dir` locates external data of a ModelProto loaded with load_external_data=False.

    The report (JSON-serializable): "before"/"after" stats (nodes, initializers, parameters,
    macs, bytes); "passes": one entry per pass run, {"name", "applied", "changes",
    "rolled_back", "reason", "seconds"} plus the stats after it; "equivalence": {"max_abs_err",
    "output_scale", "ok" (None when it could not be checked), "samples", "reason", "runtime"};
    "fusions": [{"group", "pattern", "nodes"}]; "opset"; "large_model"; "verification"; and,
    when they apply, "notes" and "fallback" (the original model was returned).
    """
    names = _pipeline(passes, skip)
    work = _load(model, base_dir)
    notes = []
    if work.ir_version < 4:
        # IR < 4 demands every initializer be a graph input, which forbids the constants that
        # folding creates; IR 4 (2018) differs only by dropping that rule.
        notes.append(f"IR version raised from {work.ir_version} to 4")
        work.ir_version = 4
    large = weight_bytes(work) > large_model_bytes
    if not large:  # weights of a small model loaded by path or without data: into memory
        work = ir.external_data.load_to_model(work)
    original = work.clone()
    say = progress or (lambda _msg: None)
    before = model_stats(work)
    verifier = None
    if verify:
        say("computing reference outputs")
        verifier = Verifier(original, seed=seed, rtol=rtol, large=large,
                            samples=1 if large else samples)
    mode = "per-pass" if check_each_pass else "final"
    work, ctx, entries = _run_passes(names, work, opset_range, before,
                                     verifier if check_each_pass else None, say)
    final: Comparison | None = None
    fallback = ""
    if verifier is not None:
        final = verifier.check(work)
        if not final.ok and not check_each_pass:
            # Optimistic run failed: redo it checking after every pass, so the culprit is found,
            # rolled back and named, and the other passes still apply.
            say(f"final check failed ({final.reason}); re-running with a check after each pass")
            mode = f"per-pass (the single final check failed: {final.reason})"
            work, ctx, entries = _run_passes(names, original.clone(), opset_range, before,
                                             verifier, say)
            final = verifier.check(work)
        if not final.ok:  # passes interacting badly: never ship a wrong model
            fallback = f"optimized model failed the final check ({final.reason}); original kept"
            work, ctx.fusions = original, []
            final = verifier.check(work)
    else:  # unverified, but the result must still be a valid model
        mf = ModelFile(work, large)
        try:
            mf.check()
        except Exception as e:  # noqa: BLE001
            fallback = f"optimized model failed onnx.checker ({e}); original kept"
            work, ctx.fusions = original, []
        finally:
            mf.close()
    report = {
        "before": before,
        "after": model_stats(work),
        "passes": entries,
        "equivalence": _eq(final, verifier.samples if verifier else 0),
        "fusions": list(ctx.fusions),
        "opset": work.opset_imports.get("", None),
        "large_model": large,
        "verification": mode if verifier is not None else "off",
    }
    if notes:
        report["notes"] = notes
    if fallback:
        report["fallback"] = fallback
    if verifier is not None:
        report["equivalence"]["runtime"] = verifier.runtime  # the one that ran the original
        if verifier.unavailable:
            report["equivalence"]["reason"] = verifier.unavailable
    return OptimizeResult(work, report, large)
