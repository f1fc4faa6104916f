"""Whole `module.so` builds, cached by everything the build reads (kind `tvm-module`).

Why: with every function's object cached (objects.py) a re-compile still spends ~2 s in TVM's ONNX import,
layout conversion, legalization, fusion and scheduling, only to arrive at the same functions and link
the same library. When nothing the build reads has changed -- the lowered model's bytes, the target, the
lowering options, the tuning records it applies, TVM's and the cross compiler's versions, and this
package's own code -- the library is the one built before, and is copied instead. A change to any of
them (other weights, another precision, `--threads`, an edited schedule rule) misses here and still
reuses the unchanged functions' objects.

Not used while tuning (`tune=true`): the point there is to search again. The copy is validated like a
build; the manifest says which it was (`backend_info.module_cache`).
"""
from __future__ import annotations

import functools
import hashlib
import time
from pathlib import Path
from typing import Any

from edgec.core import cache

KIND = "tvm-module"


def key(model_bytes: bytes, tvm_target: dict, precision: str, options: dict, records_file: Path | None,
        cross_cc: str | None) -> str:
    import tvm
    import tvm_ffi

    lowering = {k: options[k] for k in ("batch", "layout", "schedule", "use_database") if k in options}
    return cache.key(KIND, tvm.__version__, getattr(tvm_ffi, "__version__", ""), _code(), tvm_target, precision,
                     lowering, cache.file_key(records_file) if records_file is not None else None, cross_cc,
                     hashlib.sha256(model_bytes).digest())


def restore(k: str | None, lib: Path) -> dict | None:
    """Write the cached library to `lib` and return what the build reported, or None on a miss."""
    if k is None or not cache.enabled():
        return None
    t = time.perf_counter()
    got = cache.load_blob(KIND, k)
    if got is None:
        return None
    data, meta = got
    cache.write_atomic(lib, data)
    info = dict(meta["info"])
    # What this compile did is a copy: the build's own codegen report moves under module_cache.
    built = {name: info.pop(name) for name in ("build_cache", "compile_seconds") if name in info}
    return {"info": info, "params": meta["params"],
            "module_cache": {"hit": True, "copy_seconds": round(time.perf_counter() - t, 3), "build": built}}


def store(k: str | None, lib: Path, info: dict[str, Any], params: list) -> None:
    if k is None:
        return
    cache.save_blob(KIND, k, Path(lib).read_bytes(), {"info": info, "params": params})


@functools.lru_cache(maxsize=1)
def _code() -> str:
    return cache.code_key(Path(__file__).resolve().parent)
