"""The TFLite backend: edgec's own ONNX -> .tflite writer, run and validated on LiteRT (ai-edge-litert).

The core does the quantization (every_tensor flavour: every activation int8, symmetric per-channel
int8 weights, int32 biases, TFLite's fixed Softmax/Logistic/Tanh output ranges, shared scales
through pooling, Concat and shape ops); this backend lowers the resulting Q/DQ ONNX (quant.py) into
TFLite's integer tensors and kernels (lower.py, ops/), NHWC inside, the ONNX interface outside.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Mapping

from edgec.core.backend import Availability, Backend, LoweringContext, QuantFlavour, Requirements, Runner
from edgec.core import probe
from edgec.core.options import as_choice, as_number

FILE = "model.tflite"
IO_FILE = "tflite_io.json"


def _copy(model: "onnx.ModelProto") -> "onnx.ModelProto":
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    return m


class TFLiteBackend(Backend):
    name = "tflite"
    description = "TensorFlow Lite / LiteRT flatbuffer (.tflite) written by edgec, run on LiteRT with XNNPACK"
    requirements = Requirements(
        precisions=("fp32", "fp16", "int8"),
        quant=QuantFlavour(placement="every_tensor", activation_dtype="int8", weight_dtype="int8", per_channel=True,
                           symmetric_activations=False, symmetric_weights=True),
        layout="NHWC",
    )
    option_defaults = {
        "io": ("float", "int8 model I/O: float (QUANTIZE/DEQUANTIZE inside the file) or int8 / uint8 (integer "
                        "inputs and outputs, for integer-only hardware: MCUs, Edge TPU)"),
        "io_layout": ("nhwc", "layout of the file's own rank-4 inputs/outputs: nhwc (TFLite's) or nchw (ONNX's)"),
        "delegate": ("xnnpack", "LiteRT delegate at load: xnnpack (LiteRT's default CPU delegate) or none (builtin kernels)"),
        "int8": ("full", "int8 flavour: full (every tensor integer) or dynamic (int8 weights, float activations: "
                         "dynamic-range / hybrid kernels, no calibration data needed)"),
        "batch": (1, "batch size the file is built for when the model's leading dim is dynamic"),
        "weight_rounding": ("auto", "full int8: auto (gptq only with --max-drop/--min-agreement), "
                                    "nearest, or gptq (weights rounded for each layer's output error; "
                                    "EfficientNet-Lite0 cosine 0.99768 -> 0.99838 at the same 98.6 % agreement, "
                                    "~5x calibration time)"),
    }

    def available(self) -> Availability:
        for module, dist in (("ai_edge_litert", "ai-edge-litert"), ("flatbuffers", "flatbuffers")):
            if not probe.installed(module):  # found, not imported: listing backends stays cheap
                return Availability.missing_module(module, dist, extra="tflite")
        return Availability(True)

    def toolchain(self) -> dict[str, str]:
        from importlib.metadata import version

        return {"ai-edge-litert": version("ai-edge-litert"), "flatbuffers": version("flatbuffers")}

    def validate_options(self, options):
        opts = super().validate_options(options)
        opts["io"] = as_choice(self.name, "io", opts["io"], ("float", "int8", "uint8"))
        opts["io_layout"] = as_choice(self.name, "io_layout", opts["io_layout"], ("nhwc", "nchw"))
        opts["delegate"] = as_choice(self.name, "delegate", opts["delegate"], ("xnnpack", "none"))
        opts["int8"] = as_choice(self.name, "int8", opts["int8"], ("full", "dynamic"))
        opts["batch"] = as_number(self.name, "batch", opts["batch"], int, 1)
        opts["weight_rounding"] = as_choice(self.name, "weight_rounding", opts["weight_rounding"],
                                            ("auto", "nearest", "gptq"))
        return opts

    def calibrate(self, ctx: LoweringContext):
        """fp16: the FP32 model (the writer stores fp16 weights + DEQUANTIZE, TFLite's own fp16 format,
        instead of the core's fp16 ONNX with its Casts). int8: the core's quantizer, with integer I/O
        when -O io=int8|uint8 and weight-only (dynamic range) with -O int8=dynamic."""
        opts = self.validate_options(ctx.options)
        from edgec.core.errors import InputError

        if ctx.precision != "int8" and opts["io"] != "float":
            raise InputError(f"tflite option io={opts['io']} needs --precision int8 (full integer)")
        if ctx.precision == "fp16":
            ctx.info["calibration"] = {"precision": "fp16", "mode": "fp16 weights + DEQUANTIZE, float32 compute"}
            return ctx.source_model
        if ctx.precision != "int8":
            return None
        from edgec.core.quantization import quantize

        if opts["int8"] == "dynamic":
            if opts["io"] != "float":
                raise InputError("tflite option io=int8/uint8 needs -O int8=full (dynamic range keeps float activations)")
            from edgec.core.quantization.graph import ensure_node_names

            # Depthwise/grouped conv weights stay float: they are ~1 % of a MobileNet's bytes but most of
            # its weight-rounding error (MobileNetV2 backbone on 20 eval images: cosine 0.982 -> 0.992),
            # and XNNPACK does not take hybrid DEPTHWISE_CONV_2D (LiteRT's slower kernel would run it).
            model = ensure_node_names(_copy(ctx.source_model))
            grouped = [n.name for n in model.graph.node if n.op_type == "Conv"
                       and any(a.name == "group" and a.i > 1 for a in n.attribute)]
            q = quantize(model, "int8-dynamic", flavour=self.requirements.quant, progress=False, keep_fp32=grouped + list(ctx.keep_fp32))
        else:
            if ctx.calibration is None:
                raise InputError("--precision int8 needs calibration data: pass --calib DATA, "
                                 "or -O int8=dynamic for weight-only int8 without data")
            flavour = dataclasses.replace(self.requirements.quant, quantize_io=opts["io"] != "float")
            kwargs = dict(flavour=flavour, calibration=ctx.calibration, samples=ctx.calib_samples,
                          max_drop=ctx.max_drop, min_agreement=ctx.min_agreement, validation=ctx.validation,
                          progress=True, keep_fp32=ctx.keep_fp32, float_tensors=ctx.float_tensors)
            # auto keeps this backend's measured choice: GPTQ only with --max-drop/--min-agreement (the core's
            # default became gptq in issue 17; on LiteRT it did not change agreement and cost ~5x calibration)
            repair = ctx.max_drop is not None or ctx.min_agreement is not None
            kwargs["weight_rounding"] = opts["weight_rounding"] == "gptq" or (opts["weight_rounding"] == "auto" and repair)
            if ctx.calib_method and ctx.calib_method != "auto":
                kwargs["method"] = ctx.calib_method
            q = quantize(ctx.source_model, "int8", **kwargs)
        ctx.info["calibration"] = q.report
        return q.model

    def lower(self, ctx: LoweringContext) -> list[str]:
        from edgec.backends.tflite import convert

        opts = self.validate_options(ctx.options)
        if ctx.precision != "int8" and opts["io"] != "float":
            from edgec.core.errors import InputError

            raise InputError(f"tflite option io={opts['io']} needs --precision int8 (full integer)")
        data, info = convert.to_tflite(ctx.model, opts, fp16=ctx.precision == "fp16")
        (Path(ctx.out_dir) / FILE).write_bytes(data)
        (Path(ctx.out_dir) / IO_FILE).write_text(json.dumps(info["io"], indent=1, sort_keys=True) + "\n")
        ctx.info.update(info)
        ctx.info["int8_flavour"] = opts["int8"] if ctx.precision == "int8" else None
        return [FILE, IO_FILE]

    def load(self, artifact_dir: Path, manifest: Mapping, threads: int | None = None, **options) -> Runner:
        from edgec.backends.tflite.runner import TFLiteRunner

        recorded = {k: v for k, v in (manifest.get("options") or {}).items() if k in self.option_defaults}
        opts = self.validate_options({**recorded, **{k: v for k, v in options.items() if v is not None}})
        io = json.loads((Path(artifact_dir) / IO_FILE).read_text())
        return TFLiteRunner(Path(artifact_dir) / FILE, io, threads=threads, delegate=opts["delegate"])

    def layer_info(self, runner: Runner) -> dict | None:
        from edgec.backends.tflite.convert import delegation

        return delegation(runner)

    def intermediates(self, artifact_dir: Path, manifest: Mapping, names, threads: int | None = None) -> Runner:
        from edgec.backends.tflite import debug

        return debug.intermediates(artifact_dir, manifest, names, (FILE, IO_FILE))

    def audit(self, artifact_dir: Path, manifest: Mapping) -> list[dict]:
        from edgec.backends.tflite import debug

        return debug.audit(self, artifact_dir, manifest, (FILE, IO_FILE))
