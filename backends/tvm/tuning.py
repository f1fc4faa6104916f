"""MetaSchedule tuning with a database that persists across compiles.

The database lives in `$EDGEC_CACHE_DIR/tvm/<key>/` (default ~/.cache/edgec/tvm), keyed by the hash of
the core-optimized model and the target dict, so compiling the same model for the same target again
(another precision of the same graph aside) reuses every record, and `-O tune=true` adds trials on top.

Traps found here and handled: MetaSchedule's builder workers import TVM on start-up, which on a loaded
2-core machine takes longer than the default 30 s job timeout, so the pool restarted them forever: the
workers get a long timeout and import TVM in their initializer. apache-tvm-ffi 0.1.15.post2 crashes
TVM 0.27 in ToJSONGraph at start-up (pinned to 0.1.14.post1 in the `tvm` extra). The cost model needs
xgboost (xgboost-cpu in the extra).
"""
from __future__ import annotations

from edgec.core import interrupt

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable

from edgec.core.errors import BackendError

WORKER_TIMEOUT_S = 300.0
KNOWN_BAD_FFI = {"0.1.15.post2"}


def cache_root() -> Path:
    base = os.environ.get("EDGEC_CACHE_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "edgec") / "tvm"


def database_key(model_bytes: bytes, tvm_target: dict, batch: int, layout: str = "nchw") -> str:
    """The layout is part of the key: NHWC and NCHW lowerings are different functions, never each
    other's records."""
    h = hashlib.sha256(model_bytes)
    h.update(json.dumps(tvm_target, sort_keys=True).encode())
    h.update(f"batch={batch}".encode())
    if layout != "nchw":  # keys of databases tuned before the layout choice existed stay valid
        h.update(f"layout={layout}".encode())
    return h.hexdigest()[:20]


def database_dir(key: str) -> Path:
    return cache_root() / key


def open_database(path: Path):
    from tvm.s_tir import meta_schedule as ms

    path.mkdir(parents=True, exist_ok=True)
    return ms.database.JSONDatabase(work_dir=str(path), module_equality="structural")


def records_file(path: Path) -> Path:
    return path / "database_tuning_record.json"


def record_count(path: Path) -> int:
    """Measured records in the database (the JSON file also keeps failed candidates, with 1e10 s)."""
    f = records_file(path)
    if not f.exists():
        return 0
    n = 0
    with f.open() as fh:
        for line in fh:
            try:
                secs = json.loads(line)[1][1]
            except (ValueError, IndexError, TypeError):
                continue
            n += bool(secs) and all(float(x) < 1e9 for x in secs)
    return n


def _worker_init() -> None:
    """Runs once in each builder/runner worker: pay TVM's imports before the first job's clock starts
    (tensor_intrin through intrinsics.py: seconds, not the ~20-50 s of its plain import)."""
    import tvm  # noqa: F401

    from edgec.backends.tvm.intrinsics import import_tensor_intrinsics

    import_tensor_intrinsics()
    from tvm.s_tir import meta_schedule  # noqa: F401


def _flops(mod) -> float:
    from tvm.s_tir.analysis import estimate_tir_flops

    try:
        return float(estimate_tir_flops(mod))
    except Exception:
        return 0.0


def _runner_init() -> None:
    """The runner only loads and times built modules: TVM's runtime is all it needs."""
    import tvm  # noqa: F401


def _pooled_builder(max_workers: int, timeout_sec: float, deadline: float, say: Callable[[str], None],
                    n_tasks: int, recycle_every: int = 25):
    """LocalBuilder, but with one worker pool kept across batches.

    TVM's LocalBuilder starts a fresh process pool for every batch (to dodge a slow memory leak in
    long-lived workers), so every batch re-imports TVM: ~20 s per batch here, most of the ~7 trials a
    minute measured before. This keeps the pool and recycles it every `recycle_every` batches instead."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import _serialize_params, _worker_func
    from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

    @derived_object
    class PooledBuilder(PyBuilder):
        def __init__(self):
            super().__init__()
            self.pool = None
            self.batches = 0
            self.total_batches = 0
            self.built = 0
            self.quiet = False  # True while the rules' kernels are measured (not a tuning batch)
            self.t0 = time.monotonic()

        def build(self, build_inputs):
            if time.monotonic() > deadline:
                # MetaSchedule's gradient scheduler joins no task (so calls no measure callback) until its
                # first round over all tasks ends; past the budget, candidates are refused unbuilt so that
                # round, and the tuning, end promptly.
                return [BuilderResult(None, "edgec: tuning time budget reached") for _ in build_inputs]
            if self.pool is None or self.batches >= recycle_every:
                if self.pool is not None:
                    self.pool.shutdown()
                self.pool = PopenPoolExecutor(max_workers=max_workers, timeout=timeout_sec, initializer=_worker_init)
                self.batches = 0
            self.batches += 1
            self.total_batches += 1
            self.built += len(build_inputs)
            if self.total_batches <= n_tasks and not self.quiet:  # the measure callback is silent in the first round
                say(f"tuning: first pass, task {self.total_batches}/{n_tasks} ({self.built} candidates built, "
                    f"{(time.monotonic() - self.t0) / 60:.1f} min)")
            results = []
            jobs = [(None, None, b.mod, b.target, _serialize_params(b.params)) for b in build_inputs]
            for r in self.pool.map_with_error_catching(lambda x: _worker_func(*x), jobs):
                if r.status == StatusKind.COMPLETE:
                    results.append(BuilderResult(r.value, None))
                elif r.status == StatusKind.TIMEOUT:
                    results.append(BuilderResult(None, f"PooledBuilder: timeout after {timeout_sec} s"))
                else:
                    results.append(BuilderResult(None, f"PooledBuilder: {r.value}"))
            return results

    return PooledBuilder()


def _progress_callback(total_trials: int, deadline: float, say: Callable[[str], None]):
    from tvm.s_tir import meta_schedule as ms
    from tvm.ir.utils import derived_object

    @derived_object
    class Progress(ms.measure_callback.PyMeasureCallback):
        """Reports trials and, past the time budget, terminates every task so tuning ends cleanly."""

        def __init__(self):
            self.done = 0
            self.t0 = time.monotonic()
            self.stopped = False

        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            self.done += len(measure_candidates)
            elapsed = time.monotonic() - self.t0
            ok = sum(1 for r in runner_results if r.run_secs and not r.error_msg)
            say(f"tuning: {self.done}/{total_trials} trials ({ok}/{len(runner_results)} ran in the last batch), "
                f"{elapsed / 60:.1f} min")
            if time.monotonic() > deadline and not self.stopped:
                self.stopped = True
                say("tuning: time budget reached; finishing with the records so far")
                for i in range(len(task_scheduler.tasks_)):
                    task_scheduler.terminate_task(i)

    return Progress()


def tune(fused_mod, target, db_path: Path, trials: int, minutes: float, progress: Callable[[str], None],
         threads: int | None = None, seed_with_rules: bool = True) -> dict:
    """Run MetaSchedule on every task of `fused_mod` into the JSON database at `db_path`; candidates are
    measured with `threads` TVM threads (the target's num-cores), as the artifact will run.

    With `seed_with_rules`, each task's schedule-rule schedule (schedules/) is measured first and stored
    as a record: the database's best record for a task is then never slower than the untuned default,
    and the evolutionary search starts from it (it seeds its population with the best records)."""
    try:
        import xgboost  # noqa: F401
    except ImportError:
        raise BackendError("tuning needs xgboost (MetaSchedule's cost model): pip install 'edgec[tvm]'") from None
    import tvm_ffi

    if getattr(tvm_ffi, "__version__", "") in KNOWN_BAD_FFI:
        raise BackendError(f"apache-tvm-ffi {tvm_ffi.__version__} crashes TVM 0.27 when MetaSchedule starts "
                           "(tvm::ffi::ToJSONGraph): pip install 'apache-tvm-ffi==0.1.14.post1' (or 'edgec[tvm]')")
    from tvm.s_tir import meta_schedule as ms

    # MetaSchedule prints INFO tables to stdout; the Progress callback below is the display instead.
    ms_logger = logging.getLogger("tvm.s_tir.meta_schedule")
    level = ms_logger.level
    ms_logger.setLevel(logging.WARNING)
    env_threads = os.environ.get("TVM_NUM_THREADS")
    if threads:
        os.environ["TVM_NUM_THREADS"] = str(threads)  # read by the runner workers this starts
    try:
        return _tune(ms, fused_mod, target, db_path, trials, minutes, progress, seed_with_rules)
    finally:
        ms_logger.setLevel(level)
        if env_threads is None:
            os.environ.pop("TVM_NUM_THREADS", None)
        else:
            os.environ["TVM_NUM_THREADS"] = env_threads


def _tune(ms, fused_mod, target, db_path, trials, minutes, progress, seed_with_rules=False) -> dict:
    from edgec.backends.tvm.intrinsics import import_tensor_intrinsics

    import_tensor_intrinsics()  # before MetaSchedule's first TuneContext imports it the slow way
    before = record_count(db_path)
    db = open_database(db_path)
    tasks = ms.relax_integration.extract_tasks(fused_mod, target)
    # A smaller search than MetaSchedule's defaults (population 512, 4 genetic rounds, 64 per batch): each
    # task's first batch comes before any feedback, and on 2 cores the default search alone took 12-35 s
    # per task; a 35-task model spent 20+ minutes in its first round.
    strategy = ms.search_strategy.EvolutionarySearch(population_size=256, genetic_num_iters=3, init_min_unmeasured=32)
    # Heaviest first (FLOPs x occurrences): the first pass visits tasks in list order, and when the budget
    # ends inside it the tasks left over keep their untuned schedules, so the costly ones must come first.
    tasks = sorted(tasks, key=lambda t: -_flops(t.dispatched[0]) * t.weight)
    # MetaSchedule's logging set-up lists the names of the handlers already on its logger and crashes on
    # an unnamed one (the second tuning in a process under pytest has one): detach those meanwhile.
    ms_log = logging.getLogger("tvm.s_tir.meta_schedule")
    unnamed = [h for h in ms_log.handlers if h.get_name() is None]
    for h in unnamed:
        ms_log.removeHandler(h)
    try:
        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
            tasks, work_dir=str(db_path / "logs"), strategy=strategy, num_threads=1, seed=0)
    finally:
        for h in unnamed:
            ms_log.addHandler(h)
    deadline = time.monotonic() + minutes * 60
    per_iter = max(4, min(16, trials // max(1, 2 * len(contexts))))
    progress(f"tuning {len(contexts)} tasks: up to {trials} trials or {minutes:g} minutes "
             f"(database {db_path}, {before} records already)")
    t0 = time.monotonic()
    builder = _pooled_builder(max(1, (os.cpu_count() or 2) - 1), WORKER_TIMEOUT_S, deadline, progress, len(contexts))
    runner = ms.runner.LocalRunner(timeout_sec=WORKER_TIMEOUT_S, initializer=_runner_init,
                                   evaluator_config=ms.runner.EvaluatorConfig(number=3, repeat=1,
                                                                              enable_cpu_cache_flush=False))
    builder.quiet = True
    seeded = _seed_rule_records(ms, tasks, target, db, builder, runner, progress) if seed_with_rules else 0
    builder.quiet = False
    builder.total_batches = builder.built = 0  # the first-pass progress counts tuning batches only
    try:
        _tune_tasks(ms, contexts, weights, db_path, trials, per_iter, db, builder, runner, deadline, progress)
    except Exception:
        interrupt.check()  # a Ctrl-C wrapped by TVM's FFI is not the budget's normal end
        # Terminating tasks from the measure callback can trip the gradient scheduler's own check
        # (`!task->is_terminated`) once it is past its first round; every measured record is already
        # in the JSON database, so a stop at the budget is a normal end.
        if time.monotonic() <= deadline:
            raise
        progress("tuning: stopped at the time budget")
    db = None  # the JSON database writes through; drop the handle before reading the file
    return {"tasks": len(contexts), "rule_records_seeded": seeded, "trials_requested": trials, "minutes_budget": minutes,
            "tuning_seconds": round(time.monotonic() - t0, 1), "records_before": before,
            "records_after": record_count(db_path)}


def _seed_rule_records(ms, tasks, target, db, builder, runner, progress) -> int:
    """Measure the schedule rules' schedule of every task they match and commit it as a tuning record
    (again on every run: a duplicate record costs nothing, a database tuned without rules gains them)."""
    from edgec.backends.tvm import schedules

    cands = []
    for task in tasks:
        mod = task.dispatched[0]
        got = schedules.rule_schedule(mod, target)
        if got is None:
            continue
        cands.append((mod, got[0]))
    if not cands:
        return 0
    progress(f"tuning: measuring the schedule rules' kernels for {len(cands)} tasks first")
    built = builder.build([ms.builder.BuilderInput(sch.mod, target) for _, sch in cands])
    ok = [(c, ms.arg_info.ArgInfo.from_prim_func(c[0]["main"]), b) for c, b in zip(cands, built) if b.error_msg is None]
    runs = runner.run([ms.runner.RunnerInput(b.artifact_path, "cpu", a) for _, a, b in ok])
    seeded = 0
    for ((mod, sch), a, _), fut in zip(ok, runs):
        res = fut.result()
        if res.error_msg or not res.run_secs:
            continue
        db.commit_tuning_record(ms.database.TuningRecord(sch.trace, db.commit_workload(mod), res.run_secs, target, a))
        seeded += 1
    return seeded


def _tune_tasks(ms, contexts, weights, db_path, trials, per_iter, db, builder, runner, deadline, progress):
    ms.tune_tasks(
        tasks=contexts, task_weights=weights, work_dir=str(db_path / "logs"),
        max_trials_global=trials, num_trials_per_iter=per_iter,
        builder=builder,
        runner=runner,
        database=db,
        measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"),
                           _progress_callback(trials, deadline, progress)],
    )
