"""ONNX Runtime's parts of `edgec debug` and the precision audit (the algorithms are in core/debug/).

intermediates: the artifact is a Q/DQ ONNX model, so an FP32 tensor T is exposed as the value its
  consumers read: the DequantizeLinear output of Q(T) when T is quantized, else T itself. Extra graph
  outputs can stop ORT fusing a DQ -> Conv -> Q group into QLinearConv; the fused kernel computes the
  same integers, so the difference is float rounding, and compare.py reports the outputs of both
  sessions side by side (`outputs_cosine_vs_artifact`) so a changed result would show.
audit: what ORT really runs is its optimized graph (`SessionOptions.optimized_model_filepath`, written
  at the artifact's graph_optimization level): a Q/DQ group fused into QLinearConv / QGemm /
  QLinearMatMul / ConvInteger / MatMulInteger runs int8; a Conv / FusedConv / NchwcConv / Gemm /
  MatMul / FusedMatMul runs float, on dequantized weights when its weight came through a DQ.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Mapping

import onnx

from edgec.core import ort_session
from edgec.core.backend import Runner
from edgec.core.debug.layers import qdq_exposure

INT8_KERNELS = {"QLinearConv": "int8", "QGemm": "int8", "QLinearMatMul": "int8", "ConvInteger": "int8",
                "MatMulInteger": "int8", "DynamicQuantizeMatMul": "int8 (dynamic)",
                "MatMulIntegerToFloat": "int8 (dynamic)"}
FLOAT_KERNELS = {"Conv", "FusedConv", "NchwcConv", "ConvTranspose", "Gemm", "MatMul", "FusedMatMul",
                 "FusedGemm"}
_ORT_LEVELS = ("disable", "basic", "extended", "all")


def _session_options(level: str, threads: int | None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level if level in _ORT_LEVELS else "all"]
    so.intra_op_num_threads = threads or 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return so


class ExposedRunner(Runner):
    def __init__(self, qm: onnx.ModelProto, exposed: dict[str, str], provider: str, level: str, threads: int | None,
                 outputs: list[str]):
        import onnxruntime as ort
        from onnx import helper

        m = onnx.ModelProto()
        m.CopyFrom(qm)
        from edgec.core.debug.layers import tensor_types

        have = {o.name for o in m.graph.output} | {i.name for i in m.graph.input}
        types = tensor_types(qm)
        for runtime_name in dict.fromkeys(exposed.values()):
            if runtime_name not in have:
                m.graph.output.append(helper.make_tensor_value_info(
                    runtime_name, types.get(runtime_name, onnx.TensorProto.FLOAT), None))
        self.session = ort.InferenceSession(m.SerializeToString(), _session_options(level, threads), providers=[provider],
                                            **ort_session.kwargs())
        self._names = [o.name for o in self.session.get_outputs()]
        self._inputs = {i.name for i in self.session.get_inputs()}
        self.exposed = exposed
        self.model_outputs = outputs
        self.note = ("onnxruntime: exposed tensors added as graph outputs of the Q/DQ model (a quantized tensor is "
                     "read after its DequantizeLinear); extra outputs can block ORT's QLinear fusions.")

    def run(self, feeds):
        vals = dict(zip(self._names, self.session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})))
        out = {t: vals[r] for t, r in self.exposed.items() if r in vals}
        out.update({o: vals[o] for o in self.model_outputs if o in vals})
        return out


def intermediates(artifact_dir: Path, manifest: Mapping, names: list[str], threads: int | None = None) -> Runner:
    opts = manifest.get("options") or {}
    qm = onnx.load(str(Path(artifact_dir) / "model.onnx"))
    exposed = qdq_exposure(qm, names)
    return ExposedRunner(qm, exposed, opts.get("provider", "CPUExecutionProvider"),
                         opts.get("graph_optimization", "all"), threads,
                         [o["name"] for o in manifest.get("outputs") or []] or [o.name for o in qm.graph.output])


def _weight_source(qm_nodes_by_out: dict, init_names: set, name: str) -> str:
    """The initializer behind a weight input: itself, or the input of the DequantizeLinear (or
    Transpose/Reshape ORT inserts) that produces it."""
    seen = 0
    while name not in init_names and name in qm_nodes_by_out and seen < 4:
        n = qm_nodes_by_out[name]
        if not n.input:
            break
        name = n.input[0]
        seen += 1
    return name


def audit(artifact_dir: Path, manifest: Mapping) -> list[dict]:
    """Per weighted node of the artifact's Q/DQ graph, the kernel ORT's optimized graph runs for it."""
    import onnxruntime as ort

    from edgec.core.quantization.graph import WEIGHTED_OPS

    opts = manifest.get("options") or {}
    path = Path(artifact_dir) / "model.onnx"
    qm = onnx.load(str(path), load_external_data=False)
    q_prod = {o: n for n in qm.graph.node for o in n.output}
    q_inits = {i.name for i in qm.graph.initializer}
    layers = [n for n in qm.graph.node if n.op_type in WEIGHTED_OPS]
    with tempfile.TemporaryDirectory(prefix="edgec-ort-audit-") as tmp:
        so = _session_options(opts.get("graph_optimization", "all"), 1)
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(path), so, providers=[opts.get("provider", "CPUExecutionProvider")],
                             **ort_session.kwargs())
        opt = onnx.load(so.optimized_model_filepath, load_external_data=False)
    o_prod = {o: n for n in opt.graph.node for o in n.output}
    o_inits = {i.name for i in opt.graph.initializer}
    o_cons = _consumers(opt)
    q_cons = _consumers(qm)
    # A node of the optimized graph is found by any of: its weight's or bias's initializer (ORT keeps
    # the names; the NCHWc reorder renames the weight but not the bias), or the tensor it finally writes
    # through layout glue (ReorderOutput, Transpose), which is the Q/DQ graph's output of the layer or of
    # the Relu/Clip fused into it.
    keyed: dict[str, onnx.NodeProto] = {}
    for n in opt.graph.node:
        if n.op_type not in INT8_KERNELS and n.op_type not in FLOAT_KERNELS:
            continue
        w_idx = 3 if n.op_type in ("QLinearConv", "QLinearMatMul", "QGemm") else 1
        b_idx = 8 if n.op_type == "QLinearConv" else 2
        for i in (w_idx, b_idx):
            if len(n.input) > i and n.input[i]:
                keyed.setdefault("w:" + _weight_source(o_prod, o_inits, n.input[i]), n)
        for t in _forward(o_cons, n.output[0], ("ReorderOutput", "Transpose")):
            keyed.setdefault("t:" + t, n)
        keyed.setdefault("n:" + re.sub(r"(_token_\d+|_nchwc)$", "", n.name), n)
    rows = []
    for n in layers:
        keys = ["w:" + _weight_source(q_prod, q_inits, n.input[i]) for i in (1, 2) if len(n.input) > i and n.input[i]]
        keys += ["t:" + t for t in _forward(q_cons, n.output[0], ("Relu", "Clip", "QuantizeLinear"))]
        keys.append("n:" + n.name)
        k = next((keyed[x] for x in keys if x in keyed), None)
        weight_dq = n.input[1] in q_prod and q_prod[n.input[1]].op_type == "DequantizeLinear"
        act_dq = n.input[0] in q_prod and q_prod[n.input[0]].op_type == "DequantizeLinear"
        if k is None:
            rows.append({"name": n.name, "op": n.op_type, "precision": "unknown", "kernel": None,
                         "why": "no node of ORT's optimized graph could be matched to it"})
            continue
        if k.op_type in INT8_KERNELS:
            # A float layer between DequantizeLinear and QuantizeLinear is quantized by ORT itself (its
            # WeightBiasQuantization + QDQ fusions), whatever the quantizer meant: say so.
            # edgec's sessions disable it (core/ort_session.py), so this says the runtime ignored that.
            note = None if weight_dq else ("kept FP32 in the Q/DQ model, but ORT quantized its FP32 weights itself "
                                           "because its input and output are Q/DQ (WeightBiasQuantization)")
            rows.append({"name": n.name, "op": n.op_type, "precision": INT8_KERNELS[k.op_type], "kernel": k.op_type,
                         "why": note})
            continue
        kernel = k.op_type + (f" ({k.domain})" if k.domain not in ("", "ai.onnx") else "")
        rows.append({"name": n.name, "op": n.op_type, "precision": "fp32", "kernel": kernel,
                     "why": _why_float(weight_dq, act_dq, n, qm)})
    return rows


def _consumers(m: onnx.ModelProto) -> dict[str, list]:
    out: dict[str, list] = {}
    for n in m.graph.node:
        for x in n.input:
            out.setdefault(x, []).append(n)
    return out


def _forward(cons: dict, t: str, through: tuple) -> list[str]:
    """`t` and the tensors it reaches through single-consumer nodes of the `through` types."""
    out = [t]
    for _ in range(4):
        nxt = cons.get(t, [])
        if len(nxt) != 1 or nxt[0].op_type not in through:
            break
        t = nxt[0].output[0]
        out.append(t)
    return out


def _by_prefix(by_name: dict, name: str):
    return next((v for k, v in by_name.items() if k.startswith(name)), None)


def _why_float(weight_dq: bool, act_dq: bool, node, qm) -> str:
    if not weight_dq:
        return ("FP32 weights: kept in FP32 (--keep-fp32 or the accuracy repair); runs FP32 only in a session with "
                "disabled_optimizers=['WeightBiasQuantization'] when its input and output are Q/DQ "
                "(manifest backend_info.session; edgec's runner sets it)")
    if not act_dq:
        return "float input: ORT runs the dequantized int8 weights in a float kernel"
    consumers = [n for n in qm.graph.node if node.output[0] in n.input]
    if not any(c.op_type == "QuantizeLinear" for c in consumers):
        return "output not quantized: ORT's QLinear fusion needs DQ -> op -> Q, so it runs float on dequantized values"
    return "Q/DQ present but ORT did not fuse it (unsupported attributes or types for its int8 kernel)"
