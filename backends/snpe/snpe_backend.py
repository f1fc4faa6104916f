"""The `snpe` backend: a .dlc built by Qualcomm's SNPE/QAIRT SDK tools, driven as subprocesses.

ONNX (core-optimized, FP32) -> converter -> .dlc; int8: the SDK's own quantizer on an input list of
.raw files written from --calib (raw_inputs.py); with an HTP target profile, snpe-dlc-graph-prepare adds
the offline HTP graph for its SoC; snpe-dlc-info is the audit; validation runs snpe-net-run on the SDK's
x86-64 CPU runtime. The SDK is not pip-installable, so without it `available()` says what is missing
and where to get it, and a compile stops in one line before any work.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np

from edgec.core import options as o
from edgec.core.backend import Availability, Backend, LoweringContext, Requirements, Runner, TensorSpec
from edgec.core.errors import BackendError, InputError

from edgec.backends.snpe import raw_inputs, sdk as sdk_mod, targets
from edgec.backends.snpe.shapes import static_batch

DLC = "model.dlc"
ACT_BITS = {"u8": 8, "u16": 16}


class SnpeBackend(Backend):
    name = "snpe"
    description = "Qualcomm SNPE/QAIRT .dlc through the SDK's converter, quantizer and snpe-net-run (needs the SDK)"
    requirements = Requirements(precisions=("fp32", "int8"), layout="NCHW", opset_range=(11, 21), core_int8=False)
    option_defaults = {
        "target": (None, "Snapdragon profile for offline HTP graph preparation (snpe-dlc-graph-prepare --htp_socs); "
                         "none: a CPU/GPU/DSP-portable .dlc"),
        "activations": ("u8", "int8: activation bit width u8 or u16 (--act_bitwidth 8|16)"),
        "per_channel": (True, "int8: per-channel weight quantization"),
        "quantizer": ("default", "int8: default or enhanced (the SDK's enhanced range search)"),
        "input_layout": ("nhwc", "layout of 4-D inputs in .raw files: nhwc (the converters' default) or nchw "
                                 "(converted with --preserve_io layout)"),
    }

    def _sdk(self) -> sdk_mod.Sdk:
        found, why = sdk_mod.detect()
        if found is None:
            raise BackendError(f"backend 'snpe': {why}; {sdk_mod.GET_IT}")
        return found

    def available(self) -> Availability:
        found, why = sdk_mod.detect()
        if found is None:
            return Availability(False, why, sdk_mod.GET_IT)
        missing = [r for r in ("quantize", "info", "run") if r not in found.tools]
        if missing:
            return Availability(False, f"the {found.kind.upper()} SDK at {found.root} lacks "
                                       f"{', '.join({**sdk_mod.TOOLS[found.kind], **sdk_mod.COMMON}[m] for m in missing)}",
                                sdk_mod.GET_IT)
        return Availability(True)

    def toolchain(self) -> dict[str, str]:
        found, _ = sdk_mod.detect()
        return {f"{found.kind}-sdk": found.version} if found else {}

    def validate_options(self, options):
        opts = super().validate_options(options)
        opts["activations"] = o.as_choice(self.name, "activations", opts["activations"], ACT_BITS)
        opts["per_channel"] = o.as_bool(self.name, "per_channel", opts["per_channel"])
        opts["quantizer"] = o.as_choice(self.name, "quantizer", opts["quantizer"], ("default", "enhanced"))
        opts["input_layout"] = o.as_choice(self.name, "input_layout", opts["input_layout"], raw_inputs.LAYOUTS)
        if opts["target"] not in (None, "", "none"):
            opts["target"] = targets.resolve(opts["target"]).name
        else:
            opts["target"] = None
        return opts

    def commands(self, sdk: sdk_mod.Sdk, opts: Mapping, work: Path, out: Path, input_dims: dict,
                 precision: str) -> list[tuple[str, list[str]]]:
        """The tool invocations a compile runs, in order, as (what, argv)."""
        fp32_dlc = work / "fp32.dlc" if precision == "int8" or opts["target"] else out / DLC
        cmds = [("convert", sdk_mod.convert_cmd(sdk, work / "model.onnx", fp32_dlc, input_dims,
                                                nchw_io=opts["input_layout"] == "nchw"))]
        current = fp32_dlc
        if precision == "int8":
            q = work / "quantized.dlc" if opts["target"] else out / DLC
            cmds.append(("quantize", sdk_mod.quantize_cmd(sdk, current, work / "calib" / "input_list.txt", q,
                                                          act_bits=ACT_BITS[opts["activations"]],
                                                          per_channel=opts["per_channel"],
                                                          algorithm=opts["quantizer"])))
            current = q
        if opts["target"]:
            soc = targets_soc(opts["target"])
            cmds.append(("graph-prepare", sdk_mod.prepare_cmd(sdk, current, out / DLC, soc)))
        cmds.append(("info", sdk_mod.info_cmd(sdk, out / DLC, work / "dlc_info.csv")))
        return cmds

    def lower(self, ctx: LoweringContext) -> list[str]:
        import onnx

        from edgec.core.model_io import input_specs

        opts = self.validate_options(ctx.options)
        sdk = self._sdk()
        model = static_batch(ctx.source_model)  # a symbolic batch becomes 1; other symbolic dims are refused
        specs = input_specs(model)
        dims = {s.name: s.shape for s in specs}
        with tempfile.TemporaryDirectory(prefix="edgec-snpe-") as tmp:
            work = Path(tmp)
            onnx.save(model, str(work / "model.onnx"))
            if ctx.precision == "int8":
                data = ctx.calibration.take(ctx.calib_samples) if ctx.calibration is not None else None
                if data is None:
                    raise InputError("snpe int8 needs --calib DATA: the SDK's quantizer reads it as raw files")
                raw_inputs.write_input_list(data, specs, work / "calib", opts["input_layout"])
            info = ""
            for what, cmd in self.commands(sdk, opts, work, Path(ctx.out_dir), dims, ctx.precision):
                ctx.progress(f"SNPE: {Path(cmd[0]).name}")
                stdout = sdk_mod.run(sdk, cmd, f"snpe {what}")
                if what == "info":
                    info = stdout
            ctx.info.update({"sdk": sdk.kind, "sdk_root": str(sdk.root), "sdk_version": sdk.version,
                             "target": opts["target"], "dlc_info": info.splitlines()[:200]})
        return [DLC]

    def load(self, artifact_dir: Path, manifest: Mapping, threads: int | None = None, **options) -> Runner:
        opts = self.validate_options({k: v for k, v in (manifest.get("options") or {}).items()
                                      if k in self.option_defaults})
        return SnpeRunner(self._sdk(), Path(artifact_dir) / DLC,
                          [TensorSpec.from_json(d) for d in manifest.get("inputs") or []],
                          [TensorSpec.from_json(d) for d in manifest.get("outputs") or []], opts["input_layout"])


def targets_soc(name: str) -> str:
    from edgec.core import profiles

    return profiles.load(name)["qnn"]["soc"].lower()


class SnpeRunner(Runner):
    """snpe-net-run on the SDK's x86 CPU runtime, one input list per call (each call is a process)."""

    def __init__(self, sdk: sdk_mod.Sdk, dlc: Path, inputs, outputs, layout: str):
        if not dlc.is_file():
            raise InputError(f"{dlc} not found; not an snpe artifact")
        self.sdk, self.dlc, self.inputs, self.outputs, self.layout = sdk, dlc, list(inputs), list(outputs), layout
        # Each inference is a snpe-net-run process: its latency includes process start, not the model's alone.
        self.where = "snpe-net-run process per inference (x86 CPU runtime; process start included)"

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with tempfile.TemporaryDirectory(prefix="edgec-snpe-run-") as tmp:
            lst, n = raw_inputs.write_input_list([feeds], self.inputs, Path(tmp) / "in", self.layout,
                                                 outputs=[s.name for s in self.outputs])
            sdk_mod.run(self.sdk, sdk_mod.net_run_cmd(self.sdk, self.dlc, lst, Path(tmp) / "out"), "snpe-net-run")
            return raw_inputs.read_results(Path(tmp) / "out", self.outputs, n, self.layout)[0]
