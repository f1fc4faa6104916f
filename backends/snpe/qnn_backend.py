"""The `qnn` backend: the core's Q/DQ model in the QNN flavour, compiled offline into an HTP context binary.

Flow: core Q/DQ (u8 or u16 activations, s8 symmetric per-channel weights, GPTQ rounding) -> an
onnxruntime-qnn session on the HTP backend with `ep.context_enable=1` for the profile's htp_arch /
soc_model -> `model_ctx.onnx` (one EPContext node) + `model_ctx_qnn.bin` (the QNN context binary;
or one .onnx with the binary embedded, `-O embed_context=true`). The artifact loads with onnxruntime-qnn
on the device; here the same files run on libQnnHtp.so's x86 simulator for validation. `model_qdq.onnx`
(the Q/DQ model the binary was built from) ships beside it: it is byte-identical across rebuilds while the
QNN binary is not (QNN writes a few build-specific bytes), and it re-targets another SoC without
re-calibrating.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping

from edgec.core import options as o
from edgec.core import probe
from edgec.core.backend import Availability, Backend, LoweringContext, QuantFlavour, Requirements, Runner
from edgec.core.errors import InputError, UnsupportedError

from edgec.backends.snpe import targets
from edgec.backends.snpe.shapes import static_batch

CONTEXT_MODEL = "model_ctx.onnx"
CONTEXT_BIN = "model_ctx_qnn.bin"
QDQ_MODEL = "model_qdq.onnx"  # int8: the Q/DQ model the binary was compiled from
FP32_MODEL = "model_fp32.onnx"  # fp16: the FP32 model HTP runs in fp16
ACTIVATIONS = {"u8": "uint8", "u16": "uint16"}
WEIGHTS = ("auto", "s8", "u8")
CALIBRATORS = ("core", "ort")
ROUNDINGS = ("gptq", "nearest")
# u8 activations x s8 symmetric per-channel weights: what HTP's Conv/FC kernels take (per-channel
# weights must have zero offset); 16-bit activations keep the 8-bit weights (A16W8).
FLAVOUR = QuantFlavour(placement="qnn", activation_dtype="uint8", weight_dtype="int8", per_channel=True,
                       symmetric_activations=False, symmetric_weights=True)


def flavour_for(activations: str, weights: str, fp16: bool = False) -> QuantFlavour:
    """`fp16`: the target has fp16 arithmetic (v69+), so the unweighted tail after the last weighted layer
    (SqueezeNet's GlobalAveragePool -> Flatten) stays float and runs in fp16 on HTP instead of putting the
    logits on an 8-bit grid (qdq.float_tail)."""
    if weights == "u8":  # ORT's QNN recipe default: asymmetric per-tensor uint8 weights
        return dataclasses.replace(FLAVOUR, activation_dtype=ACTIVATIONS[activations], weight_dtype="uint8",
                                   per_channel=False, symmetric_weights=False, float_outputs=fp16)
    return dataclasses.replace(FLAVOUR, activation_dtype=ACTIVATIONS[activations], float_outputs=fp16)


class QnnBackend(Backend):
    name = "qnn"
    description = "Qualcomm QNN HTP context binary (Hexagon NPU) via onnxruntime-qnn; validated on the HTP simulator"
    requirements = Requirements(precisions=("fp16", "int8"), quant=FLAVOUR, layout="NCHW", opset_range=(11, 21))
    option_defaults = {
        "target": (targets.DEFAULT_TARGET, "Snapdragon hardware profile (snapdragon-888, -8gen1, -8gen2, -8gen3, "
                                           "-8elite, -8elite-gen5) or custom with -O htp_arch"),
        "htp_arch": (None, "override the profile's HTP architecture: 68, 69, 73, 75, 79, 81"),
        "soc_model": (None, "override the profile's QNN SoC id (e.g. 43 = SM8550)"),
        "activations": ("u8", "int8 activation type: u8, or u16 (16-bit activations, 8-bit weights) for accuracy"),
        "weights": ("auto", "int8 weights: s8 (symmetric per-channel) or u8 (asymmetric per-tensor); auto = s8 with "
                            "the core calibrator, u8 (the recipe's default) with calibrator=ort"),
        "calibrator": ("core", "core (edgec's calibration, bias correction, GPTQ) or ort (onnxruntime's QNN "
                               "recipe: get_qnn_qdq_config + quantize, MinMax)"),
        "weight_rounding": ("gptq", "core calibrator: gptq (weights rounded for each layer's output error) or nearest"),
        "cpu_fallback": (True, "false: any node QNN HTP cannot take is a one-line error naming it"),
        "embed_context": (False, "true: one .onnx with the context binary embedded; false: .onnx + _qnn.bin"),
    }

    # ---------------------------------------------------------------- discovery
    def available(self) -> Availability:
        if not (probe.installed("onnxruntime") and probe.installed("onnxruntime_qnn")):
            return Availability.missing_module("onnxruntime_qnn", "onnxruntime-qnn", extra="qnn")
        # Plugin execution providers (register_execution_provider_library) came in onnxruntime 1.24.2; read
        # from its metadata, so that listing backends does not import onnxruntime.
        ort_version = probe.version("onnxruntime", "onnxruntime", "onnxruntime-gpu")
        if probe.release(ort_version) < (1, 24, 2):
            return Availability(False, f"onnxruntime {ort_version} has no plugin execution providers "
                                       "(onnxruntime-qnn 2.x needs onnxruntime >= 1.24.2)",
                                "pip install -U 'edgec[qnn]'")
        return Availability(True)

    def toolchain(self) -> dict[str, str]:
        import onnxruntime_qnn  # light: its package info, not the EP library

        tools = {"onnxruntime": probe.version("onnxruntime", "onnxruntime", "onnxruntime-gpu"),
                 "onnxruntime-qnn": probe.version("onnxruntime_qnn", "onnxruntime-qnn"), "onnx": probe.version("onnx")}
        qnn_sdk = getattr(onnxruntime_qnn.build_and_package_info, "qnn_version", None)
        if qnn_sdk:
            tools["qnn-sdk"] = str(qnn_sdk)
        return tools

    def validate_options(self, options):
        opts = super().validate_options(options)
        opts["activations"] = o.as_choice(self.name, "activations", opts["activations"], ACTIVATIONS)
        opts["weights"] = o.as_choice(self.name, "weights", opts["weights"], WEIGHTS)
        opts["calibrator"] = o.as_choice(self.name, "calibrator", opts["calibrator"], CALIBRATORS)
        if opts["weights"] == "auto":
            opts["weights"] = "u8" if opts["calibrator"] == "ort" else "s8"
        opts["weight_rounding"] = o.as_choice(self.name, "weight_rounding", opts["weight_rounding"], ROUNDINGS)
        opts["cpu_fallback"] = o.as_bool(self.name, "cpu_fallback", opts["cpu_fallback"])
        opts["embed_context"] = o.as_bool(self.name, "embed_context", opts["embed_context"])
        t = targets.resolve(opts["target"], opts["htp_arch"], opts["soc_model"])  # one-line errors now
        opts["target"], opts["htp_arch"], opts["soc_model"] = t.name, t.htp_arch, t.soc_model
        return opts

    def _target(self, opts) -> targets.HtpTarget:
        return targets.resolve(opts["target"], opts["htp_arch"], opts["soc_model"])

    # ---------------------------------------------------------------- compile
    def calibrate(self, ctx: LoweringContext):
        """fp16: the FP32 model itself (HTP runs it in fp16 with enable_htp_fp16_precision; the core's
        FP16 rewrite would only add Casts). int8: the core's Q/DQ in the QNN flavour of the options, or
        onnxruntime's own QNN recipe with -O calibrator=ort."""
        opts = self.validate_options(ctx.options)
        t = self._target(opts)
        if ctx.precision == "fp16":
            if not t.fp16:
                raise UnsupportedError(f"qnn target {t.name} (HTP v{t.htp_arch}) has no fp16 arithmetic; use "
                                       "--precision int8, or a v69+ target such as snapdragon-8gen2")
            ctx.info["calibration"] = {"precision": "fp16", "fp16": "FP32 model run in fp16 on HTP "
                                                                     "(enable_htp_fp16_precision=1)"}
            return ctx.source_model
        if ctx.precision != "int8" or ctx.calibration is None:
            return None
        from edgec.backends.snpe import quantize

        if opts["calibrator"] == "ort":
            if ctx.max_drop is not None or ctx.min_agreement is not None:
                raise InputError("--max-drop/--min-agreement need the core calibrator; drop -O calibrator=ort")
            q, ctx.info["calibration"] = quantize.ort_recipe(ctx.source_model, ctx.calibration, opts["activations"],
                                                             opts["weights"], ctx.calib_samples)
            return q
        q, ctx.info["calibration"] = quantize.core(ctx, flavour_for(opts["activations"], opts["weights"], t.fp16),
                                                   opts["weight_rounding"] == "gptq")
        return q

    def lower(self, ctx: LoweringContext) -> list[str]:
        import onnx

        from edgec.backends.snpe import htp
        from edgec.core.model_io import save_model

        opts = self.validate_options(ctx.options)
        t = self._target(opts)
        out = Path(ctx.out_dir)
        src = out / (QDQ_MODEL if ctx.precision == "int8" else FP32_MODEL)
        save_model(static_batch(ctx.model), src)
        cfg = self.htp_config(opts, t, ctx.precision, ctx.threads)
        ctx.progress(f"QNN: building the HTP v{t.htp_arch} context binary for {t.name}")
        # From bytes, not the path: QNN EP hashes the model path into the EPContext node's partition name,
        # which would make the context model differ between two builds in different temporary folders.
        model_in = src.read_bytes() if src.stat().st_size < 1_900_000_000 else src
        session = htp.open_session(model_in, cfg, context_file=out / CONTEXT_MODEL, embed=opts["embed_context"])
        placed = htp.check_on_htp(session, f"qnn {t.name}", opts["cpu_fallback"])
        del session
        files = [CONTEXT_MODEL, src.name] + ([] if opts["embed_context"] else [CONTEXT_BIN])
        if not (out / CONTEXT_MODEL).is_file():
            raise UnsupportedError(f"onnxruntime-qnn wrote no context model for {t.name}: QNN took none of the graph")
        if placed["cpu_nodes"]:
            # The context model keeps the CPU nodes as ONNX ops beside the EPContext node(s).
            ctx.progress(f"QNN: {len(placed['cpu_nodes'])} node(s) stay on CPU: {', '.join(placed['cpu_nodes'][:5])}")
        ops = [n.op_type for n in onnx.load(str(out / CONTEXT_MODEL), load_external_data=False).graph.node]
        ctx.info.update({
            **t.to_json(),
            "precision_on_htp": "fp16" if ctx.precision == "fp16" else f"a{8 if opts['activations'] == 'u8' else 16}"
                                                                       f"w8 ({opts['weights']} weights)",
            "context_embedded": opts["embed_context"],
            "context_nodes": ops.count("EPContext"),
            "htp_partitions": placed["htp_partitions"],
            "htp_node_count": len(placed["htp_nodes"]),
            "htp_nodes": placed["htp_nodes"],
            "cpu_nodes": placed["cpu_nodes"],
            "provider_options": {k: v for k, v in cfg.provider_options().items() if k != "backend_path"},
            # The context binary was built with it (layers kept FP32 stay float); rebuilding from the Q/DQ model needs it again.
            **({"session": htp.ort_session_entry()} if ctx.precision == "int8" else {}),
        })
        return files

    def htp_config(self, opts, t: targets.HtpTarget, precision: str, threads=None):
        from edgec.backends.snpe import htp

        # fp16 also for int8 builds on v69+: a tensor the accuracy repair returned to float then runs on
        # HTP in fp16 instead of falling back to the CPU.
        return htp.HtpConfig(htp_arch=t.htp_arch, soc_model=t.soc_model, fp16=t.fp16 and precision in ("fp16", "int8"),
                             cpu_fallback=opts["cpu_fallback"], threads=threads)

    # ---------------------------------------------------------------- run
    def load(self, artifact_dir: Path, manifest: Mapping, threads: int | None = None, **options) -> Runner:
        from edgec.backends.snpe import htp

        recorded = {k: v for k, v in (manifest.get("options") or {}).items() if k in self.option_defaults}
        opts = self.validate_options({**recorded, **{k: v for k, v in options.items() if v is not None}})
        t = self._target(opts)
        path = Path(artifact_dir) / CONTEXT_MODEL
        if not path.is_file():
            raise InputError(f"{artifact_dir} holds no {CONTEXT_MODEL}; not a qnn artifact")
        cfg = self.htp_config(opts, t, manifest.get("precision", "int8"), threads)
        runner = htp.HtpRunner(path, cfg, what=f"qnn artifact {artifact_dir}")
        return runner

    def intermediates(self, artifact_dir: Path, manifest: Mapping, names, threads: int | None = None):
        """`edgec debug` on the HTP simulator: each tensor from its own HTP graph, the Q/DQ model cut there
        (debug.CutGraphRunner; one HTP build per tensor, seconds each)."""
        from edgec.backends.snpe import debug

        recorded = {k: v for k, v in (manifest.get("options") or {}).items() if k in self.option_defaults}
        opts = self.validate_options(recorded)
        cfg = self.htp_config(opts, self._target(opts), manifest.get("precision", "int8"), threads)
        src = QDQ_MODEL if (Path(artifact_dir) / QDQ_MODEL).is_file() else FP32_MODEL
        return debug.CutGraphRunner(Path(artifact_dir), src, CONTEXT_MODEL, cfg, names,
                                    what=f"qnn artifact {artifact_dir}")

    def audit(self, artifact_dir: Path, manifest: Mapping) -> list[dict]:
        from edgec.backends.snpe import debug

        return debug.audit(artifact_dir, manifest, QDQ_MODEL)

    def layer_info(self, runner: Runner) -> dict | None:
        p = getattr(runner, "placement", None)
        if p is None:
            return None
        # What the loaded context model ran: EPContext node(s) on HTP, and any CPU nodes beside them.
        return {"session_htp_nodes": p["htp_nodes"], "session_cpu_nodes": p["cpu_nodes"],
                "simulator": "libQnnHtp.so on x86-64 (HTP simulator)"}

