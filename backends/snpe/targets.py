"""Which Hexagon HTP a compile is for: a Snapdragon hardware profile (core/profiles) or explicit numbers.

The context binary is specific to the HTP architecture (`htp_arch`, v68..v81) and, for fp16 and VTCM
sizing, to the SoC (`soc_model`, QNN's SoC id); both come from the profile's `qnn` section, and
`-O htp_arch=` / `-O soc_model=` override them for a SoC no profile names yet.
"""
from __future__ import annotations

from dataclasses import dataclass

from edgec.core import profiles
from edgec.core.errors import InputError

HTP_ARCHS = (68, 69, 73, 75, 79, 81)
DEFAULT_TARGET = "snapdragon-8gen2"


@dataclass(frozen=True)
class HtpTarget:
    name: str  # profile name, or "custom"
    htp_arch: int
    soc_model: int | None
    fp16: bool  # HTP v69+ has fp16 arithmetic; v68 has none
    profile_version: str | None = None

    def to_json(self) -> dict:
        return {"target": self.name, "htp_arch": self.htp_arch, "soc_model": self.soc_model, "htp_fp16": self.fp16,
                "profile_version": self.profile_version}


def snapdragon_profiles() -> list[str]:
    return profiles.having("qnn")


def resolve(target: str | None, htp_arch=None, soc_model=None) -> HtpTarget:
    name = target or DEFAULT_TARGET
    if name == "custom" or (target in (None, "") and htp_arch is not None):
        if htp_arch is None:
            raise InputError("qnn --target custom needs -O htp_arch=N (one of " + ", ".join(map(str, HTP_ARCHS)) + ")")
        t = HtpTarget("custom", _arch(htp_arch), _soc(soc_model), _arch(htp_arch) >= 69)
        return t
    if name not in profiles.names():
        raise InputError(f"unknown qnn target '{name}' (Snapdragon profiles: {', '.join(snapdragon_profiles())}; "
                         "or --target custom -O htp_arch=N)")
    prof = profiles.load(name)
    q = prof.get("qnn")
    if not q:
        raise InputError(f"target profile '{name}' has no Hexagon NPU (no 'qnn' section); use one of "
                         f"{', '.join(snapdragon_profiles())}")
    arch = _arch(htp_arch) if htp_arch is not None else int(q["htp_arch"])
    soc = _soc(soc_model) if soc_model is not None else q.get("soc_model")
    return HtpTarget(name, arch, soc, bool(q.get("htp_fp16", arch >= 69)), prof.get("version"))


def _arch(v) -> int:
    try:
        a = int(str(v).lower().lstrip("v"))
    except ValueError:
        a = -1
    if a not in HTP_ARCHS:
        raise InputError(f"qnn option htp_arch={v!r} is not an HTP architecture; use one of {', '.join(map(str, HTP_ARCHS))}")
    return a


def _soc(v) -> int | None:
    if v in (None, "", "none"):
        return None
    try:
        return int(v)
    except ValueError:
        raise InputError(f"qnn option soc_model={v!r} is not QNN's integer SoC id (e.g. 43 for SM8550)") from None
