"""`--target` -> a TVM target dict, the profile it came from, and the cross toolchain it needs.

TVM 0.27 takes targets as JSON-like dicts (`{"kind": "llvm", "mcpu": ...}`), not `llvm -mcpu=` strings.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
from dataclasses import dataclass, field
from typing import Any

from edgec.core import profiles
from edgec.core.errors import BackendError, InputError

_MACHINE_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


@dataclass
class ResolvedTarget:
    name: str  # profile name, or "custom" for a raw dict
    tvm_target: dict[str, Any]
    arch: str  # "x86_64" | "aarch64" | ...
    profile: dict[str, Any] | None = None
    cross_cc: str | None = None  # None: the host compiler TVM finds by itself
    cross_apt: str | None = None
    fp16_arithmetic: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def runs_here(self) -> bool:
        """Whether a module built for this target can be loaded by this process."""
        return self.arch == host_arch()

    def describe(self) -> dict:
        d = {"name": self.name, "tvm_target": self.tvm_target, "arch": self.arch}
        if self.profile:
            d["profile_version"] = self.profile.get("version")
            d["cpu"] = self.tvm_target.get("mcpu") if self.profile.get("cpu") == "detect" else self.profile.get("cpu")
        if self.cross_cc:
            d["cross_compiler"] = self.cross_cc
        if self.notes:
            d["notes"] = self.notes
        return d


def host_arch() -> str:
    m = platform.machine().lower()
    return _MACHINE_ARCH.get(m, m)


def host_cores() -> int:
    """Physical cores: the target's num-cores and the runtime pool's default size (runner.py). psutil when
    installed (the tvm extra does not bring it), else Linux's CPU topology, else the logical CPUs."""
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
        if n:
            return n
    except ImportError:
        pass
    return _topology_cores() or os.cpu_count() or 1


def _topology_cores() -> int:
    """(package, core) pairs of the CPUs this process may run on, from /sys (Linux); 0 elsewhere."""
    from pathlib import Path

    cores = set()
    for cpu in getattr(os, "sched_getaffinity", lambda _: ())(0):
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topo / "physical_package_id").read_text().strip(), (topo / "core_id").read_text().strip()))
        except OSError:
            return 0
    return len(cores)


def host_target() -> dict[str, Any]:
    """`llvm` for the CPU LLVM detects here; num-cores lets MetaSchedule size its parallel loops."""
    from tvm.target import codegen

    return {"kind": "llvm", "mtriple": str(codegen.llvm_get_system_triple()),
            "mcpu": str(codegen.llvm_get_system_cpu()), "num-cores": host_cores()}


def host_has_fp16() -> bool:
    """Native half-precision arithmetic: AVX512-FP16 on x86, FEAT_FP16 on aarch64."""
    import tvm
    from tvm.target import codegen

    feature = "avx512fp16" if host_arch() == "x86_64" else "fullfp16"
    try:
        return bool(codegen.llvm_cpu_has_features(feature, tvm.target.Target(host_target())))
    except Exception:
        return False


def _arch_of(tvm_target: dict) -> str:
    triple = str(tvm_target.get("mtriple") or "")
    if not triple:
        return host_arch()
    head = triple.split("-")[0].lower()
    return _MACHINE_ARCH.get(head, head)


def resolve(spec: str | dict | None) -> ResolvedTarget:
    """A profile name (`host`, `rpi4`, `jetson-orin`) or a raw TVM target dict (JSON text or dict)."""
    if spec is None or spec == "" or spec == "host":
        t = host_target()
        return ResolvedTarget("host", t, host_arch(), profiles.load("host"), fp16_arithmetic=host_has_fp16())
    if isinstance(spec, str) and spec.lstrip().startswith("{"):
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError as e:
            raise InputError(f"--target is not valid JSON ({e.msg} at column {e.colno}); "
                             "give a profile name or a TVM target dict like {\"kind\": \"llvm\"}") from None
    if isinstance(spec, dict):
        return _from_dict(dict(spec))
    prof = profiles.load(str(spec))
    if "tvm_target" not in prof:  # a GPU profile (rtx-4090, ...): TensorRT's target, not TVM's
        raise InputError(f"target profile '{prof['name']}' has no CPU (tvm_target) section: it is a GPU target; "
                         "use --backend tensorrt for it, or a CPU profile with TVM")
    t = dict(prof["tvm_target"])
    arch = prof["arch"]
    cc = prof.get("cross_compiler") or {}
    return ResolvedTarget(prof["name"], t, arch, prof, cross_cc=cc.get("cc") if arch != host_arch() else None,
                          cross_apt=cc.get("apt"), fp16_arithmetic=bool(prof.get("fp16_arithmetic")))


def _from_dict(t: dict) -> ResolvedTarget:
    if t.get("kind") != "llvm":
        raise InputError(f"--target kind {t.get('kind')!r} is not supported by the TVM backend here "
                         "(CPU targets only: {\"kind\": \"llvm\", ...})")
    try:
        import tvm

        tvm.target.Target(t)
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[-1][:200]
        raise InputError(f"--target {json.dumps(t)} is not a valid TVM target: {first}") from None
    arch = _arch_of(t)
    notes = []
    if "num-cores" not in t:  # MetaSchedule refuses CPU targets without it (it sizes parallel loops)
        t["num-cores"] = host_cores() if arch == host_arch() else 4
        notes.append(f"num-cores not given; assumed {t['num-cores']}")
    cc = None
    if arch != host_arch():
        cc = f"{t['mtriple']}-gcc" if t.get("mtriple") else None
    mattr = " ".join(t.get("mattr") or [])
    fp16 = "+fullfp16" in mattr or "+avx512fp16" in mattr or (arch == host_arch() and "mcpu" not in t and host_has_fp16())
    return ResolvedTarget("custom", t, arch, None, cross_cc=cc,
                          cross_apt=f"gcc-{t['mtriple']}" if cc else None, fp16_arithmetic=fp16, notes=notes)


def check_cross_compiler(rt: ResolvedTarget) -> None:
    """A one-line BackendError naming the missing cross compiler and the apt package that has it."""
    if rt.cross_cc and shutil.which(rt.cross_cc) is None:
        apt = rt.cross_apt or f"gcc-{rt.cross_cc.removesuffix('-gcc')}"
        raise BackendError(f"target '{rt.name}' ({rt.arch}) needs the cross compiler '{rt.cross_cc}', not found on PATH; "
                           f"install it: apt-get install {apt}")
