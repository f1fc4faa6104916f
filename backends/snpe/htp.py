"""onnxruntime-qnn sessions on the HTP backend: plugin-EP registration, session options, node placement.

onnxruntime-qnn >= 2 is a plugin execution provider: it must be registered with
`ort.register_execution_provider_library` and attached with `SessionOptions.add_provider_for_devices`.
The old `providers=["QNNExecutionProvider"]` form is accepted without complaint and silently runs
every node on the CPU EP, so every session built here records ORT's graph-assignment info and
`placement()` says which nodes QNN actually took; a session with nothing on QNN is an error.
On x86-64, libQnnHtp.so runs the HTP backend as a simulator of the Hexagon NPU's fixed-point kernels.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from edgec.core.backend import Runner, TensorSpec
from edgec.core.errors import BackendError, UnsupportedError

EP = "QNNExecutionProvider"


@functools.lru_cache(maxsize=1)
def register() -> tuple:
    """Register the QNN plugin EP once per process; the OrtEpDevice list the sessions attach to."""
    import onnxruntime as ort
    import onnxruntime_qnn

    ort.register_execution_provider_library(EP, onnxruntime_qnn.get_library_path())
    devices = tuple(d for d in ort.get_ep_devices() if d.ep_name == EP)
    if not devices:
        raise BackendError(f"onnxruntime {ort.__version__} registered {onnxruntime_qnn.get_library_path()} but lists "
                           "no QNN device; reinstall with pip install 'edgec[qnn]'")
    return devices


def htp_library() -> str:
    import onnxruntime_qnn

    return onnxruntime_qnn.get_qnn_htp_path()


@dataclass
class HtpConfig:
    """What shapes an HTP session: the target (htp_arch / soc_model), precision and fallback policy."""

    htp_arch: int | None = None
    soc_model: int | None = None
    fp16: bool = False  # enable_htp_fp16_precision: float ops run in fp16 on HTP (v69+)
    cpu_fallback: bool = True
    threads: int | None = None
    extra: dict = field(default_factory=dict)

    def provider_options(self) -> dict[str, str]:
        opts = {"backend_path": htp_library(),
                # Graph-input Q and graph-output DQ run inside the QNN graph too, so nothing is left on CPU.
                "offload_graph_io_quantization": "0",
                "enable_htp_fp16_precision": "1" if self.fp16 else "0"}
        if self.htp_arch is not None:
            opts["htp_arch"] = str(self.htp_arch)
        if self.soc_model is not None:
            opts["soc_model"] = str(self.soc_model)
        opts.update({k: str(v) for k, v in self.extra.items()})
        return opts


def session_options(cfg: HtpConfig, context_file: Path | None = None, embed: bool = False):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 4  # errors come back as exceptions; the EP's own log lines would break one-line errors
    if cfg.threads:
        so.intra_op_num_threads = cfg.threads
        so.inter_op_num_threads = 1
    so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    if not cfg.cpu_fallback:
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    if context_file is not None:
        so.add_session_config_entry("ep.context_enable", "1")
        so.add_session_config_entry("ep.context_file_path", str(context_file))
        so.add_session_config_entry("ep.context_embed_mode", "1" if embed else "0")
    so.add_provider_for_devices(list(register()), cfg.provider_options())
    return so


def open_session(model, cfg: HtpConfig, context_file: Path | None = None, embed: bool = False):
    """An InferenceSession on QNN HTP for `model` (a path or serialized bytes); one-line errors.

    With cpu_fallback=False, ORT refuses the session without saying which nodes QNN declined; they are
    found by building the session once more with fallback allowed, so the error can name them."""
    import dataclasses

    import onnxruntime as ort

    from edgec.core import ort_session

    so = session_options(cfg, context_file, embed)
    src = model if isinstance(model, (bytes, str)) else str(model)
    ort.set_default_logger_severity(4)  # the EP's own error lines would break edgec's one-line errors
    try:
        # Without it ORT quantizes the FP32 weights of layers kept FP32 between Q/DQ before QNN sees them
        # (core/ort_session.py); tiny test model, conv_b kept: agreement 81 % -> 94 % on the HTP simulator.
        return ort.InferenceSession(src, so, **ort_session.kwargs())
    except Exception as e:
        msg = " ".join(str(e).split())
        if not cfg.cpu_fallback and "fallback" in msg.lower():
            try:
                probe = ort.InferenceSession(src, session_options(dataclasses.replace(cfg, cpu_fallback=True)),
                                             **ort_session.kwargs())
                cpu = placement(probe)["cpu_nodes"]
            except Exception:
                cpu = []
            named = f"{len(cpu)} node(s) QNN HTP cannot run: {', '.join(cpu[:8])}{' ...' if len(cpu) > 8 else ''}" \
                if cpu else "QNN HTP cannot run the whole model"
            raise UnsupportedError(f"{named}; -O cpu_fallback=false forbids CPU nodes (drop it to run them on the "
                                   "CPU beside the HTP graph)") from None
        raise BackendError(f"onnxruntime-qnn could not build an HTP session: {msg[:300]}") from None
    finally:
        ort.set_default_logger_severity(2)


def ort_session_entry() -> dict:
    from edgec.core import ort_session

    return {"disabled_optimizers": list(ort_session.DISABLED_OPTIMIZERS),
            "note": "the HTP context binary was built with these onnxruntime optimizers disabled, so layers kept FP32 "
                    "between Q/DQ stay float; a session rebuilding it from the Q/DQ model must disable them too"}


def placement(session) -> dict:
    """{"htp_nodes": [...], "cpu_nodes": [...]} from ORT's graph-assignment record of `session`.

    Names are "name (OpType)"; an empty list is empty, not missing. Raises when the session was built
    without recording (then nothing could be proven about where it ran)."""
    try:
        assigned = session.get_provider_graph_assignment_info()
    except Exception:  # onnxruntime raises when the session was built without the record
        assigned = None
    if not assigned:
        raise BackendError("the session recorded no graph assignment (built without "
                           "session.record_ep_graph_assignment_info=1); cannot tell where nodes ran")
    htp, cpu, other = [], [], []
    for sub in assigned:
        names = [f"{n.name} ({n.op_type})" for n in sub.get_nodes()]
        (htp if sub.ep_name == EP else cpu if sub.ep_name == "CPUExecutionProvider" else other).extend(names)
    return {"htp_nodes": htp, "cpu_nodes": cpu + other, "htp_partitions": sum(s.ep_name == EP for s in assigned)}


def check_on_htp(session, what: str, cpu_fallback: bool = True) -> dict:
    """The placement of `session`, after refusing a session QNN took nothing of (the silent-CPU case)
    and, with cpu_fallback=False, one with any CPU node."""
    p = placement(session)
    if not p["htp_nodes"] and EP in _providers(session):
        # attached, and it took nothing: every op (or its types) is one HTP cannot run
        raise UnsupportedError(f"{what}: QNN HTP runs none of the model's nodes (all on CPU: "
                               f"{', '.join(p['cpu_nodes'][:8])}{' ...' if len(p['cpu_nodes']) > 8 else ''}); "
                               "use another backend for this model (e.g. --backend onnxruntime)")
    if not p["htp_nodes"]:
        raise BackendError(f"{what}: no node ran on QNN HTP (all {len(p['cpu_nodes'])} on CPU); the QNN EP was not "
                           "attached (providers=['QNNExecutionProvider'] without plugin registration runs on CPU)")
    if not cpu_fallback and p["cpu_nodes"]:
        raise UnsupportedError(f"{what}: {len(p['cpu_nodes'])} node(s) fell back to CPU: "
                               f"{', '.join(p['cpu_nodes'][:8])}{' ...' if len(p['cpu_nodes']) > 8 else ''}; "
                               "-O cpu_fallback=true accepts them")
    return p


def _providers(session) -> list:
    try:
        return list(session.get_providers())
    except Exception:  # noqa: BLE001 - a session without the query: treat the EP as not attached
        return []


_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
              "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
              "tensor(uint16)": "uint16", "tensor(int16)": "int16", "tensor(bool)": "bool"}


def _spec(arg) -> TensorSpec:
    return TensorSpec(arg.name, _ORT_TYPES.get(arg.type, arg.type),
                      tuple(d if isinstance(d, int) else str(d) for d in arg.shape))


def _on_device() -> bool:
    """On an Arm host (a Snapdragon board or Windows-on-Snapdragon laptop) libQnnHtp.so drives the real NPU."""
    import platform

    return platform.machine().lower() in ("aarch64", "arm64")


class HtpRunner(Runner):
    """A QNN context model (or any ONNX model) on the HTP backend through onnxruntime-qnn."""

    def __init__(self, model_path: Path, cfg: HtpConfig, what: str = "QNN artifact"):
        self.cfg = cfg
        self.threads = cfg.threads
        # Off a Snapdragon, libQnnHtp.so simulates the NPU on this CPU: its latencies say nothing about the
        # device, so benchmark and compare label them and rank them against nothing timed on the host.
        self.where = "host" if _on_device() else "QNN HTP simulator on x86-64 (emulated, not device latency)"
        self.session = open_session(Path(model_path), cfg)
        self.placement = check_on_htp(self.session, what, cfg.cpu_fallback)
        self.inputs = [_spec(i) for i in self.session.get_inputs()]
        self.outputs = [_spec(o) for o in self.session.get_outputs()]
        self._names = [o.name for o in self.outputs]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {s.name: np.ascontiguousarray(feeds[s.name], dtype=s.dtype) for s in self.inputs}
        return dict(zip(self._names, self.session.run(None, feeds)))

    def close(self) -> None:
        self.session = None
