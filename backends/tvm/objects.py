"""`tvm.compile` + `export_library`, one object file per fused function, each cached by content hash.

Why: LLVM's optimization and machine-code generation of the fused functions is most of a TVM compile's
own time, and most functions are the same from one compile to the next: the same model re-compiled (another
validation set, `compare`/`auto` cells, `edgec debug --bisect` candidates that keep one more tensor float,
a re-run after a crash), or a layout transpose / pooling / classifier that two precisions share. `tvm.compile`
builds every PrimFunc into one LLVM module and emits one object file; here each PrimFunc (after the same
Relax build pipeline, so with its final global symbol) is its own LLVM module, emitted to its own object
file on a thread pool (TVM's FFI releases the GIL, so LLVM runs on every core), and kept in edgec's cache
(core/cache.py, kind `tvm-objects`) under sha256(TVM version, target, the function's serialized TIR). The
Relax VM executable links against a one-instruction anchor library, and the objects are linked into the
same module.so as `export_library` addons, where the VM finds each function by its symbol, as it does in
a plain build.

Anything unexpected in this path (a TVM that builds differently, a link error) falls back to the plain
`tvm.compile`, with the reason in `backend_info.build_cache`; the artifact is validated either way.
"""
from __future__ import annotations

import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from edgec.core import cache, interrupt

KIND = "tvm-objects"
ANCHOR = "edgec_link_anchor"


def workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    env = os.environ.get("EDGEC_TVM_BUILD_JOBS")
    return max(1, int(env)) if env and env.isdigit() else max(1, n)


def _relax_to_vm(fused_mod, target):
    """What `relax.build` does before it builds the TIR: the default Relax pipeline and the VM codegen.
    Returns (builder, PrimFunc module, external modules, constants)."""
    from tvm import relax
    from tvm.relax import vm_build

    with target:
        mod = relax.get_pipeline("default")(fused_mod)
    attrs = dict(mod.attrs) if mod.attrs else {}
    ext_libs = list(attrs.get("external_mods", []))
    constants = dict(attrs.get("const_name_to_constant", {}))
    builder = relax.ExecBuilder()
    mod = vm_build._vmcodegen(builder, mod, "bytecode")
    return builder, vm_build._filter_tir(mod), ext_libs, constants


def _anchor(attrs):
    """A PrimFunc that does nothing: the VM executable needs one host library to import, and the .so built
    around it is where the functions' objects are linked."""
    import tvm
    from tvm import tirx

    f = tirx.PrimFunc([], tirx.Evaluate(tvm.tirx.const(0, "int32"))).with_attr("global_symbol", ANCHOR)
    return tvm.IRModule({ANCHOR: f}, attrs=attrs)


def function_key(gv, func, target, attrs) -> str:
    import tvm

    one = tvm.IRModule({gv: func}, attrs=attrs)
    return cache.key(KIND, tvm.__version__, str(target), tvm.ir.save_json(one))


def compile_module(fused_mod, target, out_path: Path, cross_cc: str | None) -> dict[str, Any]:
    import tvm
    from tvm.relax import vm_build

    t0 = time.perf_counter()
    builder, tir_mod, ext_libs, constants = _relax_to_vm(fused_mod, target)
    funcs = list(tir_mod.functions.items()) if tir_mod is not None else []
    attrs = tir_mod.attrs if tir_mod is not None else None
    with tempfile.TemporaryDirectory(prefix="edgec-tvm-obj-") as tmp:
        objs: list[str] = []
        todo = []
        hits = 0
        for i, (gv, f) in enumerate(funcs):
            k = function_key(gv, f, target, attrs)
            path = os.path.join(tmp, f"f{i}.o")
            got = cache.load_blob(KIND, k) if cache.enabled() else None
            if got is not None:
                Path(path).write_bytes(got[0])
                hits += 1
            else:
                todo.append((gv, f, k, path))
            objs.append(path)

        def build_one(item):
            gv, f, k, path = item
            interrupt.check()
            lib = tvm.tirx.build(tvm.IRModule({gv: f}, attrs=attrs), target=target)
            lib.write_to_file(path)
            cache.save_blob(KIND, k, Path(path).read_bytes(), {"function": gv.name_hint})

        t1 = time.perf_counter()
        n = min(workers(), len(todo)) or 1
        if n > 1:
            with ThreadPoolExecutor(max_workers=n, thread_name_prefix="edgec-tvm-build") as pool:
                for _ in pool.map(build_one, todo):
                    interrupt.check()
        else:
            for item in todo:
                build_one(item)
        t2 = time.perf_counter()
        lib = tvm.tirx.build(_anchor(attrs), target=target)
        ex = vm_build.VMExecutable(_link(builder, target, lib, ext_libs, constants))
        kwargs = {}
        if cross_cc:
            from tvm.support import cc

            kwargs["fcompile"] = cc.cross_compiler(cross_cc)
        ex.export_library(str(out_path), addons=list(objs), **kwargs)
    return {"compile_seconds": round(time.perf_counter() - t0, 2),
            "build_cache": {"functions": len(funcs), "hits": hits, "built": len(todo), "jobs": n,
                            "codegen_seconds": round(t2 - t1, 2)}}


def _link(builder, target, lib, ext_libs, constants):
    from tvm.relax import _ffi_api

    return _ffi_api.VMLink(builder, target, lib, ext_libs, constants)
