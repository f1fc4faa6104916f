"""Sweep cells as Ray tasks: `--executor ray [--ray-address auto|HOST:PORT]` (extra `edgec[ray]`).

Where things live: a SHARED PATH, not the object store. Each cell task compiles straight into
`<-o>/artifacts/<cell>/` and writes its `<cell>.cell.json` sidecar there (core/compare/cell.py, the same
code and content-hash key the local executor uses), so a cluster re-run resumes from what earlier tasks
published and a local re-run reuses cluster results, and nothing big travels through Ray. The model, the
data and -o must therefore be at the same path on every node (one machine, or NFS/Lustre/EFS mounted
alike); a probe task on each node checks that (model sha256, -o writable) before any cell is sent, and a
node that cannot see them fails the sweep with a one-line error instead of writing elsewhere.

Cells: one task each, asking for the cell's CPUs (the validation thread count), memory (cell.cell_resources)
and any custom resource its backend declares (`Backend.cell_resources`, e.g. {"GPU": 1}). Workers are
reused by cells of ONE backend only (a runtime_env per backend: Ray pools workers by runtime_env), up to
`cells_per_worker` cells each, so a cell no longer pays a Python start plus the edgec and toolchain imports
(seconds, for cells of a few seconds), and no worker loads every toolchain. A worker still runs one cell at
a time, so a worker killed mid-cell (OOM killer, a lost node) loses only that cell, which Ray retries in a
new worker (max_retries); a cell that fails for its own reasons returns an error outcome and is never
retried; a cell whose worker dies on every attempt becomes an error row. cells_per_worker=1 gives each cell
a fresh process (the state of a standalone `edgec compile`: OpenVINO numbers generated layers per process,
so a reused process writes different, equivalent files, as the local executor does; the cell cache reuses
either, see cache.py).

Timing: nodes are grouped by type (the `edgec/node-type` node label if set, else architecture, CPU model,
CPU count and GPUs, probed on the node); one node of each type times every cell it can run, interleaved,
holding all of that node's CPUs so nothing else runs there meanwhile. A report row says which node timed
it, and speedups only divide latencies from one node.

Security of the private cluster (no --ray-address): every Ray process binds to 127.0.0.1 only (checked
after start), no dashboard, usage stats off, token authentication on with a random per-run token kept in
this process's environment (so other users of a shared host cannot submit work to it, and nothing is
written to ~/.ray), and Ray's temp dir (sessions, logs, sockets, spilled objects) under
$EDGEC_CACHE_DIR/ray. A multi-host cluster is the user's: see the README's "Sweeps on a Ray cluster".
"""
from __future__ import annotations

import contextlib
import os
import platform
import secrets
import socket
import time
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from edgec.core.compare.bench import first_line, time_cells
from edgec.core.compare.cell import CellBar, CellJob, CellOutcome, TimingGroup, run_cell
from edgec.core.errors import EdgecError, InputError
from edgec.core.sandbox import cache_root

NODE_TYPE_LABEL = "edgec/node-type"
MAX_RETRIES = 2  # attempts after the first when a worker or node dies mid-cell
CELLS_PER_WORKER = 16  # a bound on what a leaking toolchain can pile up in one worker
BACKEND_ENV = "EDGEC_CELL_BACKEND"  # set in a cell worker's runtime_env: one worker pool per backend
_PRIVATE_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    # Ray's own switch for "no cluster networking": every node and driver address becomes 127.0.0.1,
    # and Ray's servers listen on loopback only when their node address is 127.0.0.1.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}


def _import_ray():
    try:
        import ray
    except ImportError:
        raise InputError("--executor ray needs Ray, which is not installed; fix: pip install 'edgec[ray]'") from None
    return ray


# --- what runs on the nodes (module-level so Ray pickles them by reference) -------------------------

def _node_label() -> str:
    import ray
    return f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:8]}"


def _cell_task(job: CellJob, tracker) -> CellOutcome:
    import ray
    label = _node_label()
    if tracker is not None:
        ray.get(tracker.start.remote(job.name, label, os.getpid()))
    return run_cell(job, node=label)


def _time_task(cells, feeds, threads, runs, warmup, memory, min_seconds=0.0) -> dict:
    return time_cells(cells, feeds, threads=threads, runs=runs, warmup=warmup, memory=memory, min_seconds=min_seconds)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _probe_task(model: str | None, model_sha: str | None, writable: str | None, readable: list[str]) -> dict:
    from edgec.core.model_io import sha256_file
    from edgec.core.version import __version__

    problems = []
    if model is not None:
        if not Path(model).is_file():
            problems.append(f"cannot see the model {model}")
        elif sha256_file(model) != model_sha:
            problems.append(f"sees a different file at {model} (sha256 differs)")
    if writable is not None and not os.access(writable, os.W_OK):
        problems.append(f"cannot write {writable}")
    problems += [f"cannot see {p}" for p in readable if not os.path.exists(p)]
    return {"label": _node_label(), "host": socket.gethostname(), "machine": platform.machine(),
            "cpu": _cpu_model(), "cpu_count": os.cpu_count(), "edgec_version": __version__, "problems": problems}


def _check_reachable(address: str) -> None:
    """Fail in seconds, not minutes: ray.init retries an unreachable GCS for a long time."""
    if address in ("auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5):
            pass
    except (OSError, ValueError) as e:
        raise InputError(f"cannot connect to the Ray cluster at --ray-address {address}: {e}; fix: give the head "
                         "node's HOST:PORT (`ray status` on it), or drop --ray-address for a private local "
                         "cluster") from None


class _Tracker:
    """Which cells have started, where and how often (a Ray actor): the bar's running count, the
    report's attempts, and what a fault test needs to find a worker mid-cell."""

    def __init__(self):
        self.started: dict[str, list] = {}

    def start(self, name: str, node: str, pid: int) -> None:
        self.started.setdefault(name, []).append((node, pid))

    def state(self) -> dict:
        return self.started


# --- the driver side ----------------------------------------------------------------------------

def _fits(node_resources: Mapping, need: Mapping) -> bool:
    return all(node_resources.get(k, 0) >= v for k, v in need.items() if v)


class RayExecutor:
    """Cells on a Ray cluster: an existing one (address "auto" or HOST:PORT, or one this process is
    already connected to), else a private loopback cluster on this machine started here and stopped by
    close(). num_cpus / object_store_memory cap the private cluster."""

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None,
                 object_store_memory: int = 256 << 20, max_retries: int = MAX_RETRIES,
                 cells_per_worker: int = CELLS_PER_WORKER):
        """cells_per_worker: how many cells of one backend a worker process runs before Ray replaces it; 1 = a
        fresh process per cell (a Python + toolchain start each, seconds that matter for small models)."""
        ray = self._ray = _import_ray()
        if cells_per_worker < 1:
            raise InputError(f"cells_per_worker must be >= 1 (got {cells_per_worker})")
        self.max_retries = max_retries
        self.cells_per_worker = cells_per_worker
        self._private_cluster = None
        self._owns_connection = False  # connected by us to an existing cluster: disconnect on close
        self._private = False
        self._tracker = None
        self._nodes: list[dict] | None = None
        self.attempts: dict[str, int] = {}
        if ray.is_initialized():
            if address is not None:
                raise InputError(f"this process is already connected to a Ray cluster; --ray-address {address} "
                                 "cannot also be used (drop it, or ray.shutdown() first)")
            self.address = ray.get_runtime_context().gcs_address
        elif address is not None:
            _check_reachable(address)
            try:
                ray.init(address=address, namespace="edgec", log_to_driver=False, configure_logging=False)
            except (ConnectionError, ValueError, RuntimeError, ray.exceptions.RayError) as e:
                raise InputError(f"cannot connect to the Ray cluster at --ray-address {address}: {first_line(e)}; "
                                 "fix: check `ray status` on a node of it (and RAY_AUTH_TOKEN when it uses token "
                                 "auth), or drop --ray-address for a private local cluster") from None
            self._owns_connection = True
            self.address = ray.get_runtime_context().gcs_address
        else:
            self._start_private(num_cpus, object_store_memory)
        self._tracker = ray.remote(num_cpus=0)(_Tracker).remote()

    def _start_private(self, num_cpus, object_store_memory) -> None:
        self._private_cluster = local_cluster(nodes=1, cpus_per_node=num_cpus or os.cpu_count() or 1,
                                              object_store_memory=object_store_memory)
        self._private_cluster.__enter__()
        self._private = True
        self.address = self._ray.get_runtime_context().gcs_address

    # -- nodes --

    def _alive(self) -> list[dict]:
        return [n for n in self._ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) > 0]

    def _probe(self, *, model=None, model_sha=None, writable=None, readable=()) -> list[dict]:
        """Every live node's facts, checked against the paths the sweep needs."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        ray = self._ray
        nodes = self._alive()
        if not nodes:
            raise EdgecError(f"the Ray cluster at {self.address} has no live node with CPUs; fix: add nodes "
                             "(ray start --address ...) or drop --executor ray")
        probe = ray.remote(num_cpus=0, max_calls=1)(_probe_task)
        refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(model, model_sha, writable, list(readable)) for n in nodes]
        facts = ray.get(refs)
        from edgec.core.version import __version__
        out = []
        for n, f in zip(nodes, facts):
            if f["edgec_version"] != __version__:
                f["problems"].append(f"runs edgec {f['edgec_version']}, the driver {__version__}")
            if f["problems"]:
                raise InputError(f"Ray node {f['label']} ({n['NodeManagerAddress']}) {'; '.join(f['problems'])}; "
                                 "fix: put the model, data and -o on a path every node mounts at the same place, "
                                 "and install the same edgec on every node")
            res = n["Resources"]
            gpus = int(res.get("GPU", 0))
            kind = (n.get("Labels") or {}).get(NODE_TYPE_LABEL) or (
                f"{f['machine']} {f['cpu']}, {int(res.get('CPU', 0))} CPUs" + (f", {gpus} GPUs" if gpus else ""))
            out.append({"id": n["NodeID"], "label": f["label"], "address": n["NodeManagerAddress"],
                        "type": kind, "resources": res})
        self._nodes = out
        return out

    def offers(self, resources: Mapping) -> bool:
        return any(_fits(n["Resources"], resources) for n in self._alive())

    # -- cells --

    def _task_options(self, job: CellJob) -> dict:
        r = job.resources or {}
        custom = dict(r.get("custom") or {})
        gpus = custom.pop("GPU", 0)
        opts = {"num_cpus": r.get("cpus", 1), "num_gpus": gpus, "max_retries": self.max_retries,
                "retry_exceptions": False}
        if self.cells_per_worker > 1:  # env_vars merge into the job's runtime_env; nothing else changes
            opts["runtime_env"] = {"env_vars": {BACKEND_ENV: job.backend}}
        if r.get("memory"):
            opts["memory"] = r["memory"]
        if custom:
            opts["resources"] = custom
        return opts

    def _unplaceable(self, job: CellJob) -> str | None:
        opts = self._task_options(job)
        need = {"CPU": opts["num_cpus"], "GPU": opts["num_gpus"], "memory": opts.get("memory", 0),
                **opts.get("resources", {})}
        if any(_fits(n["Resources"], need) for n in self._alive()):
            return None
        shown = ", ".join(f"{k}={v / (1 << 30):.1f} GiB" if k == "memory" else f"{k}={v:g}"
                          for k, v in need.items() if v)
        return f"no node of the Ray cluster offers what this cell asks for ({shown}); fix: add such a node"

    def compile(self, jobs: Sequence[CellJob]) -> Iterator[CellOutcome]:
        ray = self._ray
        if not jobs:
            return
        from edgec.core.model_io import sha256_file
        model = jobs[0].compile["model"]
        self._probe(model=model, model_sha=sha256_file(model), writable=str(Path(jobs[0].artifact).parent),
                    readable=[v for k in ("calibration", "validation")
                              if isinstance(v := jobs[0].compile.get(k), str)])
        task = ray.remote(max_calls=self.cells_per_worker)(_cell_task)
        bar = CellBar(len(jobs), desc="compare (ray)")
        pending: dict = {}
        try:
            for job in jobs:
                why = self._unplaceable(job)
                if why:
                    out = CellOutcome(job.name, "error", error=why, attempts=0)
                    bar.finished(out)
                    yield out
                    continue
                pending[task.options(**self._task_options(job)).remote(job, self._tracker)] = job
            last_check = time.monotonic()
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                started = ray.get(self._tracker.state.remote())
                for ref in ready:
                    job = pending.pop(ref)
                    tries = len(started.get(job.name, ())) or 1
                    try:
                        out = ray.get(ref)
                    except ray.exceptions.RayError as e:  # the worker/node died on every attempt
                        out = CellOutcome(job.name, "error", error=f"Ray task failed after {tries} attempt(s): "
                                                                  f"{first_line(e)}")
                    out.attempts = tries
                    self.attempts[job.name] = tries
                    bar.set_running(sum(1 for j in pending.values() if j.name in started))
                    bar.finished(out)
                    yield out
                bar.set_running(sum(1 for j in pending.values() if j.name in started))
                if not ready and time.monotonic() - last_check > 10:
                    last_check = time.monotonic()
                    if not self._alive():
                        raise EdgecError(f"the Ray cluster at {self.address} lost every node with CPUs; "
                                         f"{len(pending)} cell(s) unfinished; re-run to resume")
        finally:
            for ref in pending:  # an interrupt or an error above: stop what is still queued or running
                try:
                    ray.cancel(ref, force=True)
                except Exception:
                    pass
            bar.close()

    def started(self) -> dict[str, list]:
        """{cell name: [(node label, worker pid), ...]} of every attempt so far."""
        return self._ray.get(self._tracker.state.remote())

    # -- timing --

    def time(self, cells, feeds, *, threads, runs: int, warmup: int, memory: bool, min_seconds: float = 0.0) -> list:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        if not cells:
            return []
        ray = self._ray
        nodes = self._probe(readable=[c.artifact for c in cells])
        by_type: dict[str, list[dict]] = {}
        for n in nodes:
            by_type.setdefault(n["type"], []).append(n)
        # The type with the most nodes first: its group gives the rows' latencies (see merge_timing).
        order = sorted(by_type, key=lambda t: (-len(by_type[t]), t))
        timer = ray.remote(max_calls=1, max_retries=0)(_time_task)
        launched = []
        for kind in order:
            node = sorted(by_type[kind], key=lambda n: n["id"])[0]
            mine = [c for c in cells if _fits(node["resources"], c.resources or {})]
            if not mine:
                continue
            res = node["resources"]
            ref = timer.options(num_cpus=res.get("CPU", 1), num_gpus=res.get("GPU", 0),
                                scheduling_strategy=NodeAffinitySchedulingStrategy(node["id"], soft=False)).remote(
                [(c.name, c.backend, c.artifact) for c in mine], dict(feeds), threads, runs, warmup, memory,
                min_seconds)
            launched.append((kind, node, mine, ref))
        groups = []
        for kind, node, mine, ref in launched:
            try:
                results = ray.get(ref)
            except ray.exceptions.RayError as e:
                results = {c.name: {"latency": None, "memory": None,
                                    "error": f"timing on {node['label']} failed: {first_line(e)}"} for c in mine}
            groups.append(TimingGroup(kind, node["label"], results))
        return groups

    # -- report and teardown --

    def describe(self) -> dict:
        ray = self._ray
        return {
            "name": "ray", "ray_version": ray.__version__,
            "cluster": "private, 127.0.0.1 only" if self._private else self.address,
            "nodes": [{"node": n["label"], "address": n["address"], "type": n["type"],
                       "cpus": n["resources"].get("CPU"), "gpus": n["resources"].get("GPU", 0)}
                      for n in (self._nodes or [])],
            "storage": "shared path: each task writes its artifact and cell cache entry under -o itself",
            "max_retries": self.max_retries, "cells_per_worker": self.cells_per_worker,
            "retried": {k: v for k, v in self.attempts.items() if v > 1},
        }

    def close(self) -> None:
        ray = self._ray
        if self._tracker is not None:
            try:
                ray.kill(self._tracker)
            except Exception:
                pass
            self._tracker = None
        if self._owns_connection and ray.is_initialized():
            ray.shutdown()  # an attached cluster only loses this driver
        self._owns_connection = False
        if self._private_cluster is not None:
            cm, self._private_cluster = self._private_cluster, None
            cm.__exit__(None, None, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# Ray's unix sockets live under <temp>/session_<date>_<time>_<us>_<pid>/sockets/; AF_UNIX paths end at 107 bytes.
_MAX_TEMP_ROOT = 40


@contextlib.contextmanager
def local_cluster(nodes: int = 1, cpus_per_node: int = 1, memory_per_node: int | None = None,
                  object_store_memory: int = 128 << 20, niceness: int = 0):
    """A Ray cluster of `nodes` raylets on this machine, bound to 127.0.0.1 only, with this process
    connected as its driver; stopped on exit. What `--executor ray` without an address runs (one node),
    and what the tests and benchmarks/bench_ray.py use to stand up several nodes on one host.

    No dashboard, usage stats off, token auth with a random token in this process's environment (put back
    on exit), and every Ray file under $EDGEC_CACHE_DIR/ray. Workers run at `niceness` (Ray's own default
    is 15, which would let every other process on the host preempt the cells and their timing, unlike a
    local sweep).
    """
    ray = _import_ray()
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        raise EdgecError("this process is already connected to a Ray cluster; ray.shutdown() it first")
    root = cache_root()
    if len(str(root)) > _MAX_TEMP_ROOT:
        raise InputError(f"EDGEC_CACHE_DIR {root} is too long for Ray's unix sockets (at most {_MAX_TEMP_ROOT} "
                         "characters); fix: point EDGEC_CACHE_DIR at a shorter path for --executor ray")
    temp = root / "ray"
    temp.mkdir(parents=True, exist_ok=True)
    env = dict(_PRIVATE_ENV, RAY_TMPDIR=str(root), RAY_worker_niceness=str(niceness))  # temp: $RAY_TMPDIR/ray
    if not os.environ.get("RAY_AUTH_TOKEN"):
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    _refresh_ray_config()
    # Read once when ray is imported, which may have happened before us.
    saved_flag, ray_constants.ENABLE_RAY_CLUSTER = ray_constants.ENABLE_RAY_CLUSTER, False
    node_args = {"num_cpus": cpus_per_node, "object_store_memory": object_store_memory,
                 "node_ip_address": "127.0.0.1"}
    if memory_per_node:
        node_args["memory"] = memory_per_node
    cluster = None
    try:
        cluster = Cluster(initialize_head=True, shutdown_at_exit=True,
                          head_node_args={**node_args, "include_dashboard": False, "temp_dir": str(temp)})
        for _ in range(nodes - 1):
            cluster.add_node(**node_args)
        ray.init(address=cluster.address, namespace="edgec", log_to_driver=False, configure_logging=False)
        exposed = sorted({n["NodeManagerAddress"] for n in ray.nodes()} - {"127.0.0.1"})
        if exposed or not cluster.address.startswith("127.0.0.1:"):
            raise EdgecError(f"the local Ray cluster did not bind to 127.0.0.1 (got {exposed or cluster.address}); "
                             "refusing to run on a network-reachable cluster")
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _refresh_ray_config()


def _refresh_ray_config() -> None:
    """Make this process re-read RAY_AUTH_MODE / RAY_AUTH_TOKEN (Ray caches both on first use; ray.init
    does the same refresh when it turns token auth on for a local cluster)."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
