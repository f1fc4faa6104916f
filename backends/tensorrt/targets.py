"""`--target` -> the compute capabilities an engine is built for, from the core's hardware profiles.

A target is `auto` (the GPU here, else every RTX-buildable capability from SM80 up), a GPU profile
name (`rtx-4090`, `jetson-orin`, ...: their `tensorrt` section) or compute capabilities (`sm89`,
`sm86,sm89`). SM75 is left out of `auto`: TensorRT-RTX 1.7 cannot compile an FP32 GEMM for Turing
("FP32 GEMM is not supported"), which fails EfficientNet-Lite0's classifier.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from edgec.core import profiles
from edgec.core.errors import BackendError, InputError, UnsupportedError

from .toolchain import Gpu, Toolchain

_SM = re.compile(r"^sm_?(\d{2,3})$", re.I)


@dataclass
class GpuTarget:
    name: str  # profile name, "auto" or "custom"
    compute_capabilities: list[str]  # ["SM89"]; ["CURRENT"] = the GPU the builder runs on
    profile: dict | None = None
    dla_cores: int = 0
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict:
        d = {"name": self.name, "compute_capabilities": self.compute_capabilities}
        if self.profile:
            d["profile_version"] = self.profile.get("version")
        if self.notes:
            d["notes"] = self.notes
        return d


def _parse_sms(text: str) -> list[str] | None:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    sms = []
    for p in parts:
        m = _SM.match(p)
        if not m:
            return None
        sms.append(f"SM{m.group(1)}")
    return sms or None


def resolve(spec, tc: Toolchain, gpu: Gpu) -> GpuTarget:
    spec = "auto" if spec in (None, "", "auto") else str(spec).strip()
    if spec == "auto":
        if gpu.present:
            cc = ["CURRENT"] if tc.is_rtx else [gpu.compute_capability]
            return GpuTarget("auto", cc, notes=[f"the GPU here: {gpu.name} ({gpu.compute_capability})"])
        if not tc.is_rtx:
            raise BackendError("standard TensorRT builds engines on the GPU they will run on, and there is no GPU "
                               f"here ({gpu.reason}); build on the target, or use -O toolchain=tensorrt-rtx "
                               "(ahead-of-time build without a GPU)")
        sms = [s for s in tc.compute_capabilities() if int(s[2:]) >= 80]
        return GpuTarget("auto", sms, notes=["no GPU here: built for every compute capability TensorRT-RTX targets "
                                             "from SM80 up; pass --target rtx-4090 (or sm89) for one GPU"])
    sms = _parse_sms(spec)
    prof = None
    dla = 0
    if sms is None:
        if spec not in profiles.names():
            raise InputError(f"unknown GPU target '{spec}' (GPU profiles: {', '.join(gpu_profiles())}; or compute "
                             "capabilities such as sm89 or sm86,sm89; or auto)")
        prof = profiles.load(spec)
        section = prof.get("tensorrt")
        if not section:
            raise InputError(f"target profile '{spec}' has no GPU (tensorrt) section; GPU profiles: "
                             f"{', '.join(gpu_profiles())}")
        sms = list(section["compute_capabilities"])
        dla = int(section.get("dla_cores", 0))
        if tc.name not in section.get("toolchains", ()):
            raise UnsupportedError(
                f"target '{spec}' ({', '.join(sms)}) needs {' or '.join(section.get('toolchains', []))}, not {tc.name}: "
                f"{section.get('note', 'build on the device with its TensorRT')}")
    if tc.is_rtx:
        known = tc.compute_capabilities()
        bad = [s for s in sms if s not in known]
        if bad:
            raise UnsupportedError(f"TensorRT-RTX {tc.version} cannot build for {bad[0]} (it targets "
                                   f"{', '.join(known)}; no SM87 Jetson or SM90 data-centre GPUs): use standard "
                                   "TensorRT on that GPU (-O toolchain=tensorrt)")
    else:
        # Standard TensorRT has no ahead-of-time target: it builds for the GPU in the machine.
        if not gpu.present:
            raise BackendError(f"standard TensorRT needs the target GPU to build on ({gpu.reason}); build on the "
                               "target, or use -O toolchain=tensorrt-rtx")
        if sms != [gpu.compute_capability]:
            raise UnsupportedError(f"standard TensorRT builds for the GPU it runs on ({gpu.name}, "
                                   f"{gpu.compute_capability}), not {', '.join(sms)}: build on the target GPU, "
                                   "or use -O toolchain=tensorrt-rtx for ahead-of-time builds")
    return GpuTarget(prof["name"] if prof else "custom", sms, prof, dla)


def gpu_profiles() -> list[str]:
    return profiles.having("tensorrt")
