"""MetaSchedule's tensor intrinsics, imported in seconds instead of most of a minute.

`tvm.s_tir.tensor_intrin` defines ~250 TVMScript prim_funcs when imported (CUDA, ROCm, ARM, x86 ...), and
TVMScript's `@T.prim_func` calls `inspect.stack()` for each of them, twice (the decorator, and again when
the parser evaluates the decorator expression). `inspect.stack()` reads every frame's source context, and
for the frozen importlib frames of an import that lookup (`inspect.getmodule`) scans all of `sys.modules`:
the more a process has imported (onnx, onnxruntime, OpenVINO, pytest ...), the slower. Profiled in a
compile of a one-Mul model (cProfile, load 7 on 2 cores): 287 of 296 s were this import, 266 s of them
`inspect.stack`, 257 s of those `inspect.getmodule`; unprofiled it cost 35-53 s on a quiet machine and
up to 95 s inside the test suite. MetaSchedule imports it at its first `TuneContext` (sampled schedules,
tuning) and in every builder worker.

Here the import runs with an `inspect.stack` that builds the same `FrameInfo` records (frame, file name,
line, function, the source line from linecache) without the scan. TVMScript reads only those fields
(`tvm.script.parser.core.utils.is_defined_in_class`, `resolve_closure_vars`).

And only the CPU parts are imported: every edgec TVM target is an llvm CPU (targets.py), whose schedule
rules tensorize with the x86, ARM and RISC-V intrinsics, while the package's `__init__` also defines
CUDA's (5.0 of the import's 6.9 s past `import tvm`, -X importtime here) and ROCm's and Hexagon's (1.0 s).
The package is registered without its `__init__`, so MetaSchedule's own `import tvm.s_tir.tensor_intrin`
(TuneContext, builder workers) finds it done; any other part is imported on first attribute access.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import linecache
import sys
import threading

_lock = threading.RLock()  # re-entered when a part being imported asks the package for another (__getattr__)
MODULE = "tvm.s_tir.tensor_intrin"
CPU_PARTS = ("x86", "arm_cpu", "riscv_cpu")  # what the package's __init__ imports for llvm, less rocm/hexagon


def _stack(context: int = 1) -> list[inspect.FrameInfo]:
    """inspect.stack(context) as Python 3.11 computes it (same fields, same context window), minus the
    sys.modules scan that `getframeinfo` does to find each frame's module."""
    out = []
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        filename, lineno = code.co_filename, frame.f_lineno
        lines = index = None
        if context > 0 and lineno:
            src = linecache.getlines(filename, frame.f_globals)
            if src:
                start = max(0, min(lineno - 1 - context // 2, len(src) - context))
                lines, index = src[start:start + context], lineno - 1 - start
        out.append(inspect.FrameInfo(frame, filename, lineno, code.co_name, lines, index))
        frame = frame.f_back
    return out


def import_tensor_intrinsics() -> None:
    """Import tvm.s_tir.tensor_intrin (once per process) with the fast stack."""
    with _lock:  # held until every CPU part is in: the package is in sys.modules before they are
        if MODULE in sys.modules:
            return
        _with_fast_stack(_import_cpu_parts)


def _with_fast_stack(fn):
    real = inspect.stack
    inspect.stack = _stack
    try:
        return fn()
    finally:
        inspect.stack = real


def _import_cpu_parts() -> None:
    spec = importlib.util.find_spec(MODULE)
    pkg = importlib.util.module_from_spec(spec)

    def __getattr__(name: str):  # PEP 562: `tensor_intrin.cuda` and the like, imported when first asked for
        if not name.startswith("__"):
            try:
                with _lock:
                    return _with_fast_stack(lambda: importlib.import_module(f"{MODULE}.{name}"))
            except ModuleNotFoundError:
                pass
        raise AttributeError(f"module {MODULE!r} has no attribute {name!r}")

    pkg.__getattr__ = __getattr__
    sys.modules[MODULE] = pkg
    try:
        for part in CPU_PARTS:
            importlib.import_module(f"{MODULE}.{part}")
    except BaseException:
        for name in [m for m in sys.modules if m == MODULE or m.startswith(MODULE + ".")]:
            del sys.modules[name]
        raise
    parent, _, child = MODULE.rpartition(".")
    setattr(sys.modules[parent], child, pkg)
