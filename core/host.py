"""Facts about the CPU this process runs on that change how a model should be quantized."""
from __future__ import annotations

import functools
import platform
from pathlib import Path

# Any of these gives x86 an int8 dot product that accumulates in int32 (no int16 pair sum to saturate).
_VNNI_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8"}


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (Linux); empty where that file does not exist."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def u8s8_saturates() -> bool:
    """Whether u8 x s8 int8 kernels on this host may saturate with full-range weights: x86 without VNNI
    (pmaddubsw sums pairs into int16). Unknown x86 flags count as saturating, since 7-bit weights are
    safe everywhere; ARM's sdot/udot accumulate in int32."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return False
    return not (cpu_flags() & _VNNI_FLAGS)


def reduced_weight_range(choice: str, on_this_cpu: bool = True) -> bool:
    """The `-O weight_range=auto|full|reduced` rule the CPU backends share: auto means 7-bit weights
    exactly when the artifact runs on this host's CPU and its int8 kernels saturate."""
    return choice == "reduced" or (choice == "auto" and on_this_cpu and u8s8_saturates())
