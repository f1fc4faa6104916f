"""Qualcomm's SNPE / QAIRT SDK: finding it, and the command lines of its tools.

The SDK is not on any package index (qairt-dev downloads it at install time and excludes Python 3.11;
qai-hub is a cloud client), so it is found where a user unpacked it: `QAIRT_SDK_ROOT` or `SNPE_ROOT`
(what the SDK's bin/envsetup.sh exports), else its tools on PATH. Both layouts drive the same flow:

    QAIRT (2.x, current)                       SNPE (classic)
    qairt-converter       ONNX -> .dlc         snpe-onnx-to-dlc
    qairt-quantizer       .dlc -> int8 .dlc    snpe-dlc-quantize
    snpe-dlc-graph-prepare  offline HTP graph for --htp_socs (both)
    snpe-dlc-info         the audit (both)
    snpe-net-run          x86 CPU runtime for validation (both)

Commands are built as argument lists (never a shell string) from the backend's options, so tests can
check every flag without the SDK, and `run` turns a failed tool into one line naming the tool.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from edgec.core.errors import BackendError

HOST = "x86_64-linux-clang"
ENV_VARS = ("QAIRT_SDK_ROOT", "SNPE_ROOT")
GET_IT = ("download the Qualcomm AI Runtime (QAIRT) SDK from Qualcomm's developer network (qpm.qualcomm.com, "
          "'Qualcomm AI Runtime SDK'), unpack it and export QAIRT_SDK_ROOT=<its folder> (or source bin/envsetup.sh)")
TOOLS = {
    "qairt": {"convert": "qairt-converter", "quantize": "qairt-quantizer"},
    "snpe": {"convert": "snpe-onnx-to-dlc", "quantize": "snpe-dlc-quantize"},
}
COMMON = {"prepare": "snpe-dlc-graph-prepare", "info": "snpe-dlc-info", "run": "snpe-net-run"}


@dataclass(frozen=True)
class Sdk:
    root: Path | None  # None: tools found on PATH only
    kind: str  # "qairt" | "snpe"
    tools: dict = field(default_factory=dict)  # role -> absolute path
    version: str = "unknown"

    def tool(self, role: str) -> str:
        path = self.tools.get(role)
        if not path:
            name = {**TOOLS[self.kind], **COMMON}[role]
            raise BackendError(f"the {self.kind.upper()} SDK at {self.root or 'PATH'} has no {name}; {GET_IT}")
        return path

    def env(self) -> dict[str, str]:
        """The environment envsetup.sh would give the tools (their Python modules and shared libraries)."""
        env = dict(os.environ)
        if self.root is not None:
            py = self.root / "lib" / "python"
            lib = self.root / "lib" / HOST
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(py), env.get("PYTHONPATH", "")) if p)
            env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(lib), env.get("LD_LIBRARY_PATH", "")) if p)
            env.setdefault("SNPE_ROOT", str(self.root))
        return env


def _find_in(bin_dir: Path, names) -> dict[str, str]:
    return {role: str(bin_dir / n) for role, n in names.items() if (bin_dir / n).is_file()}


def detect(environ: dict | None = None) -> tuple[Sdk | None, str]:
    """(the SDK, "") or (None, why not). Looks at QAIRT_SDK_ROOT, SNPE_ROOT, then PATH."""
    environ = os.environ if environ is None else environ
    tried = []
    for var in ENV_VARS:
        root = environ.get(var)
        if not root:
            continue
        bin_dir = Path(root) / "bin" / HOST
        for kind in ("qairt", "snpe"):
            tools = _find_in(bin_dir, {**TOOLS[kind], **COMMON})
            if "convert" in tools:
                return Sdk(Path(root), kind, tools, _version(Path(root))), ""
        tried.append(f"{var}={root} has no {bin_dir.name}/qairt-converter or snpe-onnx-to-dlc")
    path = environ.get("PATH", "")
    for kind in ("qairt", "snpe"):
        found = {role: shutil.which(n, path=path) for role, n in {**TOOLS[kind], **COMMON}.items()}
        found = {k: v for k, v in found.items() if v}
        if "convert" in found:
            root = Path(found["convert"]).resolve().parents[2]
            return Sdk(root if (root / "lib").is_dir() else None, kind, found, _version(root)), ""
    if not tried:
        tried.append("QAIRT_SDK_ROOT and SNPE_ROOT are unset and neither qairt-converter nor snpe-onnx-to-dlc is on PATH")
    return None, "Qualcomm SNPE/QAIRT SDK not found: " + "; ".join(tried)


def _version(root: Path) -> str:
    """The SDK's version: its sdk.yaml / the folder name (e.g. 2.31.0.250130)."""
    for f in ("sdk.yaml", "SDK_VERSION"):
        p = root / f
        if p.is_file():
            for line in p.read_text(errors="replace").splitlines():
                if "version" in line.lower() and ":" in line:
                    return line.split(":", 1)[1].strip()
    return root.name


# ------------------------------------------------------------------ command lines

def convert_cmd(sdk: Sdk, onnx_path: Path, dlc: Path, input_dims: dict[str, tuple] | None = None,
                nchw_io: bool = False) -> list[str]:
    cmd = [sdk.tool("convert"), "--input_network", str(onnx_path), "--output_path", str(dlc)]
    for name, shape in (input_dims or {}).items():
        flag = "--source_model_input_shape" if sdk.kind == "qairt" else "--input_dim"
        cmd += [flag, name, ",".join(str(int(d)) for d in shape)]
    if nchw_io:  # keep the ONNX layout at the graph boundary instead of the SDK's NHWC default
        cmd += ["--preserve_io", "layout"] if sdk.kind == "qairt" else ["--preserve_io", "layout"]
    return cmd


def quantize_cmd(sdk: Sdk, dlc: Path, input_list: Path, out_dlc: Path, act_bits: int = 8, weight_bits: int = 8,
                 bias_bits: int = 32, per_channel: bool = True, algorithm: str | None = None) -> list[str]:
    cmd = [sdk.tool("quantize"), "--input_dlc", str(dlc), "--input_list", str(input_list),
           "--output_dlc", str(out_dlc), "--act_bitwidth", str(act_bits), "--weights_bitwidth", str(weight_bits),
           "--bias_bitwidth", str(bias_bits)]
    if per_channel:
        cmd.append("--use_per_channel_quantization" if sdk.kind == "qairt" else "--axis_quant")
    if algorithm == "enhanced":
        cmd += ["--use_enhanced_quantizer"] if sdk.kind == "snpe" else ["--param_calibration_method", "enhanced",
                                                                        "--act_calibration_method", "enhanced"]
    return cmd


def prepare_cmd(sdk: Sdk, dlc: Path, out_dlc: Path, htp_socs: str) -> list[str]:
    """Offline HTP graph preparation (the DLC then carries a cache for these SoCs, e.g. sm8550)."""
    return [sdk.tool("prepare"), "--input_dlc", str(dlc), "--output_dlc", str(out_dlc), "--htp_socs", htp_socs]


def info_cmd(sdk: Sdk, dlc: Path, csv: Path | None = None) -> list[str]:
    return [sdk.tool("info"), "--input_dlc", str(dlc)] + (["--save", str(csv)] if csv else [])


def net_run_cmd(sdk: Sdk, dlc: Path, input_list: Path, out_dir: Path, runtime: str = "cpu") -> list[str]:
    cmd = [sdk.tool("run"), "--container", str(dlc), "--input_list", str(input_list), "--output_dir", str(out_dir)]
    if runtime == "dsp":
        cmd.append("--use_dsp")
    return cmd


def run(sdk: Sdk, cmd: list[str], what: str, timeout: float = 3600) -> str:
    """Run one SDK tool; its stdout, or a one-line BackendError naming the tool and its last error line."""
    try:
        p = subprocess.run(cmd, env=sdk.env(), capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise BackendError(f"{what}: {cmd[0]} not found; {GET_IT}") from None
    except subprocess.TimeoutExpired:
        raise BackendError(f"{what}: {Path(cmd[0]).name} ran past {timeout:.0f} s") from None
    if p.returncode != 0:
        lines = [ln.strip() for ln in (p.stderr + "\n" + p.stdout).splitlines() if ln.strip()]
        err = next((ln for ln in reversed(lines) if "error" in ln.lower()), lines[-1] if lines else "no output")
        raise BackendError(f"{what}: {Path(cmd[0]).name} exited {p.returncode}: {err[:300]}")
    return p.stdout
