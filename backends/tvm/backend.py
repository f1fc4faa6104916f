"""Apache TVM backend: Relax ONNX frontend -> Relax/TIR pipeline -> `tvm.compile` -> `module.so`.

Targets are hardware profiles (`--target host|rpi4|jetson-orin`, see edgec/core/profiles) or a raw TVM
target dict. ARM profiles cross-compile with Debian's gcc-aarch64-linux-gnu and are validated over TVM
RPC: on a board given with `-O rpc=HOST:PORT`, or on the emulated arm64 board of scripts/arm64_board.sh
when it is running on 127.0.0.1:9190.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from edgec.backends.tvm import module_cache, targets, tuning
from edgec.backends.tvm.runner import DEFAULT_BOARD, LocalRunner, RpcRunner, listening, parse_hostport
from edgec.core.backend import Availability, Backend, LoweringContext, QuantFlavour, Requirements, Runner, TensorSpec
from edgec.core import probe
from edgec.core.errors import BackendError, InputError, UnsupportedError
from edgec.core.options import as_bool, as_number

LIB = "module.so"
META = "tvm_meta.json"
SCHEDULES = ("rules", "sampled", "naive")
LAYOUTS = ("nhwc", "nchw")


def _elf_machine(path: Path) -> str:
    """The ELF e_machine of a shared library: what `file` would say, without needing `file`."""
    head = Path(path).read_bytes()[:20]
    if head[:4] != b"\x7fELF":
        return "not ELF"
    return {62: "x86-64", 183: "aarch64", 40: "arm", 243: "riscv"}.get(int.from_bytes(head[18:20], "little"), "other")


class TvmBackend(Backend):
    name = "tvm"
    description = "Apache TVM (Relax): compiled CPU code for host, Raspberry Pi, Jetson CPU; tuning with MetaSchedule"
    requirements = Requirements(
        precisions=("fp32", "fp16", "int8"),
        # TVM legalizes Q/DQ into float arithmetic (see README): s8/s8 symmetric keeps that arithmetic simple.
        quant=QuantFlavour(placement="weighted", activation_dtype="int8", weight_dtype="int8", per_channel=True,
                           symmetric_activations=True),
        layout="NCHW",
    )
    option_defaults = {
        "target": ("host", "hardware profile (host, rpi4, jetson-orin) or a TVM target dict as JSON"),
        "schedule": ("rules", ("untuned schedules: rules (edgec's CPU schedule rules, then sampled for the rest) | "
                               "sampled (MetaSchedule design-space sample, unmeasured) | naive (legalized loops)")),
        "layout": ("nhwc", ("convolution layout TVM compiles: nhwc (channels contiguous: what the rules vectorize) | "
                            "nchw (as the ONNX model has it)")),
        "tune": (False, "run MetaSchedule tuning; records persist in $EDGEC_CACHE_DIR/tvm (~/.cache/edgec/tvm)"),
        "trials": (1000, "tuning: total measured trials (all tasks together)"),
        "tune_minutes": (20.0, "tuning: time budget in minutes (stops at trials or minutes, whichever comes first)"),
        "use_database": (True, "apply records already in the tuning database for this model and target"),
        "rpc": ("auto", "run validation/latency on a TVM RPC server HOST:PORT; auto = the emulated board on "
                        "127.0.0.1:9190 for non-host targets; off = this host only"),
        "batch": (1, "static batch size a symbolic leading input dimension is fixed to"),
        "debug_onnx": (False, "also keep the ONNX TVM compiled (model.onnx) in the artifact, so `edgec debug` can "
                              "build a copy with intermediate tensors as outputs (edgec debug sets it)"),
    }
    # what `edgec debug MODEL --backend tvm` compiles with: the ONNX its intermediates hook rebuilds from
    debug_options = {"debug_onnx": True}

    # ------------------------------------------------------------------ contract

    def available(self) -> Availability:
        # Found, not imported: importing tvm takes seconds and `edgec backends` must not (issue 17). A broken
        # install (e.g. an incompatible apache-tvm-ffi) shows when a compile imports it (validate_options).
        if not probe.installed("tvm"):
            return Availability.missing_module("tvm", "apache-tvm", extra="tvm")
        return Availability(True)

    def toolchain(self) -> dict[str, str]:
        tools = {"tvm": probe.version("tvm", "apache-tvm"), "tvm_ffi": probe.version("tvm_ffi", "apache-tvm-ffi")}
        llvm = _llvm_version()
        if llvm:
            tools["llvm"] = llvm
        return tools

    def validate_options(self, options):
        _import_tvm()  # a broken install fails here, before any model is read
        opts = super().validate_options(options)
        opts["tune"] = as_bool("tvm", "tune", opts["tune"])
        opts["use_database"] = as_bool("tvm", "use_database", opts["use_database"])
        opts["trials"] = as_number("tvm", "trials", opts["trials"], int, 1)
        opts["tune_minutes"] = as_number("tvm", "tune_minutes", opts["tune_minutes"], float, 0)
        opts["batch"] = as_number("tvm", "batch", opts["batch"], int, 1)
        opts["debug_onnx"] = as_bool("tvm", "debug_onnx", opts["debug_onnx"])
        if opts["schedule"] is None:  # the CLI reads `-O schedule=none` as None
            opts["schedule"] = "naive"
        if opts["rpc"] is None:
            opts["rpc"] = "off"
        if opts["schedule"] not in SCHEDULES:
            raise InputError(f"schedule={opts['schedule']!r}: use one of {', '.join(SCHEDULES)}")
        opts["layout"] = str(opts["layout"]).lower()
        if opts["layout"] not in LAYOUTS:
            raise InputError(f"layout={opts['layout']!r}: use one of {', '.join(LAYOUTS)}")
        rpc = str(opts["rpc"]).strip()
        if rpc not in ("auto", "off"):
            parse_hostport(rpc)
        opts["rpc"] = rpc
        rt = targets.resolve(opts["target"])  # unknown profile / bad dict: an InputError now, not after import
        targets.check_cross_compiler(rt)
        if opts["tune"] and not rt.runs_here:
            raise UnsupportedError(
                f"tune=true for target '{rt.name}' ({rt.arch}) would need MetaSchedule measuring on the board through "
                "an RPC tracker, which edgec does not drive yet (and the emulated board's timings are qemu's, not the "
                "CPU's): tune on the board itself with --target host, or compile untuned")
        return opts

    # ------------------------------------------------------------------ lowering

    def lower(self, ctx: LoweringContext) -> list[str]:
        from edgec.backends.tvm import build

        opts = ctx.options
        rt = targets.resolve(opts["target"])
        targets.check_cross_compiler(rt)
        if ctx.precision == "fp16" and not rt.fp16_arithmetic:
            raise UnsupportedError(
                f"target '{rt.name}' ({rt.tvm_target.get('mcpu', rt.arch)}) has no native FP16 arithmetic; "
                "TVM would emulate it through fp32 conversions (slower than fp32): use --precision fp32, or a target "
                "with FP16 (e.g. --target jetson-orin)")
        where = self._execution_place(rt, opts["rpc"])  # fail before the slow part if nothing can run it
        if ctx.threads and rt.name == "host":
            # --threads N: the artifact will run on N threads, so schedule (and tune) parallel loops for N.
            rt.tvm_target["num-cores"] = int(ctx.threads)

        # NHWC pays only where there are convolutions to vectorize; elsewhere it only adds transposes
        # (and broke 56 of ONNX's node tests). Where the conversion fails, the model keeps its NCHW.
        layout = opts["layout"] if build.has_convolutions(ctx.model) else "nchw"
        model_bytes = ctx.model.SerializeToString()
        db_path = tuning.database_dir(tuning.database_key(model_bytes, rt.tvm_target, opts["batch"], layout))
        records = tuning.record_count(db_path)
        lib = ctx.out_dir / LIB
        cc = _cc_version(rt.cross_cc) if rt.cross_cc else None
        key = None if opts["tune"] else module_cache.key(
            model_bytes, rt.tvm_target, ctx.precision, {**opts, "layout": layout},
            tuning.records_file(db_path) if records and opts["use_database"] else None, cc)
        cached = module_cache.restore(key, lib)
        if cached is not None:
            ctx.progress("TVM: module.so from the cache (same model, target, options and code)")
            info, params = {**cached["info"], "module_cache": cached["module_cache"]}, cached["params"]
        else:
            info, params = self._build(ctx, rt, layout, db_path, lib)
            if cc:
                info["cross_compiler"] = cc
            module_cache.store(key, lib, info, params)
            info["module_cache"] = {"hit": False} if key else {"off": "tuning"}
        info["library_machine"] = _elf_machine(lib)

        from edgec.core.model_io import input_specs, output_specs

        shapes = build.static_shapes(ctx.model, opts["batch"])
        ins = [TensorSpec(s.name, s.dtype, tuple(shapes[s.name])) for s in input_specs(ctx.model)]
        outs = output_specs(ctx.model)
        meta = {"inputs": [s.to_json() for s in ins], "outputs": [s.to_json() for s in outs], "params": params,
                "target": rt.describe(), "arch": rt.arch, "execution": where}
        (ctx.out_dir / META).write_text(json.dumps(meta, indent=2))
        info["validation_ran_on"] = where["where"]
        ctx.info.update(info)
        if opts["debug_onnx"]:
            import onnx

            from edgec.backends.tvm.debug import DEBUG_ONNX
            onnx.save(ctx.model, str(ctx.out_dir / DEBUG_ONNX))
            return [LIB, META, DEBUG_ONNX]
        return [LIB, META]

    def _build(self, ctx: LoweringContext, rt, layout: str, db_path: Path, lib: Path) -> tuple[dict, list]:
        """ONNX -> Relax -> scheduled TIR -> module.so at `lib`; returns (backend_info, the module's params)."""
        import tvm

        from edgec.backends.tvm import build

        opts = ctx.options
        target = tvm.target.Target(rt.tvm_target)
        ctx.progress(f"TVM: importing ONNX into Relax (target {rt.name}: {json.dumps(rt.tvm_target)})")
        mod = build.import_onnx(ctx.model, opts["batch"])
        params = build.io_param_names(mod)
        try:
            fused = build.lower_to_fused_tir(mod, target, layout)
        except Exception as e:  # noqa: BLE001
            if layout == "nchw":
                raise UnsupportedError(f"TVM cannot lower the model: {build.tvm_reason(e)}") from e
            ctx.progress(f"TVM: NHWC conversion failed ({build.tvm_reason(e, 120)}); compiling in NCHW")
            info_layout = {"layout": "nchw", "layout_fallback": build.tvm_reason(e, 200)}
            layout = "nchw"
            fused = build.lower_to_fused_tir(mod, target, layout)
        else:
            info_layout = {"layout": layout}

        info: dict[str, Any] = {"target": rt.describe(), "tuning_database": str(db_path), **info_layout}
        if opts["tune"]:
            info["tuning"] = tuning.tune(fused, target, db_path, opts["trials"], opts["tune_minutes"], ctx.progress,
                                         threads=int(rt.tvm_target.get("num-cores") or 0) or None,
                                         seed_with_rules=opts["schedule"] == "rules")
        records = tuning.record_count(db_path)  # again: tuning may have added some
        sched: dict[str, Any] = {"tuning_records_available": records}
        if records and opts["use_database"]:
            fused = build.apply_database(fused, target, tuning.open_database(db_path))
            sched["tuned_functions"] = _count_scheduled(fused)
        if opts["schedule"] != "naive":
            ctx.progress(f"TVM: {opts['schedule']} schedules for the untuned functions")
        fused, sources = build.schedule_untuned(fused, target, opts["schedule"], progress=ctx.progress)
        sched["functions"] = _count_prim_funcs(fused)
        sched["scheduled_functions"] = _count_scheduled(fused)
        sched["sources"] = dict(sorted(Counter(sources.values()).items()))  # e.g. {"rules:pointwise": 19, ...}
        sched["by_function"] = sources
        info["schedules"] = sched
        if ctx.precision == "int8":
            info["int8"] = _int8_report(fused)

        ctx.progress(f"TVM: compiling ({'cross: ' + rt.cross_cc if rt.cross_cc else 'host'})")
        try:
            info.update(build.compile_module(fused, target, lib, rt.cross_cc))
        except Exception as e:  # noqa: BLE001
            raise UnsupportedError(f"TVM cannot compile the model: {build.tvm_reason(e)}") from e
        return info, params

    def _execution_place(self, rt: targets.ResolvedTarget, rpc: str) -> dict:
        if rpc not in ("auto", "off"):
            host, port = parse_hostport(rpc)
            return {"where": "remote board" if not host.startswith("127.") and host != "localhost" else "rpc server on loopback",
                    "rpc": f"{host}:{port}"}
        if rt.runs_here:
            return {"where": "host"}
        if rpc == "auto" and listening(*DEFAULT_BOARD):
            return {"where": "emulated board (qemu-user arm64, scripts/arm64_board.sh)",
                    "rpc": f"{DEFAULT_BOARD[0]}:{DEFAULT_BOARD[1]}"}
        raise BackendError(
            f"a {rt.arch} module cannot run on this {targets.host_arch()} host, and edgec validates every artifact: "
            f"start the emulated board (scripts/arm64_board.sh setup && scripts/arm64_board.sh start) or pass "
            f"-O rpc=HOST:PORT of a board running python -m tvm.exec.rpc_server")

    # ------------------------------------------------------------------ loading

    def intermediates(self, artifact_dir: Path, manifest, names, threads: int | None = None):
        from edgec.backends.tvm import debug

        return debug.intermediates(artifact_dir, manifest, names, threads, META)

    def audit(self, artifact_dir: Path, manifest) -> list[dict]:
        from edgec.backends.tvm import debug

        return debug.audit(artifact_dir, manifest)

    def load(self, artifact_dir: Path, manifest, threads: int | None = None, **options) -> Runner:
        d = Path(artifact_dir)
        meta = json.loads((d / META).read_text())
        ins = [TensorSpec.from_json(s) for s in meta["inputs"]]
        if "params" in meta:  # inputs the graph never reads are not parameters of the module: accepted, not fed
            ins = [s for s in ins if s.name in set(meta["params"])]
        outs = [TensorSpec.from_json(s) for s in meta["outputs"]]
        rpc = str(options.get("rpc", "")).strip()
        if rpc and rpc not in ("auto", "off"):
            host, port = parse_hostport(rpc)
            return RpcRunner(d / LIB, ins, outs, host, port, "remote board", threads)
        ex = meta.get("execution", {})
        if "rpc" in ex:
            host, port = parse_hostport(ex["rpc"])
            if not listening(host, port):
                raise BackendError(f"this {meta['arch']} artifact runs over TVM RPC at {host}:{port}, which is not "
                                   "answering: start the board (scripts/arm64_board.sh start) or load with rpc=HOST:PORT")
            return RpcRunner(d / LIB, ins, outs, host, port, ex["where"], threads)
        if meta["arch"] != targets.host_arch():
            raise BackendError(f"this artifact is {meta['arch']} code; this host is {targets.host_arch()}: "
                               "load it with rpc=HOST:PORT of a board's TVM RPC server")
        return LocalRunner(d / LIB, ins, outs, threads)


def _import_tvm():
    try:
        import tvm
        from tvm.relax.frontend import onnx as _  # noqa: F401
    except ImportError as e:
        raise BackendError(f"backend 'tvm': Python module '{e.name or 'tvm'}' is not installed; "
                           "fix: pip install 'edgec[tvm]'") from None
    except Exception as e:  # a broken install (e.g. an incompatible apache-tvm-ffi) fails at import
        raise BackendError(f"backend 'tvm': apache-tvm fails to import: "
                           f"{(str(e).strip().splitlines() or [''])[0][:200]}; fix: pip install 'edgec[tvm]' "
                           "(pins apache-tvm 0.27 and apache-tvm-ffi 0.1.14.post1)") from None
    return tvm


def _llvm_version() -> str | None:
    """LLVM's major version, which only the loaded library knows: asked when tvm is imported (a compile),
    remembered in edgec's cache for listings, keyed by the library file, so a reinstall asks again."""
    from edgec.core import cache

    if probe.is_metadata_only():
        # A cache key (probe.metadata_only): known only once some process has imported tvm, so it would
        # change the key after the first compile; the apache-tvm version already fixes the LLVM it links.
        return None
    key = cache.file_key(probe.module_file("tvm", "lib/libtvm_compiler.so"))
    if key is None:
        return None
    if "tvm" in sys.modules:
        from tvm.target import codegen

        return cache.remember("probe", key, lambda: str(codegen.llvm_version_major()))
    return cache.recall("probe", key)


def _prim_funcs(mod):
    import tvm

    return [(gv, f) for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)]


def _count_prim_funcs(mod) -> int:
    return len(_prim_funcs(mod))


def _count_scheduled(mod) -> int:
    from edgec.backends.tvm import build

    return len(build.scheduled_names(mod))


def _int8_report(mod) -> dict:
    """What TVM makes of the core's Q/DQ model: do the fused conv/matmul kernels take integer operands?

    Measured with TVM 0.27: the Relax frontend turns QuantizeLinear/DequantizeLinear into float
    round/clip/scale arithmetic and FoldConstant dequantizes the int8 weights at compile time, so every
    conv/matmul kernel takes float32 operands (fake quantization)."""
    int_mac, float_mac = [], []
    for gv, f in _prim_funcs(mod):
        name = gv.name_hint
        if not any(k in name for k in ("conv", "matmul", "dense", "gemm")):
            continue
        dtypes = {str(getattr(p, "dtype", "")) for p in f.params}
        (int_mac if dtypes & {"int8", "uint8"} else float_mac).append(name)
    # Q/DQ reach TIR as quantize/dequantize functions, or (NHWC, layout.qdq_as_elementwise) as the
    # round/clip/cast arithmetic fused into the convolutions' epilogues.
    quant_ops = sum(1 for gv, _ in _prim_funcs(mod) if "quantize" in gv.name_hint or "round" in gv.name_hint)
    return {"kernels_with_integer_operands": len(int_mac), "kernels_with_float_operands": len(float_mac),
            "functions_with_quantize_dequantize": quant_ops,
            "summary": ("conv/matmul kernels take integer operands" if int_mac and not float_mac else
                        "fake quantization: TVM's Relax frontend lowers QuantizeLinear/DequantizeLinear to float "
                        "round/clip/scale ops and folds the int8 weights back to float32 at compile time; convs and "
                        "matmuls run in fp32, so the artifact has int8 numerics but neither int8 speed nor int8 size")}


def _cc_version(cc: str) -> str:
    try:
        out = subprocess.run([shutil.which(cc) or cc, "--version"], capture_output=True, text=True, timeout=30).stdout
        return (out.splitlines() or [cc])[0]
    except Exception:
        return cc
