"""The TensorRT backend: core Q/DQ (or fp16) ONNX -> TensorRT network -> engine (model.plan).

Lowering checks the Q/DQ against TensorRT's rules and asks the parser which nodes it cannot take
before anything is built, then builds for the target's compute capabilities. The artifact keeps the
exact ONNX the engine was built from (an engine is tied to one TensorRT version and GPU: users rebuild
from it on the target) and a per-layer precision audit. Where there is no GPU, validation runs that
ONNX on onnxruntime and the manifest says so (`validation.runtime`).
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Mapping

from edgec.core.backend import Availability, Backend, LoweringContext, QuantFlavour, Requirements, Runner, TensorSpec
from edgec.core.errors import BackendError, UnsupportedError

from . import build, config, network, targets, toolchain

PLAN, ONNX, META, LOG, INSPECTOR = "model.plan", "model.onnx", "trt_meta.json", "trt_build.log", "engine_inspector.json"


class TensorRTBackend(Backend):
    name = "tensorrt"
    description = "NVIDIA TensorRT engine (model.plan) for RTX GPUs and Jetson; TensorRT-RTX builds without a GPU"
    # What a sweep cell needs from a cluster node (edgec compare --executor ray): the engine runs on a GPU.
    cell_resources = {"GPU": 1}
    # NVIDIA's explicit-quantization placement (Q/DQ on the inputs of Conv/Gemm/MatMul and residual Adds),
    # s8 symmetric activations and per-channel weights, biases kept float (the parser rejects int32 DQ);
    # graph outputs float so the classifier's int8 kernel writes FP32 logits (TensorRT fuses DQ -> Gemm).
    requirements = Requirements(
        precisions=("fp32", "fp16", "int8"),
        quant=QuantFlavour(placement="weighted", activation_dtype="int8", weight_dtype="int8", per_channel=True,
                           symmetric_activations=True, symmetric_weights=True, float_outputs=True,
                           float_bias=True),
        layout="NCHW",
    )
    option_defaults = config.OPTION_DEFAULTS

    # ------------------------------------------------------------------ contract

    def available(self) -> Availability:
        if not toolchain.installed():
            return Availability(False, "no TensorRT is installed (neither tensorrt nor tensorrt_rtx is found)",
                                "pip install 'edgec[tensorrt]' (TensorRT-RTX); standard TensorRT comes from NVIDIA")
        gpu = toolchain.gpu()
        if not gpu.present:
            return Availability(True, f"build-only: {gpu.reason}; engines are built here and validated on the ONNX "
                                      "they were built from", "run the engine on a machine with an NVIDIA GPU "
                                "(edgec validate ARTIFACT there)", can_run=False)
        try:
            tc = toolchain.resolve("auto")
        except BackendError as e:  # found but broken (a missing libnvinfer raises at import)
            return Availability(False, str(e).split("; fix:")[0], toolchain.INSTALL["tensorrt-rtx"])
        if tc.is_rtx and gpu.compute_capability not in tc.compute_capabilities():
            return Availability(True, f"build-only: TensorRT-RTX cannot run on {gpu.name} ({gpu.compute_capability})",
                                "install standard TensorRT for this GPU", can_run=False)
        return Availability(True)

    def toolchain(self) -> dict[str, str]:
        out = {}
        for name in toolchain.installed():
            out[name] = toolchain.version(name)
        try:
            import cuda.bindings

            out["cuda-bindings"] = getattr(cuda.bindings, "__version__", "?")
        except ImportError:
            pass
        return out

    def validate_options(self, options):
        opts = config.validate(super().validate_options(options))
        tc = toolchain.resolve(opts["toolchain"])  # a missing toolchain or bad target fails before any work
        targets.resolve(opts["target"], tc, toolchain.gpu())
        if opts["dla_core"] is not None and tc.is_rtx:
            raise UnsupportedError("dla_core: TensorRT-RTX has no DLA; DLA is on Jetson with standard TensorRT "
                                   "(-O toolchain=tensorrt on the device)")
        return opts

    # ------------------------------------------------------------------ compile

    def calibrate(self, ctx: LoweringContext):
        """No calibration of its own (the core's Q/DQ is TensorRT's format). Used as a preflight: an op the
        parser cannot take, or a dynamic input without a profile, fails here rather than after calibration."""
        opts = self.validate_options(ctx.options)
        tc = toolchain.resolve(opts["toolchain"])
        logger = network.make_logger(tc.module, "off")
        parsed = network.parse(tc.module, ctx.source_model, logger)
        config.profile_shapes(opts, network.input_shapes(parsed.network))
        return None

    def lower(self, ctx: LoweringContext) -> list[str]:
        opts = self.validate_options(ctx.options)
        tc = toolchain.resolve(opts["toolchain"])
        trt = tc.module
        gpu = toolchain.gpu()
        target = targets.resolve(opts["target"], tc, gpu)
        out = Path(ctx.out_dir)
        from . import qdq_check  # imports onnx: not at listing time

        qdq_nodes = qdq_check.check(ctx.model)

        from edgec.core.model_io import input_specs, output_specs, save_model

        save_model(ctx.model, out / ONNX)  # the exact model the builder gets
        logger = network.make_logger(trt, opts["log"])
        files = [PLAN, ONNX, META]
        try:
            ctx.progress(f"TensorRT: parsing ONNX ({tc.name} {tc.version})")
            parsed = network.parse(trt, ctx.model, logger, out / ONNX)
            shapes = config.profile_shapes(opts, network.input_shapes(parsed.network))
            bconf, info = build.configure(trt, tc, gpu, parsed, target, opts, shapes)
            ctx.progress(f"TensorRT: building the engine for {', '.join(target.compute_capabilities)}")
            plan, seconds = build.build(trt, tc, gpu, parsed, bconf, info, logger)
        finally:
            if opts["log"] != "off":
                logger.write(out / LOG)
        if opts["log"] != "off":
            files.append(LOG)
        (out / PLAN).write_bytes(plan)
        ins = input_specs(ctx.model)
        outs = output_specs(ctx.model)
        meta = {"toolchain": tc.name, "version": tc.version, "compute_capabilities": target.compute_capabilities,
                "inputs": [s.to_json() for s in ins], "outputs": [s.to_json() for s in outs],
                "plan_sha256": hashlib.sha256(plan).hexdigest()}
        (out / META).write_text(json.dumps(meta, indent=2))
        info.update({
            "toolchain": tc.describe(),
            "target": target.describe(),
            "strongly_typed": True,
            "build_seconds": round(seconds, 3),
            "engine_bytes": len(plan),
            "qdq_nodes": qdq_nodes,
            "network_inputs": {k: list(v) for k, v in network.input_shapes(parsed.network).items()},
            "layer_summary": network.summarize(parsed.layers),
            "layers": parsed.layers,
            # What the builder printed about the built engine (TensorRT-RTX fuses most of a CNN into one
            # Myelin "ForeignNode", so per-kernel precision is only in the engine inspector, on a GPU).
            "engine_layers": logger.engine_layers,
            "engine_memory_bytes": logger.engine_memory,
        })
        if gpu.present:
            files += self._inspect(trt, out, ins, outs, logger, info)
        ctx.info.update(info)
        return files

    def _inspect(self, trt, out: Path, ins, outs, logger, info: dict) -> list[str]:
        from .runner import EngineRunner

        try:
            runner = EngineRunner(trt, out / PLAN, ins, outs, logger)
            try:
                (out / INSPECTOR).write_text(runner.inspector_json())
            finally:
                runner.close()
            return [INSPECTOR]
        except Exception as e:  # the inspector is an extra; the build itself succeeded
            info["engine_inspector"] = f"not written: {(str(e).splitlines() or [type(e).__name__])[0][:200]}"
            return []

    # ------------------------------------------------------------------ loading

    def audit(self, artifact_dir: Path, manifest: Mapping) -> list[dict]:
        from edgec.backends.tensorrt import debug

        return debug.audit(artifact_dir, manifest)

    def intermediates(self, artifact_dir: Path, manifest: Mapping, names, threads: int | None = None):
        from edgec.backends.tensorrt import debug

        return debug.intermediates(self, artifact_dir, manifest, names, threads)

    def load(self, artifact_dir: Path, manifest: Mapping, threads: int | None = None, **options) -> Runner:
        d = Path(artifact_dir)
        if not (d / META).is_file():
            raise BackendError(f"{d} has no {META}; it is not a TensorRT artifact of this edgec (recompile it)")
        meta = json.loads((d / META).read_text())
        ins = [TensorSpec.from_json(s) for s in meta["inputs"]]
        outs = [TensorSpec.from_json(s) for s in meta["outputs"]]
        gpu = toolchain.gpu()
        if not gpu.present:
            from .runner import BuiltFromOnnxRunner

            runner = BuiltFromOnnxRunner(d / ONNX, threads)
        else:
            try:
                tc = toolchain.resolve(meta["toolchain"])
            except BackendError:
                raise BackendError(f"this engine was built by {meta['toolchain']} {meta['version']}, which is not "
                                   f"installed here; install it, or rebuild from {d / ONNX}") from None
            from .runner import EngineRunner

            cache = None
            if tc.is_rtx:  # JIT-compiled kernels for this GPU, kept across loads
                cache = config.cache_root() / f"runtime-{meta.get('plan_sha256', 'x')[:16]}-{gpu.compute_capability}.cache"
            t0 = time.perf_counter()
            runner = EngineRunner(tc.module, d / PLAN, ins, outs, network.make_logger(tc.module, "off"), cache)
            runner.load_s = time.perf_counter() - t0
            runner.where = f"{tc.name} {tc.version} engine on {gpu.name} ({gpu.compute_capability})"
        runner.inputs, runner.outputs = ins, outs
        return runner
