"""ONNX -> Relax (NHWC convolutions) -> fused TIR -> schedules -> `tvm.compile` -> shared library.

Schedules, for each fused TIR function, the first that applies:
  1. a record in the persistent MetaSchedule database (tuning.py) for this model and target;
  2. `schedule=rules` (default): edgec's deterministic CPU schedule rules (schedules/), matched by
     block structure: register-tiled, vectorized convolutions, dense layers and channel reductions;
  3. `schedule=rules|sampled`: one schedule sampled from MetaSchedule's own CPU design space
     (multi-level tiling, vectorization, parallel loops, unrolling) without measuring anything;
  4. the naive loop nests legalization produces (`schedule=naive`), single-threaded and scalar.
The wheel on PyPI is built without DNNL/BLAS, so no library offload exists to choose (see README).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx

from edgec.backends.tvm.schedules.common import is_scheduled
from edgec.core import interrupt
from edgec.core.errors import UnsupportedError


def static_shapes(model: onnx.ModelProto, batch: int) -> dict[str, list[int]]:
    """Input name -> static shape: a symbolic leading dim becomes `batch`; any other symbol is an error,
    because TVM's static-shape schedules (and tuning) need every extent known."""
    inits = {i.name for i in model.graph.initializer}
    shapes = {}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = []
        for k, d in enumerate(inp.type.tensor_type.shape.dim):
            if d.HasField("dim_value") and d.dim_value >= 0:  # 0 is a zero-size dim, not a dynamic one
                dims.append(int(d.dim_value))
            elif k == 0:
                dims.append(int(batch))
            else:
                raise UnsupportedError(f"input '{inp.name}' has a dynamic dimension {k} ({d.dim_param or '?'}); "
                                       "the TVM backend needs static shapes: give them with --input-shape "
                                       f"{inp.name}=DxDx... (edgec.compile(input_shapes=...))")
        shapes[inp.name] = dims
    return shapes


def import_onnx(model: onnx.ModelProto, batch: int):
    """Relax IRModule with the weights folded in as constants (one self-contained .so)."""
    from tvm.relax.frontend.onnx import from_onnx

    if any(n.op_type == "OptionalHasElement" and not n.input for n in model.graph.node):
        # the optimizer's IR drops an empty optional input (""); TVM's frontend wants the slot there
        model = onnx.ModelProto.FromString(model.SerializeToString())
        for n in model.graph.node:
            if n.op_type == "OptionalHasElement" and not n.input:
                n.input.append("")
    try:
        return from_onnx(model, shape_dict=static_shapes(model, batch), keep_params_in_input=False)
    except UnsupportedError:
        raise
    except Exception as e:
        interrupt.check()  # TVM's FFI turns a Ctrl-C inside the import into its own error
        raise UnsupportedError(f"TVM's Relax ONNX frontend cannot import the model{_op_hint(model, e)}: "
                               f"{tvm_reason(e)}") from e


def tvm_reason(e: Exception, limit: int = 300) -> str:
    """TVM errors end with the line that says why, after a C++ traceback; keep that line only."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("File \"", "Traceback", "File", "^", "...", "  "))] or lines
    return (lines[-1] if lines else type(e).__name__)[:limit]


def _op_hint(model: onnx.ModelProto, e: Exception) -> str:
    """' (op X)' when the error names one of the model's op types, so the line names what to replace."""
    text = str(e)
    ops = sorted({n.op_type for n in model.graph.node if n.op_type in text}, key=len, reverse=True)
    if ops:
        return f" (op {ops[0]})"
    if len(model.graph.node) <= 3:
        return f" (op {', '.join(sorted({n.op_type for n in model.graph.node}))})"
    return ""


def has_convolutions(model: onnx.ModelProto) -> bool:
    return any(n.op_type in ("Conv", "ConvTranspose", "QLinearConv", "ConvInteger") for n in model.graph.node)


def lower_to_fused_tir(mod, target, layout: str = "nhwc"):
    """Inference-only decomposition, the layout choice (layout.py), then legalize + fuse: the module the
    schedule rules and MetaSchedule work on."""
    from edgec.backends.tvm.layout import to_nhwc
    from tvm import relax

    with target:
        mod = relax.transform.DecomposeOpsForInference()(mod)
        if layout == "nhwc":
            mod = to_nhwc(mod)
        mod = relax.get_pipeline("zero")(mod)
    return mod


def io_param_names(mod) -> list[str]:
    """The names of the Relax main function's parameters: the inputs the module actually takes (the
    frontend drops graph inputs nothing reads)."""
    return [getattr(p, "name", None) or p.name_hint for p in mod["main"].params]


def scheduled_names(mod) -> set[str]:
    import tvm

    return {gv.name_hint for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc) and is_scheduled(f)}


def schedule_untuned(mod, target, schedule: str, progress: Callable[[str], None] = lambda m: None):
    """Schedules for the functions the tuning database left unscheduled: rules first (schedule=rules),
    then a sampled MetaSchedule schedule for what is still unscheduled (rules, sampled); naive: none.
    Returns the module and {function name: where its schedule came from}."""
    import tvm

    from edgec.backends.tvm import schedules

    sources: dict[str, str] = {n: "tuned" for n in scheduled_names(mod)}
    if schedule == "rules":
        mod, applied = schedules.apply_rules(mod, target)
        sources.update(applied)
    if schedule in ("rules", "sampled") and _unscheduled(mod):
        # only when something is left: sampling needs MetaSchedule's tensor intrinsics imported (intrinsics.py),
        # which alone was a one-Mul model's 35-53 s lowering before the rules covered functions without a
        # reduction (schedules/injective.py)
        before = scheduled_names(mod)
        db, _ = sampled_schedules(mod, target, progress=progress)
        mod = apply_database(mod, target, db)
        sources.update({n: "sampled" for n in scheduled_names(mod) - before})
    for gv, f in mod.functions.items():
        if isinstance(f, tvm.tirx.PrimFunc):
            sources.setdefault(gv.name_hint, "naive")
    return mod, dict(sorted(sources.items()))


def _unscheduled(mod) -> bool:
    import tvm

    return any(isinstance(f, tvm.tirx.PrimFunc) and not is_scheduled(f) for f in mod.functions.values())


def sampled_schedules(mod, target, seed: int = 0, progress: Callable[[str], None] = lambda m: None):
    """A MemoryDatabase holding one schedule per task, sampled from MetaSchedule's CPU design space and
    post-processed, but never measured. On EfficientNet-Lite0 (NCHW) this is ~2x faster than the naive
    loops and ~13x slower than the schedule rules (see README): the fallback for what no rule matches."""
    from tvm.s_tir import meta_schedule as ms

    from edgec.backends.tvm.intrinsics import import_tensor_intrinsics

    import_tensor_intrinsics()  # before the first TuneContext imports it the slow way (intrinsics.py)
    tasks = ms.relax_integration.extract_tasks(mod, target)
    db = ms.database.MemoryDatabase()
    scheduled = 0
    for i, task in enumerate(tasks):
        if _is_scheduled(task.mod):
            continue  # already has a tuned schedule from the database
        ctx = ms.TuneContext(mod=task.dispatched[0], target=target, space_generator="post-order-apply",
                             search_strategy="evolutionary", task_name=task.task_name, rand_state=seed + i,
                             num_threads=1)
        try:
            spaces = ctx.generate_design_space()
        except Exception:  # a task MetaSchedule has no rules for keeps its naive loops
            interrupt.check()  # ... unless the "error" is a Ctrl-C that TVM's FFI wrapped
            continue
        for space in spaces:
            cand = space.copy()
            if all(p.apply(cand) for p in ctx.space_generator.postprocs):
                wl = db.commit_workload(task.dispatched[0])
                db.commit_tuning_record(ms.database.TuningRecord(cand.trace, wl, [1.0], target))
                scheduled += 1
                break
        interrupt.check()
        if (i + 1) % 10 == 0:
            progress(f"sampled schedules for {i + 1}/{len(tasks)} tasks")
    return db, {"tasks": len(tasks), "scheduled": scheduled}


def _is_scheduled(mod) -> bool:
    import tvm

    return is_scheduled(mod) or any(isinstance(f, tvm.tirx.PrimFunc) and is_scheduled(f)
                                    for f in mod.functions.values())


def apply_database(mod, target, db):
    from tvm import relax

    with target, db:
        return relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)


def compile_module(fused_mod, target, out_path: Path, cross_cc: str | None) -> dict[str, Any]:
    """The (scheduled) fused module as one shared library: one cached object file per function, built in
    parallel (objects.py); the plain `tvm.compile` when that path fails, with the reason in the info."""
    from edgec.backends.tvm import objects

    try:
        return objects.compile_module(fused_mod, target, out_path, cross_cc)
    except KeyboardInterrupt:  # interrupt.Interrupted included
        raise
    except Exception as e:  # noqa: BLE001 - the plain build below is the reference path
        interrupt.check()
        info = plain_compile_module(fused_mod, target, out_path, cross_cc)
        info["build_cache"] = {"off": tvm_reason(e, 200)}
        return info


def plain_compile_module(fused_mod, target, out_path: Path, cross_cc: str | None) -> dict[str, Any]:
    """`tvm.compile` the (scheduled) fused module and export it as one shared library."""
    import tvm

    t0 = time.perf_counter()
    ex = tvm.compile(fused_mod, target=target)
    kwargs = {}
    if cross_cc:
        from tvm.support import cc

        kwargs["fcompile"] = cc.cross_compiler(cross_cc)
    ex.export_library(str(out_path), **kwargs)
    return {"compile_seconds": round(time.perf_counter() - t0, 2)}


def io_dtypes(model: onnx.ModelProto) -> dict[str, str]:
    return {i.name: np.dtype(onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)).name
            for i in model.graph.input}
