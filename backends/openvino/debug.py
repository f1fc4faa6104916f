"""OpenVINO's parts of `edgec debug` and the precision audit (the algorithms are in core/debug/).

intermediates: the IR keeps ONNX tensor names on its ports; a quantized tensor T is the output of the
  FakeQuantize the ONNX frontend made from Q(T)/DQ, named `T_DequantizeLinear_Output`, the value the
  next layer reads. Those ports become extra model outputs (`Model.add_outputs`) before compile_model.
  An extra output on a FakeQuantize can keep the CPU plugin from folding it into the producer's int8
  kernel; compare.py sets the outputs of both compiled models side by side to show any change.
  Concat inputs are the exception: convert_model drops the FakeQuantize of every input of a Concat
  whose output is quantized again (FQ(a), FQ(b) -> Concat -> FQ(c) becomes a, b -> Concat -> FQ(c); the
  CPU plugin then applies FQ(c) to each input), so no `T_DequantizeLinear_Output` exists and the only
  port named T is the producer's raw output. The core quantizer folded T's Relu into Q(T)'s range, so
  that port holds the pre-Relu conv output (negative values: NMSE > 1 against FP32, SQNR -1 to -22 dB,
  which compare.py flagged `suspect`). What the Concat's consumers read of T is its slice of FQ(c)'s
  output, so T is exposed as that slice.
audit: the compiled model's runtime (execution) graph: per Convolution / FullyConnected / MatMul node,
  `runtimePrecision` (u8/i8 = int8 kernel) and `originalLayersNames` (the ONNX node names it fused),
  the same graph `placement.py` summarizes into the manifest.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from edgec.core.backend import Runner

from edgec.backends.openvino import config as cfg
from edgec.backends.openvino.placement import COMPUTE, _rt

_INT = {"u8": "int8", "i8": "int8", "u16": "int16", "i16": "int16", "u4": "int4", "i4": "int4"}
_FLOAT = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}


def expose_map(model, names: list[str]) -> dict[str, object]:
    """{FP32 tensor name: the IR output port holding its value as consumers see it, or (port, axis,
    start, stop) when that value is a slice of a quantized Concat's output (see the module docstring)}."""
    ports = {}
    for op in model.get_ordered_ops():
        for out in op.outputs():
            for nm in out.get_names():
                ports.setdefault(nm, out)
    found = {}
    for t in names:
        port = ports.get(f"{t}_DequantizeLinear_Output")
        if port is None and t in ports:
            port = _concat_slice(ports[t]) or ports[t]
        if port is not None:
            found[t] = port
    return found


def _concat_slice(port):
    """(FQ output port, axis, start, stop) when `port` feeds only a Concat whose output goes only
    into one FakeQuantize, with static sizes along the axis before it; else None."""
    targets = list(port.get_target_inputs())
    if len(targets) != 1 or targets[0].get_node().get_type_name() != "Concat":
        return None
    concat = targets[0].get_node()
    fqs = list(concat.output(0).get_target_inputs())
    if len(fqs) != 1 or fqs[0].get_node().get_type_name() != "FakeQuantize" or fqs[0].get_index() != 0:
        return None
    rank = concat.get_output_partial_shape(0).rank
    if not rank.is_static:
        return None
    axis = concat.get_axis() % rank.get_length()
    start = 0
    for i in range(targets[0].get_index()):
        dim = concat.get_input_partial_shape(i)[axis]
        if not dim.is_static:
            return None
        start += dim.get_length()
    dim = concat.get_input_partial_shape(targets[0].get_index())[axis]
    if not dim.is_static:
        return None
    return fqs[0].get_node().output(0), axis, start, start + dim.get_length()


class ExposedRunner(Runner):
    def __init__(self, compiled, exposed: dict[str, object], inputs: list[str], outputs: list[str]):
        self.compiled = compiled
        self._request = compiled.create_infer_request()
        self._inputs = inputs
        # compiled.outputs[k] pairs with the model output k; the extra ones follow the model's own.
        self._out_ports = list(compiled.outputs)
        self._slices = {t: p[1:] for t, p in exposed.items() if isinstance(p, tuple)}
        ports = {t: p[0] if isinstance(p, tuple) else p for t, p in exposed.items()}
        self._names = {t: next(iter(sorted(p.get_names())), t) for t, p in ports.items()}
        self.exposed = {t: nm + (f"[axis {self._slices[t][0]}: {self._slices[t][1]}:{self._slices[t][2]}]"
                                 if t in self._slices else "") for t, nm in self._names.items()}
        self._by_name: dict[str, object] = {}
        for p in self._out_ports:
            for nm in p.get_names():
                self._by_name.setdefault(nm, p)
        self.model_outputs = outputs
        self.note = ("openvino: exposed ports (a quantized tensor is its FakeQuantize output) added with "
                     "Model.add_outputs before compile_model; an output on a FakeQuantize can block its "
                     "fusion into the producer's int8 kernel.")

    def run(self, feeds):
        feed = {k: np.ascontiguousarray(v) for k, v in feeds.items() if k in self._inputs}
        res = self._request.infer(feed)
        out = {}
        for t, nm in self._names.items():
            p = self._by_name.get(nm)
            if p is None:
                continue
            v = np.array(res[p])
            if t in self._slices:
                axis, start, stop = self._slices[t]
                v = np.take(v, np.arange(start, stop), axis=axis)
            out[t] = v
        for o in self.model_outputs:
            p = self._by_name.get(o)
            if p is not None:
                out[o] = np.array(res[p])
        return out


def intermediates(backend, artifact_dir: Path, manifest: Mapping, names: list[str], threads: int | None = None) -> Runner:
    import openvino as ov

    recorded = {k: v for k, v in (manifest.get("options") or {}).items() if k in backend.option_defaults}
    opts = backend.validate_options(recorded)
    core = ov.Core()
    runtime = cfg.resolve(core, opts, manifest.get("precision", "fp32"), threads or 1)
    model = core.read_model(str(Path(artifact_dir) / "model.xml"))
    exposed = expose_map(model, names)
    outputs = [d["name"] for d in manifest.get("outputs") or []]
    existing = {nm for o in model.outputs for nm in o.get_names()}
    plain = [p[0] if isinstance(p, tuple) else p for p in exposed.values()]
    extra = [p for p in {id(p): p for p in plain}.values() if not (set(p.get_names()) & existing)]
    if extra:
        model.add_outputs(extra)
    compiled = core.compile_model(model, runtime.device, runtime.properties())
    inputs = [n for i in compiled.inputs for n in i.get_names()]
    return ExposedRunner(compiled, exposed, inputs, outputs)


def audit(backend, artifact_dir: Path, manifest: Mapping) -> list[dict]:
    """Per compute node of the runtime graph: the precision it executes and the ONNX node it came from."""
    import openvino as ov

    recorded = {k: v for k, v in (manifest.get("options") or {}).items() if k in backend.option_defaults}
    opts = backend.validate_options(recorded)
    core = ov.Core()
    runtime = cfg.resolve(core, opts, manifest.get("precision", "fp32"), 1)
    compiled = core.compile_model(core.read_model(str(Path(artifact_dir) / "model.xml")), runtime.device,
                                  runtime.properties())
    rows = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        kind = _rt(op, "layerType")
        if kind not in COMPUTE:
            continue
        prec = _rt(op, "runtimePrecision")
        names = [n for n in _rt(op, "originalLayersNames").split(",") if n] or [op.get_friendly_name()]
        onnx_name = _onnx_name(names)
        weight = _weight_precision(op)
        if prec in _INT:
            rows.append({"name": onnx_name, "op": kind, "precision": _INT[prec], "kernel": f"{kind} {prec}",
                         "why": None, "fused": names})
            continue
        if weight in ("f32", "f16", "bf16"):
            why = "FP32 weights: kept in FP32 (--keep-fp32, the accuracy repair, or never quantized)"
        else:
            why = ("int8 weights but a float kernel: OpenVINO's low-precision transformations did not fuse the "
                   "FakeQuantize around it (an input or output not quantized)")
        rows.append({"name": onnx_name, "op": kind, "precision": _FLOAT.get(prec, prec or "?"),
                     "kernel": f"{kind} {prec}", "why": why, "fused": names})
    return rows


def _onnx_name(names: list[str]) -> str:
    """The ONNX node of a fused runtime node: its first original layer, without the frontend's
    `/WithoutBiases` suffix (the bias Add carries the ONNX node name itself)."""
    first = names[0]
    return first[: -len("/WithoutBiases")] if first.endswith("/WithoutBiases") else first


def _weight_precision(op) -> str:
    """Element type of the constant behind the node's weight input in the runtime graph."""
    try:
        src = op.input(1).get_source_output().get_node()
        for _ in range(3):
            kind = _rt(src, "layerType")
            if kind == "Const" or src.get_input_size() == 0:
                return _rt(src, "runtimePrecision") or src.get_output_element_type(0).get_type_name()
            src = src.input(0).get_source_output().get_node()
    except Exception:
        return ""
    return ""
