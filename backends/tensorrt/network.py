"""ONNX -> TensorRT network: the parser's support check, the parse, and the per-layer precision audit.

Everything here runs without a GPU. The audit is read from the network handed to the builder, before
fusion: a convolution or matrix multiply whose data input and weights both come from DequantizeLinear
layers is what TensorRT's explicit quantization fuses into an INT8 kernel (Q/DQ are folded into it);
other layers have the precision of their output type, which a strongly typed network fixes.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: importing the backend (to list it) must not import onnx
    import onnx

from edgec.core.errors import UnsupportedError

_DTYPE = {"FLOAT": "FP32", "HALF": "FP16", "BF16": "BF16", "INT8": "INT8", "INT32": "INT32", "INT64": "INT64",
          "BOOL": "BOOL", "UINT8": "UINT8", "FP8": "FP8", "INT4": "INT4", "FP4": "FP4"}
_COMPUTE = ("CONVOLUTION", "DECONVOLUTION", "MATRIX_MULTIPLY")
_MEMORY = re.compile(r"^Total (Weights|Activation|Device Persistent) Memory: (\d+) bytes")


def make_logger(trt, level: str = "off"):
    """A TensorRT ILogger that keeps messages in memory, never on stdout; the backend writes them to the
    artifact's trt_build.log when asked (`level`; "off" keeps errors only, for error messages). Made per
    call because it must subclass the ILogger of whichever toolchain is in use."""
    order = ["INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"]
    keep = order.index({"off": "ERROR"}.get(level, level.upper()))

    class _L(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.lines: list[tuple[str, str]] = []
            self.engine_layers: list[str] = []
            self.engine_memory: dict[str, int] = {}

        def log(self, severity, msg):
            sev = str(severity).split(".")[-1]
            if "Engine Layer Information" in msg:  # the built engine's layers, at VERBOSE after a build
                self.engine_layers += [ln.strip() for ln in msg.splitlines() if ln.strip().startswith("Layer(")]
            m = _MEMORY.match(msg)
            if m:  # the builder's memory report (INFO): what the engine holds, measured, not estimated
                self.engine_memory[m.group(1).lower().replace(" ", "_")] = int(m.group(2))
            if sev in order and order.index(sev) <= keep:
                self.lines.append((sev, msg))

        @contextlib.contextmanager
        def capture_stdio(self):
            """The ONNX parser prints some errors straight to the process's stdout/stderr ("Unsupported
            ONNX data type: STRING"), past the logger; route file descriptors 1 and 2 into the log."""
            sys.stdout.flush()
            sys.stderr.flush()
            saved = [os.dup(1), os.dup(2)]
            with tempfile.TemporaryFile(mode="w+b") as tmp:
                try:
                    os.dup2(tmp.fileno(), 1)
                    os.dup2(tmp.fileno(), 2)
                    yield
                finally:
                    os.dup2(saved[0], 1)
                    os.dup2(saved[1], 2)
                    for fd in saved:
                        os.close(fd)
                    tmp.seek(0)
                    for ln in tmp.read().decode(errors="replace").splitlines():
                        if ln.strip():
                            self.lines.append(("STDIO", ln))

        def errors(self) -> list[str]:
            return [m for s, m in self.lines if s in ("INTERNAL_ERROR", "ERROR")]

        def write(self, path: Path) -> None:
            path.write_text("".join(f"[{s}] {m}\n" for s, m in self.lines))

    # TensorRT hands a Python logger every message, VERBOSE included; the level only filters what is kept.
    return _L()


@dataclass
class Parsed:
    builder: object
    network: object
    parser: object
    flags: int
    layers: list[dict] = field(default_factory=list)


def first_unsupported(trt, model: onnx.ModelProto, logger) -> tuple[str, str, str] | None:
    """(node name, op type, reason) of the first node TensorRT's parser cannot take, or None."""
    builder = trt.Builder(logger)
    network = builder.create_network(_flags(trt))
    parser = trt.OnnxParser(network, logger)
    with logger.capture_stdio():
        ok = parser.supports_model_v2(model.SerializeToString())
    if ok:
        return None
    nodes = model.graph.node
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        if 0 <= e.node() < len(nodes):
            n = nodes[e.node()]
            return n.name or n.output[0], n.op_type, _describe(e)
        if e.node_name():
            return e.node_name(), e.node_operator(), _describe(e)
    for i in range(parser.num_subgraphs):  # no error names a node: the first unsupported partition does
        idx = list(parser.get_subgraph_nodes(i))
        if not parser.is_subgraph_supported(i) and idx:
            n = nodes[idx[0]]
            return n.name or n.output[0], n.op_type, ""
    return "?", "?", _describe(parser.get_error(0)) if parser.num_errors else "no reason given"


def _describe(e) -> str:
    kind = str(e.code()).split(".")[-1]
    desc = (str(e.desc()).strip().splitlines() or [""])[0]
    if kind == "UNSUPPORTED_NODE" and desc in ("", "false") or "Plugin not found" in desc:
        return "TensorRT has no implementation of this op"
    return desc[:200]


def _reason(parser) -> str:
    return _describe(parser.get_error(0)) if parser.num_errors else ""


def _flags(trt) -> int:
    # Strongly typed: precision comes from the ONNX types (FP16 from the core's fp16 model, INT8 from Q/DQ),
    # which is how TensorRT-RTX always works and what standard TensorRT recommends for explicit quantization.
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def parse(trt, model: onnx.ModelProto, logger, model_path: Path | None = None) -> Parsed:
    unsupported = first_unsupported(trt, model, logger)
    if unsupported:
        name, op, why = unsupported
        raise UnsupportedError(f"TensorRT cannot take node '{name}' (op {op})" + (f": {why}" if why else "") +
                               "; replace the op before export, or keep it out of the model given to TensorRT")
    builder = trt.Builder(logger)
    network = builder.create_network(_flags(trt))
    parser = trt.OnnxParser(network, logger)
    data = model.SerializeToString()
    with logger.capture_stdio():
        ok = parser.parse(data, str(model_path)) if model_path else parser.parse(data)
    if not ok:
        e = parser.get_error(0) if parser.num_errors else None
        where = f" at node '{e.node_name()}' (op {e.node_operator()})" if e is not None and e.node_name() else ""
        raise UnsupportedError(f"TensorRT's ONNX parser rejected the model{where}: {_reason(parser) or 'no reason given'}")
    p = Parsed(builder, network, parser, _flags(trt))
    p.layers = layer_table(trt, network)
    return p


def input_shapes(network) -> dict[str, tuple[int, ...]]:
    return {network.get_input(i).name: tuple(network.get_input(i).shape) for i in range(network.num_inputs)}


def _dt(t) -> str:
    name = str(t).split(".")[-1]
    return _DTYPE.get(name, name)


def layer_table(trt, network) -> list[dict]:
    producer: dict[str, object] = {}
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    for layer in layers:
        for j in range(layer.num_outputs):
            producer[layer.get_output(j).name] = layer
    table = []
    for layer in layers:
        kind = str(layer.type).split(".")[-1]
        out_t = _dt(layer.get_output_type(0)) if layer.num_outputs else "-"
        precision = out_t
        if kind in _COMPUTE:
            srcs = []
            for j in range(min(layer.num_inputs, 2)):
                t = layer.get_input(j)
                src = producer.get(t.name) if t is not None else None
                srcs.append(src is not None and str(src.type).endswith("DEQUANTIZE") and
                            _dt(src.get_input(0).dtype) in ("INT8", "FP8", "INT4"))
            if layer.num_inputs >= 2 and all(srcs):
                precision = _dt(producer[layer.get_input(0).name].get_input(0).dtype)
        table.append({"name": layer.name, "type": kind, "precision": precision})
    return table


def summarize(layers: list[dict]) -> dict:
    compute = [row for row in layers if row["type"] in _COMPUTE]
    return {
        "layers_total": len(layers),
        "compute_layers_by_precision": dict(sorted(Counter(r["precision"] for r in compute).items())),
        "int8_convolutions": sum(1 for r in compute if r["type"] in ("CONVOLUTION", "DECONVOLUTION")
                                 and r["precision"] == "INT8"),
        "layer_types": dict(sorted(Counter(r["type"] for r in layers).items())),
        "precision_is": "network-level, before fusion: a convolution/matmul fed by DequantizeLinear on both its "
                        "input and its weights is fused by TensorRT into an INT8 kernel",
    }
