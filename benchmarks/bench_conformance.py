"""Conformance: ONNX's own node tests through a raw runtime and through edgec, case by case.

    python benchmarks/bench_conformance.py --backend onnxruntime,openvino --json conf.json      # all 1,884
    python benchmarks/bench_conformance.py --backend tvm --per-op 1 --limit 60 --json conf.json  # stratified
    python benchmarks/bench_conformance.py --backend tflite,qnn,tensorrt --per-op 1 --limit 80 --json conf.json

`--json` is a checkpoint, written every 15 s: a run killed by `timeout` resumes where it stopped, and
`--rerun-failed` runs edgec's failures again after a fix. Backends without a raw runner (TFLite, QNN,
TensorRT: the runtime only runs what edgec built) are counted against the cases plain onnxruntime
passes (from the same checkpoint), with the backend's clean refusals (UnsupportedError) apart; QNN's
HTP has no fp32, so it runs fp16 (tolerance 1e-2); TensorRT without a GPU is build-only here: its
compile's validation ran the built-from ONNX on onnxruntime, and that is what passes.

Cases come from the installed `onnx` package (`onnx.backend.test.case.node.collect_testcases`, built in
memory: the wheel ships no data files). Each case runs
  raw:   the backend's own runtime on the case's model (onnxruntime / OpenVINO CPU / TVM Relax `llvm`),
  edgec: `edgec.compile(model, backend=B, precision="fp32", validation=<the case's inputs>)` then
         `edgec.load(...)` on the case's inputs,
and both are compared with the case's expected outputs at the case's rtol/atol. A failure is edgec's when
the raw runtime passes the case and edgec does not; both failing is the runtime's; edgec passing where the
raw runtime fails is a rescue (usually the optimizer folding away what the runtime cannot run).

Every case runs in a worker subprocess (`--jobs` of them) with a per-case timeout: a crash (SIGFPE, a
segfault) or a hang is counted against that case and the worker is restarted. Any registered backend can
be run by name (`edgec backends` lists them); one without a raw runner here gets the edgec column only.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import select
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

RESULT = "@@CONFORMANCE "
READY = "@@READY"
RAW_RUNTIMES = {"onnxruntime": "onnxruntime", "openvino": "OpenVINO", "tvm": "TVM"}


# ------------------------------------------------------------------------------------------- cases

def load_cases() -> dict:
    """name -> onnx TestCase (node tests only), built in memory by the installed onnx package."""
    from onnx.backend.test.case import node

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np_err = np.seterr(all="ignore")
        try:
            cases = node.collect_testcases(None)
        finally:
            np.seterr(**np_err)
    return {c.name: c for c in cases if c.kind == "node"}


def case_feeds(model, inputs) -> dict:
    """The data set's inputs by graph input name (node tests list them in graph-input order); numpy
    scalars as 0-d arrays, TensorProtos (types numpy lacks, e.g. float8) as their numpy view."""
    inits = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    return {n: as_value(v) for n, v in zip(names, inputs)}


def as_value(v):
    import onnx
    from onnx import numpy_helper

    if isinstance(v, onnx.TensorProto):
        return numpy_helper.to_array(v)
    if isinstance(v, np.generic):
        return np.asarray(v)
    if isinstance(v, list):
        return [as_value(x) for x in v]
    return v


def _is_tensor(v) -> bool:
    return isinstance(v, np.ndarray) or np.isscalar(v)


def mismatch(expected, got, rtol: float, atol: float, where: str = "output") -> str:
    """'' when `got` matches `expected` the way onnx's backend test runner compares them."""
    if expected is None:
        return "" if got is None else f"{where}: expected None (empty optional), got {type(got).__name__}"
    if isinstance(expected, (list, tuple)):
        if not isinstance(got, (list, tuple)):
            return f"{where}: expected a sequence of {len(expected)}, got {type(got).__name__}"
        if len(got) != len(expected):
            return f"{where}: sequence of {len(got)} != {len(expected)}"
        for i, (e, g) in enumerate(zip(expected, got)):
            m = mismatch(e, g, rtol, atol, f"{where}[{i}]")
            if m:
                return m
        return ""
    e, g = np.asarray(expected), np.asarray(got)
    if e.shape != g.shape:
        return f"{where}: shape {list(g.shape)} != {list(e.shape)}"
    if e.dtype.kind in "OUS" or g.dtype.kind in "OUS":
        return "" if np.array_equal(e.astype(str), g.astype(str)) else f"{where}: strings differ"
    if e.dtype.kind == "b" or g.dtype.kind == "b":
        return "" if np.array_equal(e.astype(bool), g.astype(bool)) else f"{where}: booleans differ"
    try:
        e64, g64 = e.astype(np.float64), g.astype(np.float64)
    except (TypeError, ValueError):
        return "" if np.array_equal(e, g) else f"{where}: values differ"
    try:
        np.testing.assert_allclose(g64, e64, rtol=rtol, atol=atol, equal_nan=True)
    except AssertionError:
        with np.errstate(all="ignore"):
            err = np.nanmax(np.abs(g64 - e64)) if e64.size else 0.0
        return f"{where}: values differ (max abs err {err:.3g})"
    return ""


def compare_outputs(expected: list, got: list, rtol: float, atol: float) -> str:
    if len(got) < len(expected):
        return f"{len(got)} outputs, expected {len(expected)}"
    for i, (e, g) in enumerate(zip(expected, got)):
        m = mismatch(e, g, rtol, atol, f"output {i}")
        if m:
            return m
    return ""


# ------------------------------------------------------------------------------------------- raw runtimes

def raw_onnxruntime(model, feeds):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 4
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in sess.get_inputs()}
    return sess.run(None, {k: v for k, v in feeds.items() if k in wanted})


def raw_openvino(model, feeds):
    import onnx
    import openvino as ov

    core = ov.Core()
    with tempfile.TemporaryDirectory(prefix="conf-ov-") as tmp:
        path = os.path.join(tmp, "model.onnx")
        onnx.save_model(model, path)
        compiled = core.compile_model(core.read_model(path), "CPU",
                                      {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
    ins = {}
    for port in compiled.inputs:
        name = next((n for n in port.get_names() if n in feeds), None)
        if name is not None:
            ins[port] = feeds[name]
    res = compiled.create_infer_request().infer(ins)
    return [np.array(res[p]) for p in compiled.outputs]


def raw_tvm(model, feeds):
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    shapes = {k: list(np.shape(v)) for k, v in feeds.items() if _is_tensor(v)}
    mod = from_onnx(model, shape_dict=shapes, keep_params_in_input=False)
    ex = tvm.compile(mod, target="llvm")
    vm = relax.VirtualMachine(ex, tvm.cpu())
    params = [getattr(p, "name", None) or p.name_hint for p in mod["main"].params]
    args = [tvm.runtime.tensor(np.ascontiguousarray(feeds[n]), tvm.cpu()) for n in params]
    out = vm["main"](*args)
    return _flatten_tvm(out)


def _flatten_tvm(out):
    import tvm

    if isinstance(out, tvm.runtime.Tensor):
        return [out.numpy()]
    if isinstance(out, (list, tuple)) or hasattr(out, "__len__"):
        return [x for o in out for x in _flatten_tvm(o)]
    return [np.asarray(out)]


RAW = {"onnxruntime": raw_onnxruntime, "openvino": raw_openvino, "tvm": raw_tvm}


# ------------------------------------------------------------------------------------------- through edgec

def precision_for(backend: str) -> str:
    """fp32 where the backend has it; else its most precise one (QNN's HTP: fp16)."""
    from edgec.core.registry import get_backend

    have = get_backend(backend).requirements.precisions
    return "fp32" if "fp32" in have else next(p for p in ("fp16", "int8") if p in have)


def can_run_here(backend: str) -> bool:
    from edgec.core.registry import get_backend

    return get_backend(backend).available().can_run


def edgec_run(case, backend: str, work: Path) -> tuple[bool, str, str]:
    """(passed, where it failed, one-line reason) for the case compiled and loaded by edgec.
    Stage "unsupported" is the backend's clean refusal (UnsupportedError: an op or type it cannot run),
    counted apart from edgec's failures. A build-only backend (TensorRT without a GPU) passes on its
    compile, whose validation ran the built-from ONNX on onnxruntime (the manifest says so)."""
    import edgec
    from edgec.core.data import SampleList
    from edgec.core.errors import EdgecError, UnsupportedError

    out = work / "artifact"
    sets = [case_feeds(case.model, ins) for ins, _ in case.data_sets]
    stage = "compile"
    precision = precision_for(backend)
    try:
        art = edgec.compile(case.model, backend=backend, precision=precision, output=out, force=True, threads=1,
                            validation=SampleList(sets, source=f"{case.name} inputs"))
        if not can_run_here(backend):
            return True, "", ""
        stage = "load"
        runner = edgec.load(art.path, threads=1)
        try:
            stage = "run"
            for feeds, (_, expected) in zip(sets, case.data_sets):
                got = runner.run(feeds)
                names = [o.name for o in case.model.graph.output]
                rtol, atol = (case.rtol, case.atol) if precision == "fp32" else (max(case.rtol, 1e-2), max(case.atol, 1e-2))
                m = compare_outputs([as_value(e) for e in expected], [got.get(n) for n in names], rtol, atol)
                if m:
                    return False, "wrong result", m
        finally:
            runner.close()
        return True, "", ""
    except UnsupportedError as e:
        return False, "unsupported", _one_line(e)
    except EdgecError as e:
        kind = "validation" if type(e).__name__ == "ValidationFailed" else stage
        lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
        return False, kind if len(lines) <= 1 else f"{kind} (multi-line)", _one_line(e)
    except Exception as e:  # noqa: BLE001 - an internal error: the class the issue counts as a traceback
        tb = traceback.extract_tb(e.__traceback__)
        last = tb[-1] if tb else None
        where = f" at {Path(last.filename).name}:{last.lineno}" if last else ""
        return False, f"internal ({stage})", f"{type(e).__name__}: {_one_line(e)}{where}"


def _one_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return (lines[0] if lines else type(e).__name__)[:300]


def run_case(case, backend: str) -> dict:
    res = {"case": case.name, "backend": backend}
    raw = RAW.get(backend)
    if raw is not None:
        t = time.perf_counter()
        try:
            msg = ""
            for ins, expected in case.data_sets:
                got = raw(case.model, case_feeds(case.model, ins))
                msg = compare_outputs([as_value(e) for e in expected], list(got), case.rtol, case.atol)
                if msg:
                    break
            res["raw"] = not msg
            res["raw_reason"] = msg
        except Exception as e:  # noqa: BLE001
            res["raw"], res["raw_reason"] = False, f"{type(e).__name__}: {_one_line(e)}"
        res["raw_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="conf-edgec-") as tmp:
        ok, where, why = edgec_run(case, backend, Path(tmp))
    res.update(edgec=ok, edgec_stage=where, edgec_reason=why, edgec_s=round(time.perf_counter() - t, 2))
    return res


def warm_up(backend: str) -> None:
    """One-time imports a first case would otherwise pay inside its timeout: TVM's MetaSchedule imports
    its tensor intrinsics (minutes of inspect.stack on a loaded 2-core machine)."""
    if backend == "tvm":
        try:
            import tvm.s_tir.tensor_intrin  # noqa: F401
            from tvm.s_tir import meta_schedule  # noqa: F401
        except Exception:  # noqa: BLE001 - the cases will report it
            pass


def worker(backend: str) -> None:
    """Reads case names on stdin, prints one RESULT line per case (libraries may print other lines)."""
    os.environ.setdefault("EDGEC_PROGRESS", "0")
    cases = load_cases()
    np.seterr(all="ignore")
    warnings.simplefilter("ignore")
    warm_up(backend)
    sys.stdout.write(READY + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        name = line.strip()
        if not name:
            continue
        res = run_case(cases[name], backend)
        sys.stdout.write(RESULT + json.dumps(res) + "\n")
        sys.stdout.flush()


# ------------------------------------------------------------------------------------------- the pool

class Worker:
    def __init__(self, backend: str):
        env = dict(os.environ, OMP_NUM_THREADS="1", TVM_NUM_THREADS="1", EDGEC_PROGRESS="0",
                   PYTHONWARNINGS="ignore")
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", "--backend", backend],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=env, text=True, bufsize=1)
        self.backend = backend
        self.case = None
        self.started = 0.0
        self.buf = ""
        self.ready = False
        self.spawned = time.monotonic()

    def send(self, case: str) -> None:
        self.case, self.started = case, time.monotonic()
        self.proc.stdin.write(case + "\n")
        self.proc.stdin.flush()

    def poll_line(self) -> dict | None:
        """A finished result, {'crashed': rc} if the process died, or None while still running."""
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            if line.startswith(READY):
                self.ready = True
                self.started = time.monotonic()  # the case's clock starts once the worker is warm
            if line.startswith(RESULT):
                return json.loads(line[len(RESULT):])
        chunk = os.read(self.proc.stdout.fileno(), 1 << 16).decode(errors="replace")
        if not chunk:
            return {"crashed": self.proc.wait()}
        self.buf += chunk
        return self.poll_line() if "\n" in self.buf else None

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=10)
        except Exception:  # noqa: BLE001
            pass


def run_pool(names: list[str], backend: str, jobs: int, timeout: float, progress=True,
             on_result=None) -> list[dict]:
    todo = list(names)
    results, workers = [], [Worker(backend) for _ in range(min(jobs, len(todo)))]
    t0 = time.monotonic()
    for w in workers:
        if todo:
            w.send(todo.pop(0))
    while any(w.case for w in workers):
        live = [w for w in workers if w.case]
        ready, _, _ = select.select([w.proc.stdout for w in live], [], [], 1.0)
        for i, w in enumerate(workers):
            if not w.case:
                continue
            res = None
            if w.proc.stdout in ready:
                res = w.poll_line()
            if res is None and w.ready and time.monotonic() - w.started > timeout:
                res = {"crashed": "timeout"}
            if res is None and not w.ready and time.monotonic() - w.spawned > 1800:
                res = {"crashed": "timeout"}
            if res is None:
                continue
            if "crashed" in res:
                rc = res["crashed"]
                why = f"timed out after {timeout:.0f} s" if rc == "timeout" else f"process died (exit code {rc})"
                res = {"case": w.case, "backend": backend, "crash": why}
                w.kill()
                workers[i] = w = Worker(backend)
            results.append(res)
            if on_result is not None:
                on_result(res)
            w.case = None
            if todo:
                w.send(todo.pop(0))
            if progress:
                print(f"\r[{backend}] {len(results)}/{len(names)} cases, {time.monotonic() - t0:.0f} s",
                      end="", file=sys.stderr, flush=True)
    for w in workers:
        try:
            w.proc.stdin.close()
            w.proc.wait(timeout=30)
        except Exception:  # noqa: BLE001
            w.kill()
    if progress:
        print(file=sys.stderr)
    return results


# ------------------------------------------------------------------------------------------- the table

def summarize(results: list[dict]) -> dict:
    has_raw = any("raw" in r for r in results)
    crashed = [r for r in results if "crash" in r]
    ok = [r for r in results if "crash" not in r]
    raw_pass = [r for r in ok if r.get("raw")]
    unsupported = [r for r in ok if not r["edgec"] and r["edgec_stage"] == "unsupported"]
    s = {"cases": len(results), "crashes": len(crashed),
         "edgec_passes": sum(r["edgec"] for r in ok),
         "unsupported": len(unsupported),
         "internal_errors": sum(r["edgec_stage"].startswith("internal") for r in ok if not r["edgec"]),
         "multi_line": sum(r["edgec_stage"].endswith("(multi-line)") for r in ok if not r["edgec"])}
    if has_raw:
        s.update(raw_passes=len(raw_pass),
                 edgec_of_raw=sum(r["edgec"] for r in raw_pass),
                 edgec_failures=[r for r in raw_pass if not r["edgec"]],
                 rescues=sum(1 for r in ok if r["edgec"] and not r.get("raw")),
                 both_fail=sum(1 for r in ok if not r["edgec"] and not r.get("raw")))
    else:
        # no raw runner for this backend (TFLite, QNN, TensorRT run only what edgec built): the cases
        # plain onnxruntime passes are the runnable ones; the backend's clean refusals are counted apart
        ref = [r for r in ok if r.get("ort_raw", True)]
        s.update(runnable=len(ref), edgec_of_runnable=sum(r["edgec"] for r in ref),
                 unsupported=sum(r["edgec_stage"] == "unsupported" for r in ref if not r["edgec"]),
                 edgec_failures=[r for r in ref if not r["edgec"] and r["edgec_stage"] != "unsupported"])
    s["crashed"] = crashed
    return s


_NUM = re.compile(r"\b\d+(\.\d+)?(e[-+]?\d+)?\b")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def failure_class(r: dict) -> str:
    text = _QUOTED.sub("'…'", r["edgec_reason"])
    return f"{r['edgec_stage']}: {_NUM.sub('N', text)[:140]}"


def print_table(summaries: dict[str, dict], top: int = 12) -> None:
    print("| backend | precision | cases | raw runtime passes | through edgec | edgec of raw passes | edgec's failures | "
          "rescues | runtime's (both fail) | unsupported (clean) | crashes | internal errors | multi-line errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for be, s in summaries.items():
        prec = s.get("precision", "fp32")
        if "raw_passes" in s:
            frac = s["edgec_of_raw"] / s["raw_passes"] if s["raw_passes"] else float("nan")
            se = (frac * (1 - frac) / s["raw_passes"]) ** 0.5 if s["raw_passes"] else float("nan")
            print(f"| {be} | {prec} | {s['cases']} | {s['raw_passes']} | {s['edgec_passes']} | {s['edgec_of_raw']} "
                  f"({100 * frac:.1f} ± {100 * se:.1f} %) | {len(s['edgec_failures'])} | {s['rescues']} | "
                  f"{s['both_fail']} | {s['unsupported']} | {s['crashes']} | {s['internal_errors']} | "
                  f"{s['multi_line']} |")
        else:
            n = s["runnable"]
            frac = s["edgec_of_runnable"] / n if n else float("nan")
            print(f"| {be} | {prec} | {s['cases']} | n/a (no raw runner; {n} pass plain onnxruntime) | "
                  f"{s['edgec_passes']} | {s['edgec_of_runnable']} of those ({100 * frac:.1f} %) | "
                  f"{len(s['edgec_failures'])} | n/a | n/a | {s['unsupported']} | {s['crashes']} | "
                  f"{s['internal_errors']} | {s['multi_line']} |")
    for be, s in summaries.items():
        fails = s["edgec_failures"] + s["crashed"]
        if not fails:
            continue
        print(f"\n{be}: edgec's failures by class ({len(fails)})")
        classes = Counter(failure_class(r) if "crash" not in r else f"crash: {r['crash']}" for r in fails)
        examples = {}
        for r in fails:
            examples.setdefault(failure_class(r) if "crash" not in r else f"crash: {r['crash']}", r["case"])
        for cls, n in classes.most_common(top):
            print(f"  {n:4d}  {cls}   (e.g. {examples[cls]})")
        if len(classes) > top:
            print(f"  ... {len(classes) - top} more classes")


def op_of(case) -> str:
    """The op a node case tests: its single node's op type; an `_expanded` case (the op's function
    body as a graph) or any multi-node case counts under the op its name starts with."""
    nodes = case.model.graph.node
    if len(nodes) == 1:
        return nodes[0].op_type
    return "multi:" + re.sub(r"^test_", "", case.name).split("_")[0]


def select_cases(cases: dict, pattern: str | None, limit: int | None, seed: int,
                 per_op: int | None = None) -> list[str]:
    """The cases matching `pattern`; with `per_op`, a seeded random `per_op` of each op (stratified:
    every op the suite tests is in the sample, at most `per_op` cases of it); with `limit`, a seeded
    random sample of that many (after `per_op`)."""
    names = sorted(n for n in cases if not pattern or re.search(pattern, n))
    rng = random.Random(seed)
    if per_op:
        by_op: dict[str, list[str]] = {}
        for n in names:
            by_op.setdefault(op_of(cases[n]), []).append(n)
        names = sorted(n for group in by_op.values() for n in (rng.sample(group, per_op) if len(group) > per_op else group))
    if limit and limit < len(names):
        names = sorted(rng.sample(names, limit))
    return names


def load_checkpoint(path: str | None) -> list[dict]:
    if not path or not Path(path).exists():
        return []
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError:  # a run killed while writing: the .tmp is never the checkpoint itself
        return []


def save_checkpoint(path: str | None, results: list[dict]) -> None:
    if not path:
        return
    tmp = Path(path + ".tmp")
    tmp.write_text(json.dumps(results, indent=0))
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="onnxruntime,openvino,tvm",
                    help="comma-separated registered backend names (default: onnxruntime,openvino,tvm)")
    ap.add_argument("--limit", type=int, help="a seeded random sample of this many cases (default: all 1,884)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cases", help="regex on case names (e.g. '^test_(conv|gemm)')")
    ap.add_argument("--per-op", type=int, help="stratified sample: at most this many seeded-random cases per op")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (default 1: a shared machine)")
    ap.add_argument("--timeout", type=float, default=180, help="seconds per case before it counts as a hang")
    ap.add_argument("--json", help="every case's result, written after each case (a checkpoint: a rerun with the "
                                   "same file skips the cases it holds; --rerun-failed runs edgec's failures again)")
    ap.add_argument("--rerun-failed", action="store_true",
                    help="with --json: run again the checkpoint's cases that crashed or that edgec failed where the raw "
                         "runtime passed (or has no raw runner)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    if args.worker:
        worker(backends[0])
        return 0
    from edgec.core.registry import get_backend, require_available

    for b in backends:
        require_available(get_backend(b))
    cases = load_cases()
    names = select_cases(cases, args.cases, args.limit, args.seed, args.per_op)
    done = {(r["backend"], r["case"]): r for r in load_checkpoint(args.json)}
    if args.rerun_failed:
        # edgec's failures (the raw runtime passed, or there is none) and crashes; both-fail cases keep
        # their result (a rerun could only add rescues)
        done = {k: r for k, r in done.items()
                if "crash" not in r and (r.get("edgec") or ("raw" in r and not r["raw"]))}
    t0 = time.monotonic()
    summaries = {}
    for b in backends:
        todo = [n for n in names if (b, n) not in done]

        last = [time.monotonic()]

        def keep(res, b=b):
            done[(b, res["case"])] = res
            if time.monotonic() - last[0] > 15:  # a checkpoint every 15 s, not per case (quadratic)
                save_checkpoint(args.json, list(done.values()))
                last[0] = time.monotonic()

        if todo:
            try:
                run_pool(todo, b, args.jobs, args.timeout, on_result=keep)
            finally:
                save_checkpoint(args.json, list(done.values()))
        res = [done[(b, n)] for n in names if (b, n) in done]
        if b not in RAW:
            ort = {r["case"]: r.get("raw") for r in done.values() if r["backend"] == "onnxruntime" and "raw" in r}
            for r in res:
                if r["case"] in ort:
                    r["ort_raw"] = ort[r["case"]]
        summaries[b] = summarize(res)
        summaries[b]["precision"] = precision_for(b)
    sample = (f", stratified sample: <= {args.per_op} per op, seed {args.seed}" if args.per_op else "") + \
             (f", seeded sample of {args.limit}, seed {args.seed}" if args.limit else "")
    print(f"\n{len(names)} ONNX node cases (onnx {__import__('onnx').__version__}{sample}"
          f"{', regex ' + repr(args.cases) if args.cases else ''}), {time.monotonic() - t0:.0f} s this run, "
          f"jobs {args.jobs}\n")
    print_table(summaries)
    return 0


if __name__ == "__main__":
    sys.exit(main())
