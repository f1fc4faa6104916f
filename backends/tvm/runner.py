"""Running a TVM module: in this process (host targets) or on a board over TVM RPC.

The RPC runner is how TVM users check a cross-compiled module: upload the .so to the board's RPC
server, load it there, feed inputs, bring outputs back; latency comes from the board's own
`time_evaluator`, so it excludes network round trips.
"""
from __future__ import annotations

import gc
import os
import socket
import time
from pathlib import Path
from typing import Mapping

import numpy as np

from edgec.core.backend import LatencyStats, Runner, TensorSpec
from edgec.core.errors import BackendError, InputError

# The user's own TVM_NUM_THREADS, before LocalRunner sets it for its pool (a later default runner must
# not inherit an earlier --threads).
_USER_THREADS = os.environ.get("TVM_NUM_THREADS", "")

# Where scripts/arm64_board.sh serves (it reads the same variable).
DEFAULT_BOARD = ("127.0.0.1", int(os.environ.get("EDGEC_BOARD_PORT", "9190")))


def parse_hostport(text: str) -> tuple[str, int]:
    host, _, port = str(text).rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"rpc={text!r}: give HOST:PORT of a TVM RPC server (python -m tvm.exec.rpc_server)")
    return host, int(port)


def listening(host: str, port: int, timeout: float = 1.0) -> bool:
    with socket.socket() as s:
        s.settimeout(timeout)
        return s.connect_ex((host, port)) == 0


def _flatten(out) -> list:
    import tvm

    if isinstance(out, (tvm.runtime.Tensor,)):
        return [out]
    return [x for o in out for x in _flatten(o)]


class _VmRunner(Runner):
    def __init__(self, lib, dev, inputs: list[TensorSpec], outputs: list[TensorSpec], threads: int | None):
        from tvm import relax

        self.dev = dev
        self.vm = relax.VirtualMachine(lib, dev)
        self.inputs, self.outputs = inputs, outputs
        self.threads = threads

    def _args(self, feeds: Mapping[str, np.ndarray]):
        import tvm

        missing = [s.name for s in self.inputs if s.name not in feeds]
        if missing:
            raise InputError(f"no feed for input '{missing[0]}' (inputs: {[s.name for s in self.inputs]})")
        # np.require, not ascontiguousarray: that one turns a 0-d (scalar) input into shape [1].
        return [tvm.runtime.tensor(np.require(feeds[s.name], s.dtype, "C"), self.dev) for s in self.inputs]

    def run(self, feeds):
        n = self._feed_batch(feeds)
        if n is None:
            return self._named(self.vm["main"](*self._args(feeds)))
        return self._run_chunked(feeds, n)

    def _named(self, result) -> dict:
        """The VM's result by output name. A sequence output comes back as a tuple of tensors: it stays a list
        (flattening it would hand its first element over as the whole output)."""
        import tvm

        if not any(s.dtype.startswith("sequence(") for s in self.outputs):
            return {spec.name: o.numpy() for spec, o in zip(self.outputs, _flatten(result))}
        items = [result] if len(self.outputs) == 1 or isinstance(result, tvm.runtime.Tensor) else list(result)
        return {spec.name: ([t.numpy() for t in _flatten(item)] if spec.dtype.startswith("sequence(")
                            else _flatten(item)[0].numpy())
                for spec, item in zip(self.outputs, items)}

    def _feed_batch(self, feeds) -> int | None:
        """The common leading size of the feeds when it differs from the compiled static batch, else None."""
        b = self.inputs[0].shape[0] if self.inputs and self.inputs[0].shape else None
        sizes = {np.shape(feeds[s.name])[0] for s in self.inputs if s.name in feeds and np.ndim(feeds[s.name])}
        ranks_match = all(np.ndim(feeds[s.name]) == len(s.shape) for s in self.inputs if s.name in feeds)
        if b is None or len(sizes) != 1 or sizes == {b} or not ranks_match or b == 0:
            return None
        return sizes.pop()

    def _run_chunked(self, feeds, n: int) -> dict[str, np.ndarray]:
        """A static-batch module fed another batch size: run it in chunks of its batch, zero-padding the last
        (batch items are independent in the models edgec compiles), and cut the outputs back to n."""
        b = int(self.inputs[0].shape[0])
        parts: dict[str, list] = {o.name: [] for o in self.outputs}
        for start in range(0, n, b):
            chunk = {}
            for s in self.inputs:
                x = np.asarray(feeds[s.name])[start:start + b]
                if len(x) < b:
                    x = np.concatenate([x, np.zeros((b - len(x),) + x.shape[1:], x.dtype)])
                chunk[s.name] = x
            outs = _flatten(self.vm["main"](*self._args(chunk)))
            for spec, o in zip(self.outputs, outs):
                parts[spec.name].append(o.numpy())
        return {k: np.concatenate(v)[:n] for k, v in parts.items()}

    def benchmark(self, feeds, runs: int = 50, warmup: int = 5) -> LatencyStats:
        """Timed on the device by TVM's time_evaluator (one run per repeat), so over RPC the numbers
        are the board's, not the network's."""
        args = self._args(feeds)
        self.vm.set_input("main", *args)
        for _ in range(warmup):
            self.vm.invoke_stateful("main")
        res = self.vm.time_evaluator("invoke_stateful", self.dev, number=1, repeat=runs)("main")
        times = np.array(res.results) * 1e3
        return LatencyStats(runs, warmup, self.threads, float(np.median(times)), float(np.percentile(times, 90)),
                            float(times.mean()), float(times.min()))


def load_fresh(lib_path: Path):
    """tvm.runtime.load_module dlopens by path, and the dynamic loader hands back the library already
    loaded at that path: recompiling into the same folder and loading again in one process would run
    the previous model. A private copy under a unique name is always the library on disk now; it is
    unlinked once loaded (the mapping stays valid)."""
    import shutil
    import tempfile

    import tvm

    tmp = tempfile.mkdtemp(prefix="edgec-tvm-")
    copy = Path(tmp) / f"{os.getpid()}-{time.monotonic_ns()}-{Path(lib_path).name}"
    try:
        shutil.copyfile(lib_path, copy)
        return tvm.runtime.load_module(str(copy))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class LocalRunner(_VmRunner):
    def __init__(self, lib_path: Path, inputs, outputs, threads: int | None = None):
        import tvm

        n = pool_threads(threads)
        # TVM caps its pool at TVM_NUM_THREADS or, unset, at half the logical CPUs on x86 (it assumes
        # two hyper-threads per core): on a host without SMT (this 2-core CI box) every artifact ran on
        # one core, and config_threadpool alone could not raise it. EfficientNet-Lite0 fp32 here: 33.8 ms
        # per image on the default pool, 18.6 ms on both cores. The schedules' parallel loops are sized
        # for the target's num-cores (physical cores), which is what the pool now gets. The pool is sized when
        # the process first starts it: a process whose pool TVM already started keeps that size.
        os.environ["TVM_NUM_THREADS"] = str(n)
        tvm.get_global_func("runtime.config_threadpool")(0, n)  # (affinity mode 0 = none, n threads)
        super().__init__(load_fresh(lib_path), tvm.cpu(), inputs, outputs, n)
        self.where = "host"


def pool_threads(threads: int | None) -> int:
    """--threads when given; else TVM_NUM_THREADS when the user set it; else the physical cores."""
    if threads:
        return int(threads)
    if _USER_THREADS.isdigit() and int(_USER_THREADS) > 0:
        return int(_USER_THREADS)
    from edgec.backends.tvm.targets import host_cores

    return host_cores()


class RpcRunner(_VmRunner):
    def __init__(self, lib_path: Path, inputs, outputs, host: str, port: int, where: str,
                 threads: int | None = None, connect_timeout: float = 120):
        from tvm import rpc

        # A TVM RPC server serves one session at a time; while the previous one winds down (or a port
        # probe is being turned away) connecting fails, so retry for a while before giving up.
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                self.session = rpc.connect(host, port, session_timeout=0)
                break
            except Exception as e:
                if time.monotonic() > deadline:
                    raise BackendError(f"cannot connect to the TVM RPC server at {host}:{port} "
                                       f"({(str(e).strip().splitlines() or [''])[-1][:120]}); is the board's "
                                       "rpc_server running?") from e
                time.sleep(2)
        self.session.upload(str(lib_path))
        lib = self.session.load_module(Path(lib_path).name)
        if threads:
            self.session.get_function("runtime.config_threadpool")(0, int(threads))
        super().__init__(lib, self.session.cpu(), inputs, outputs, threads)
        self.where = where
        self.address = f"{host}:{port}"

    def close(self):
        # Drop every handle on remote objects, then the session: the server frees its slot at once.
        self.vm = None
        self.session = None
        gc.collect()
