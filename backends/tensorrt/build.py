"""Builder configuration and the engine build: compute capabilities, optimization level, workspace,
optimization profile, DLA, timing cache.

The timing cache records kernel timings measured on a GPU, so it only fills where standard TensorRT
builds on one; it persists in edgec's cache dir (one file per toolchain version and GPU) and every build
reuses and extends it. TensorRT-RTX has none (its builder no-ops it since 1.2: kernels are compiled for
the GPU when the engine loads), so with RTX the manifest says it was not used.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

from edgec.core.errors import BackendError, UnsupportedError

from . import config as cfgmod
from .network import Parsed
from .targets import GpuTarget
from .toolchain import Gpu, Toolchain


def _timing_cache_path(opts: dict, tc: Toolchain, gpu: Gpu) -> Path | None:
    choice = opts["timing_cache"]
    if choice is False or tc.is_rtx:
        return None
    if isinstance(choice, str) and choice != "auto":
        return Path(choice).expanduser()
    tag = re.sub(r"[^A-Za-z0-9._-]", "_", f"{tc.name}-{tc.version}-{gpu.compute_capability or 'nogpu'}")
    return cfgmod.cache_root() / f"timing-{tag}.cache"


def configure(trt, tc: Toolchain, gpu: Gpu, parsed: Parsed, target: GpuTarget, opts: dict,
              shapes: dict[str, tuple]) -> tuple[object, dict]:
    b = parsed.builder
    config = b.create_builder_config()
    info: dict = {}
    config.builder_optimization_level = int(opts["opt_level"])
    info["builder_optimization_level"] = config.builder_optimization_level  # read back: what the builder took
    if opts["workspace"]:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts["workspace"]) << 20)
        info["workspace_mib"] = config.get_memory_pool_limit(trt.MemoryPoolType.WORKSPACE) >> 20
    if tc.is_rtx:
        sms = target.compute_capabilities
        config.num_compute_capabilities = len(sms)
        for i, sm in enumerate(sms):
            config.set_compute_capability(getattr(trt.ComputeCapability, sm), i)
    if shapes:
        profile = b.create_optimization_profile()
        for name, (lo, mid, hi) in shapes.items():
            profile.set_shape(name, lo, mid, hi)
        config.add_optimization_profile(profile)
        info["optimization_profile"] = {n: {"min": list(lo), "opt": list(mid), "max": list(hi)}
                                        for n, (lo, mid, hi) in shapes.items()}
    if opts["dla_core"] is not None:
        if tc.is_rtx:
            raise UnsupportedError("dla_core: TensorRT-RTX has no DLA support; DLA is on Jetson with standard "
                                   "TensorRT (-O toolchain=tensorrt on the device)")
        n = b.num_DLA_cores
        if opts["dla_core"] >= n:
            raise UnsupportedError(f"dla_core={opts['dla_core']}: this device has {n} DLA core(s)")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(opts["dla_core"])
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        info["dla_core"] = int(opts["dla_core"])
    path = _timing_cache_path(opts, tc, gpu)
    if path is not None:
        data = path.read_bytes() if path.is_file() else b""
        cache = config.create_timing_cache(data)
        config.set_timing_cache(cache, False)
        info["timing_cache"] = {"path": str(path), "reused_bytes": len(data)}
    else:
        info["timing_cache"] = ("not used: TensorRT-RTX has no timing cache (kernels are compiled for the GPU "
                                "when the engine loads)" if tc.is_rtx else "off (timing_cache=false)")
    return config, info


def build(trt, tc: Toolchain, gpu: Gpu, parsed: Parsed, config, info: dict, logger) -> tuple[bytes, float]:
    t0 = time.perf_counter()
    with logger.capture_stdio():
        plan = parsed.builder.build_serialized_network(parsed.network, config)
    seconds = time.perf_counter() - t0
    if plan is None:
        errors = logger.errors()
        first = (errors[-1] if errors else "no error logged").strip().splitlines()[0][:300]
        raise BackendError(f"TensorRT {tc.version} failed to build the engine: {first}")
    tcache = info.get("timing_cache")
    if isinstance(tcache, dict):
        path = Path(tcache["path"])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            blob = bytes(memoryview(config.get_timing_cache().serialize()))
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(blob)
            tmp.replace(path)  # atomic: a concurrent build never reads half a cache
            tcache["saved_bytes"] = len(blob)
        except OSError as e:
            tcache["saved"] = f"not saved: {e.strerror}"
    return bytes(memoryview(plan)), seconds

