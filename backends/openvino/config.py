"""Backend options -> OpenVINO compile properties, checked against the devices this machine has.

Options arrive as strings from the CLI (`--option dynamic_batch=true`) or as Python values from the
API, so every parser accepts both. The same resolution runs at compile time (to fail early and record
what was chosen in the manifest) and at load time (the loading machine may have other devices).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from edgec.core.errors import BackendError
from edgec.core.options import as_bool, as_choice, as_number

HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT", "cumulative_throughput": "CUMULATIVE_THROUGHPUT"}
# OpenVINO element-type names, with the spellings users type for them.
INFERENCE_PRECISIONS = {"f32": "f32", "fp32": "f32", "bf16": "bf16", "f16": "f16", "fp16": "f16"}
CALIBRATORS = ("core", "nncf")
VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")


def parse_bool(name: str, value: Any) -> bool:
    return as_bool("openvino", name, value)


def parse_int(name: str, value: Any, minimum: int = 1) -> int:
    return as_number("openvino", name, value, int, minimum)


def parse_choice(name: str, value: Any, choices) -> str:
    return as_choice("openvino", name, value, choices)


def check_device(core, device: str) -> str:
    """Return the device string to compile for; raise naming the devices that exist when it is absent.

    `GPU` matches `GPU.0`/`GPU.1` (OpenVINO's own rule); AUTO/MULTI/HETERO are checked member by member
    (`AUTO:GPU,CPU`), and a bare `AUTO` always works because it picks among what exists.
    """
    available = list(core.available_devices)
    device = str(device).strip()
    head, _, members = device.partition(":")
    if head.upper() in VIRTUAL_DEVICES:
        wanted = [m.strip() for m in members.split(",") if m.strip()]
        for m in wanted:
            _require(m, available)
        return head.upper() + (":" + ",".join(w.upper() for w in wanted) if wanted else "")
    _require(device, available)
    return device.upper()


def _require(device: str, available: list[str]) -> None:
    d = device.upper()
    if any(a.upper() == d or a.upper().split(".")[0] == d for a in available):
        return
    raise BackendError(f"OpenVINO device '{device}' is not present on this machine "
                       f"(available: {', '.join(available) or 'none'}); pass --device with one of those or AUTO")


def device_capabilities(core, device: str) -> list[str]:
    try:
        return [str(c) for c in core.get_property(device.split(":")[0].split(".")[0], "OPTIMIZATION_CAPABILITIES")]
    except Exception:  # virtual devices (AUTO) have no capabilities of their own
        return []


@dataclass
class RuntimeConfig:
    device: str
    hint: str  # OpenVINO PERFORMANCE_HINT value
    inference_precision: str | None  # OpenVINO element type name, None = the device's default
    threads: int | None

    def properties(self) -> dict[str, Any]:
        props: dict[str, Any] = {"PERFORMANCE_HINT": self.hint}
        if self.inference_precision:
            props["INFERENCE_PRECISION_HINT"] = self.inference_precision
        if self.threads:
            props["INFERENCE_NUM_THREADS"] = int(self.threads)
        return props

    def to_json(self) -> dict:
        return {"device": self.device, "performance_hint": self.hint,
                "inference_precision": self.inference_precision or "device default", "threads": self.threads}


def default_inference_precision(precision: str, capabilities: list[str]) -> str | None:
    """The kernel precision a build precision implies when the user did not pick one.

    fp32 and int8 pin f32: OpenVINO's CPU default is bf16 on AMX machines, which would silently turn
    an "fp32" artifact into a bf16 one. fp16 takes the fastest half-width type the device really has
    (bf16 on AVX512-BF16/AMX CPUs, f16 on GPUs/NPUs and AVX512-FP16 CPUs) and otherwise keeps f32
    kernels over fp16-stored weights; on AUTO it leaves the choice to the device AUTO picks.
    """
    if precision != "fp16":
        return "f32"
    if not capabilities:  # AUTO/MULTI: each device it picks applies its own default (f16 on GPU/NPU)
        return None
    if "FP16" in capabilities and "BF16" not in capabilities:
        return "f16"
    if "BF16" in capabilities:
        return "bf16"
    if "FP16" in capabilities:
        return "f16"
    return "f32"


def resolve(core, options: Mapping[str, Any], precision: str, threads: int | None = None) -> RuntimeConfig:
    device = check_device(core, options.get("device") or "CPU")
    hint = HINTS[parse_choice("hint", options.get("hint") or "latency", tuple(HINTS))]
    caps = device_capabilities(core, device)
    requested = options.get("inference_precision")
    if requested in (None, "", "none", "None", "default"):
        inf = default_inference_precision(precision, caps)
    else:
        inf = INFERENCE_PRECISIONS[parse_choice("inference_precision", requested, tuple(INFERENCE_PRECISIONS))]
        # CPU plugin emulates nothing: asking for bf16 where the ISA lacks it silently falls back to f32.
        if device.startswith("CPU") and caps and inf != "f32" and inf.upper() not in caps:
            raise BackendError(f"OpenVINO device {device} has no {inf} kernels "
                               f"(capabilities: {', '.join(caps)}); use inference_precision=f32")
    return RuntimeConfig(device, hint, inf, threads)
