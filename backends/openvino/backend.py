"""The OpenVINO backend: lowering to IR, loading on a device, NNCF calibration, kernel placement."""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Mapping

from edgec.core import host, probe
from edgec.core.backend import Availability, Backend, LoweringContext, QuantFlavour, Requirements, Runner
from edgec.core.errors import InputError

from edgec.backends.openvino import config as cfg
from edgec.backends.openvino import core_int8


class OpenVINOBackend(Backend):
    name = "openvino"
    description = "Intel OpenVINO IR (model.xml + model.bin) for CPU, GPU, NPU or AUTO"
    # OpenVINO turns Q/DQ pairs into FakeQuantize and fuses them into u8 x s8 (VNNI/AMX) kernels.
    # u8 and s8 activations ran equally fast on an AVX512-VNNI CPU (EfficientNet-Lite0: 4.09 vs
    # 4.02 ms, within noise); u8 is kept because pre-VNNI x86 (VPMADDUBSW) multiplies u8 by s8
    # natively and needs a shift for s8 activations.
    requirements = Requirements(
        precisions=("fp32", "fp16", "int8"),
        quant=QuantFlavour(placement="weighted", activation_dtype="uint8", weight_dtype="int8",
                           per_channel=True, symmetric_activations=False, symmetric_weights=True,
                           float_outputs=True),
    )
    option_defaults = {
        "device": ("CPU", "OpenVINO device: CPU, GPU, NPU or AUTO (checked against openvino.Core().available_devices)"),
        "hint": ("latency", "performance hint: latency (one stream) or throughput (several parallel streams)"),
        "inference_precision": (None, "kernel precision f32|bf16|f16; default f32 for fp32/int8, the device's "
                                      "half type (bf16 on CPUs that have it) for fp16"),
        "calibrator": ("core", "int8 calibrator: core (edgec's Q/DQ model) or nncf (NNCF post-training "
                               "quantization; with --max-drop, NNCF accuracy control)"),
        "weight_rounding": ("gptq", "int8 with calibrator=core: gptq (weights rounded for each layer's output "
                                    "error, same grid and speed; +50-90 % calibration time) or nearest"),
        "weight_range": ("auto", "int8 weight grid with calibrator=core: full (8-bit), reduced (7-bit: x86 CPUs "
                                 "without VNNI sum u8xs8 pairs in int16, which saturates) or auto (reduced for "
                                 "the CPU device on such a host)"),
        "dynamic_batch": (False, "true: a symbolic leading input dim stays dynamic; false: fixed to `batch`"),
        "batch": (1, "static batch size a symbolic leading input dim is fixed to when dynamic_batch is false "
                     "(inputs whose leading dim the model fixes keep it: their shapes are the model's)"),
    }

    # ---------------------------------------------------------------- discovery
    def available(self) -> Availability:
        if not probe.installed("openvino"):
            return Availability.missing_module("openvino", "openvino", extra="openvino")
        return Availability(True)

    def toolchain(self) -> dict[str, str]:
        tools = {"openvino": probe.version("openvino", attr="get_version")}
        if probe.installed("nncf"):
            tools["nncf"] = probe.version("nncf")
        return tools

    def validate_options(self, options):
        opts = super().validate_options(options)
        opts["hint"] = cfg.parse_choice("hint", opts["hint"], tuple(cfg.HINTS))
        opts["calibrator"] = cfg.parse_choice("calibrator", opts["calibrator"], cfg.CALIBRATORS)
        opts["weight_rounding"] = cfg.parse_choice("weight_rounding", opts["weight_rounding"], core_int8.ROUNDINGS)
        opts["weight_range"] = cfg.parse_choice("weight_range", opts["weight_range"], ("auto", "full", "reduced"))
        opts["dynamic_batch"] = cfg.parse_bool("dynamic_batch", opts["dynamic_batch"])
        opts["batch"] = cfg.parse_int("batch", opts["batch"])
        ip = opts["inference_precision"]
        if ip not in (None, "", "none", "None", "default"):
            opts["inference_precision"] = cfg.INFERENCE_PRECISIONS[
                cfg.parse_choice("inference_precision", ip, tuple(cfg.INFERENCE_PRECISIONS))]
        else:
            opts["inference_precision"] = None
        return opts

    def quant_flavour(self, options):
        """oneDNN's int8 kernels on x86 without VNNI (AVX2, AVX-512F) add u8 x s8 pairs in int16 like
        ORT's do (NNCF's overflow fix answers the same problem), so the CPU device gets 7-bit weights there."""
        on_cpu = str(options.get("device", "CPU")).upper().startswith(("CPU", "AUTO"))
        reduced = host.reduced_weight_range(options.get("weight_range", "auto"), on_cpu)
        return replace(self.requirements.quant, reduce_range=reduced)

    # ---------------------------------------------------------------- compile
    def calibrate(self, ctx: LoweringContext):
        """fp16: the FP32 model itself (OpenVINO compresses weights at save time and picks half-width
        kernels at compile time, so the core's FP16 ONNX rewrite with its boundary Casts is not wanted).
        int8 with calibrator=nncf: NNCF's quantized model; with calibrator=core: the core's Q/DQ model,
        asked for with this backend's weight rounding (core_int8.py says why), and with --max-drop and/or
        --min-agreement the latency-aware repair of repair.py. Otherwise None."""
        opts = self.validate_options(ctx.options)
        if ctx.precision not in ("fp16", "int8"):
            return None
        import openvino as ov

        cfg.resolve(ov.Core(), opts, ctx.precision)  # a missing device fails before minutes of calibration
        if (ctx.keep_fp32 or ctx.float_tensors) and not (ctx.precision == "int8" and opts["calibrator"] == "core"):
            raise InputError("--keep-fp32 / --float-tensors with openvino need --precision int8 and the core calibrator "
                             "(NNCF and OpenVINO's fp16 take no keep-list here); drop -O calibrator=nncf")
        if ctx.precision == "int8" and opts["calibrator"] == "core":
            if ctx.calibration is None:
                return None  # a Q/DQ model made elsewhere (or the core's "needs --calib" error)
            flavour = self.quant_flavour(opts)
            if (ctx.info.get("int8_opset") or {}).get("per_channel") is False:  # opset < 13 kept: per-tensor Q/DQ
                flavour = replace(flavour, per_channel=False)
            if ctx.max_drop is not None or ctx.min_agreement is not None:
                from edgec.backends.openvino import repair

                q, ctx.info["calibration"] = repair.max_drop(ctx, flavour, opts["weight_rounding"],
                                                             ctx.max_drop, min_agreement=ctx.min_agreement)
                return q
            return core_int8.quantize(ctx, flavour, opts["weight_rounding"])
        if ctx.precision == "fp16":
            from edgec.backends.openvino import convert

            ctx.info["calibration"] = {"fp16": "weights stored as fp16 by openvino.save_model(compress_to_fp16=True); "
                                               "kernel precision set by inference_precision"}
            return convert.onnx_to_ov(ctx.source_model)
        from edgec.backends.openvino import convert, nncf_calibrate

        if ctx.min_agreement is not None:
            raise InputError("--min-agreement needs the core calibrator (NNCF's accuracy control takes a top-1 "
                             "budget only): drop -O calibrator=nncf, or use --max-drop with labelled --val")
        fp32 = convert.onnx_to_ov(ctx.source_model)
        # NNCF collects statistics by running the model, so calibrate at the shape the samples have.
        convert.set_batch(fp32, dynamic=True, batch=1)
        q, report = nncf_calibrate.quantize(fp32, ctx.calibration, ctx.validation, ctx.max_drop,
                                            ctx.calib_samples, ctx.progress)
        ctx.info["calibration"] = report
        return q

    def lower(self, ctx: LoweringContext) -> list[str]:
        import openvino as ov

        from edgec.backends.openvino import convert

        opts = self.validate_options(ctx.options)
        core = ov.Core()
        runtime = cfg.resolve(core, opts, ctx.precision, ctx.threads)  # fails early on a missing device
        t0 = time.perf_counter()
        if isinstance(ctx.model, ov.Model):
            model = ctx.model
        else:
            # fp16 always starts from FP32 weights: compress_to_fp16 below does the narrowing, and an
            # FP16 ONNX (from a caller that skipped calibrate) would carry Casts the CPU must execute.
            onnx_model = ctx.source_model if ctx.precision == "fp16" and ctx.source_model is not None else ctx.model
            model = convert.onnx_to_ov(onnx_model)
        convert.set_batch(model, opts["dynamic_batch"], opts["batch"])
        compress = ctx.precision == "fp16"
        files = convert.save_ir(model, Path(ctx.out_dir), compress_to_fp16=compress)
        ctx.info.update({
            "device": runtime.device,
            "performance_hint": runtime.hint,
            "inference_precision": runtime.inference_precision or "device default",
            "weights": "fp16" if compress else ("int8" if ctx.precision == "int8" else "fp32"),
            "batch": "dynamic" if opts["dynamic_batch"] else opts["batch"],
            "convert_s": round(time.perf_counter() - t0, 3),
        })
        if ctx.precision == "int8":
            ctx.info["int8_source"] = "nncf" if isinstance(ctx.model, ov.Model) else "core Q/DQ -> FakeQuantize"
        return files

    # ---------------------------------------------------------------- run
    def load(self, artifact_dir: Path, manifest: Mapping, threads: int | None = None, **options) -> Runner:
        import openvino as ov

        from edgec.backends.openvino.runner import OpenVINORunner

        # Options recorded at compile time, overridden by the caller's (e.g. another device); unknown
        # recorded keys (an older edgec) are ignored, unknown caller keys are an error.
        recorded = {k: v for k, v in (manifest.get("options") or {}).items() if k in self.option_defaults}
        opts = self.validate_options({**recorded, **{k: v for k, v in options.items() if v is not None}})
        core = ov.Core()
        runtime = cfg.resolve(core, opts, manifest.get("precision", "fp32"), threads)
        xml = Path(artifact_dir) / "model.xml"
        t0 = time.perf_counter()
        try:
            compiled = core.compile_model(core.read_model(str(xml)), runtime.device, runtime.properties())
        except Exception as e:
            from edgec.core.errors import BackendError

            from edgec.backends.openvino.convert import reason

            raise BackendError(f"OpenVINO could not compile {xml} for {runtime.device}: {reason(e)}") from e
        names_in = [d["name"] for d in manifest.get("inputs") or []] or None
        names_out = [d["name"] for d in manifest.get("outputs") or []] or None
        dtypes = {d["name"]: d.get("dtype") for d in manifest.get("inputs") or []}
        runner = OpenVINORunner(compiled, runtime, names_in, names_out, time.perf_counter() - t0, dtypes)
        runner.precision = manifest.get("precision", "fp32")
        runner.xml = xml  # for the throughput path, which recompiles with NUM_STREAMS
        return runner

    def layer_info(self, runner: Runner) -> dict | None:
        from edgec.backends.openvino import placement

        info = {"device": runner.config.device,
                "compiled_properties": _compiled_properties(runner.compiled),
                "compile_s": round(runner.compile_s, 3)}
        info.update(placement.summarize(runner.compiled))
        if getattr(runner, "precision", "int8") != "int8":
            info.pop("compute_layers_not_int8")  # expected to be all of them; only noise outside int8
        return info

    def intermediates(self, artifact_dir: Path, manifest: Mapping, names, threads: int | None = None) -> Runner:
        from edgec.backends.openvino import debug

        return debug.intermediates(self, artifact_dir, manifest, names, threads)

    def audit(self, artifact_dir: Path, manifest: Mapping) -> list[dict]:
        from edgec.backends.openvino import debug

        return debug.audit(self, artifact_dir, manifest)


def _compiled_properties(compiled) -> dict:
    """What the plugin actually chose (the hint may be overridden by the device), not what we asked."""
    out = {}
    for key in ("PERFORMANCE_HINT", "INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS", "NUM_STREAMS",
                "EXECUTION_DEVICES"):
        try:
            value = compiled.get_property(key)
            # Element types and enums print as "<Type: 'float32'>" / "PerformanceMode.LATENCY".
            if hasattr(value, "get_type_name"):
                value = value.get_type_name()
            elif isinstance(value, (list, tuple)):
                value = ",".join(map(str, value))
            elif hasattr(value, "name") and not isinstance(value, str):
                value = value.name
            out[key.lower()] = str(value)
        except Exception:  # not every device reports every property
            pass
    return out
