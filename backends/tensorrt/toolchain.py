"""Which TensorRT is installed, and whether a GPU is here to run what it builds.

Two toolchains share one Python API: standard TensorRT (`tensorrt`, installed from NVIDIA's index on a
GPU machine or with JetPack on a Jetson) and TensorRT-RTX (`tensorrt_rtx`; the standalone PyPI wheels
`tensorrt-rtx-cu12-libs` + `-bindings` import as `tensorrt_rtx_bindings`). TensorRT-RTX builds engines
ahead of time on a machine without a GPU, so it is what `pip install 'edgec[tensorrt]'` installs.
Differences that matter to edgec: RTX has no DLA, no timing cache (its builder no-ops it; kernels are
JIT-compiled on the GPU at load time), no SM90, and compute capabilities are chosen explicitly.
"""
from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from types import ModuleType

from edgec.core import probe
from edgec.core.errors import BackendError

TOOLCHAINS = ("auto", "tensorrt", "tensorrt-rtx")
# Import names in the order tried; the first that imports wins.
MODULES = {
    "tensorrt": ("tensorrt", "tensorrt_bindings"),
    "tensorrt-rtx": ("tensorrt_rtx", "tensorrt_rtx_bindings"),
}
INSTALL = {
    "tensorrt": "install NVIDIA TensorRT on the GPU machine (pip install tensorrt --extra-index-url "
                "https://pypi.nvidia.com, or JetPack on a Jetson)",
    "tensorrt-rtx": "pip install 'edgec[tensorrt]' (TensorRT-RTX: tensorrt-rtx-cu12-libs + tensorrt-rtx-cu12-bindings)",
}


@dataclass(frozen=True)
class Toolchain:
    name: str  # "tensorrt" | "tensorrt-rtx"
    module: ModuleType
    module_name: str

    @property
    def version(self) -> str:
        return str(getattr(self.module, "__version__", "?"))

    @property
    def is_rtx(self) -> bool:
        return self.name == "tensorrt-rtx"

    def compute_capabilities(self) -> list[str]:
        """The SMxx a builder can target ahead of time ([] for standard TensorRT: it builds for the GPU it runs on)."""
        cc = getattr(self.module, "ComputeCapability", None)
        if cc is None:
            return []
        return [n for n in cc.__members__ if n.startswith("SM")]

    def describe(self) -> dict:
        d = {"name": self.name, "module": self.module_name, "version": self.version}
        try:
            d["onnx_parser"] = str(self.module.get_nv_onnx_parser_version())
        except Exception:
            pass
        return d


@functools.lru_cache(maxsize=None)
def _import(name: str) -> tuple[ModuleType, str] | None:
    for mod in MODULES[name]:
        try:
            return importlib.import_module(mod), mod
        except ImportError:
            continue
        except Exception:  # a broken install (missing libnvinfer) raises OSError at import
            continue
    return None


# Distributions whose metadata carries each toolchain's version (JetPack's tensorrt has none: imported then).
DISTS = {
    "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt-cu12-bindings", "tensorrt-cu13-bindings"),
    "tensorrt-rtx": ("tensorrt-rtx", "tensorrt-rtx-cu12-bindings", "tensorrt-rtx-cu13-bindings"),
}


def installed() -> list[str]:
    """The toolchains whose module is found (not imported: listing backends must stay cheap)."""
    return [n for n in MODULES if any(probe.installed(m) for m in MODULES[n])]


def version(name: str) -> str:
    return probe.dist_version(*DISTS[name]) or resolve(name).version


def resolve(choice: str = "auto") -> Toolchain:
    """`auto`: standard TensorRT when installed (the user put it there for their GPU), else TensorRT-RTX."""
    order = ("tensorrt", "tensorrt-rtx") if choice == "auto" else (choice,)
    for name in order:
        found = _import(name)
        if found is not None:
            return Toolchain(name, *found)
    if choice == "auto":
        raise BackendError(f"no TensorRT is installed (tried modules {', '.join(sum(MODULES.values(), ()))}); fix: "
                           f"{INSTALL['tensorrt-rtx']}")
    raise BackendError(f"toolchain={choice} is not installed (module {' or '.join(MODULES[choice])}); "
                       f"fix: {INSTALL[choice]}")


@dataclass(frozen=True)
class Gpu:
    present: bool
    reason: str  # why not, when not present
    name: str = ""
    compute_capability: str = ""  # "SM89"


@functools.lru_cache(maxsize=1)
def gpu() -> Gpu:
    """The first CUDA device, through cuda-bindings (NVIDIA's maintained CUDA runtime bindings)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return Gpu(False, "no GPU runtime: Python module 'cuda.bindings' is not installed (pip install 'edgec[tensorrt]')")
    err, n = cudart.cudaGetDeviceCount()
    if int(err) != 0 or not n:
        what = {35: "no NVIDIA driver", 100: "no CUDA device"}.get(int(err), getattr(err, "name", str(err)))
        return Gpu(False, f"no GPU ({what}: cudaGetDeviceCount returned {getattr(err, 'name', err)})")
    err, prop = cudart.cudaGetDeviceProperties(0)
    if int(err) != 0:
        return Gpu(False, f"no GPU (cudaGetDeviceProperties failed: {getattr(err, 'name', err)})")
    name = prop.name.decode(errors="replace").rstrip("\0") if isinstance(prop.name, bytes) else str(prop.name)
    return Gpu(True, "", name, f"SM{prop.major}{prop.minor}")
