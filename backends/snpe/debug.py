"""QNN's part of the precision audit: which ONNX nodes the QNN EP put on HTP, and in what precision.

The node assignment is onnxruntime's graph-assignment record (`session.record_ep_graph_assignment_info`)
of the session that compiled the context binary (htp.placement, the manifest's backend_info.htp_nodes /
cpu_nodes). A node on HTP runs in the type of its Q/DQ tensors in `model_qdq.onnx` (u8/u16 activations x
s8 weights); a node HTP took with float tensors runs fp16 there (this backend enables HTP fp16 for the
tensors the accuracy repair or --keep-fp32 left float); a node on the CPU EP runs fp32 on the host.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import numpy as np

from edgec.core.backend import Runner
from edgec.core.debug.layers import qdq_exposure

_BITS = {2: "int8", 3: "int8", 4: "int16", 5: "int16"}  # onnx UINT8, INT8, UINT16, INT16


def audit(artifact_dir: Path, manifest: Mapping, qdq_model: str) -> list[dict]:
    import onnx

    from edgec.core.quantization.graph import WEIGHTED_OPS

    info = manifest.get("backend_info") or {}
    htp, cpu = _names(info.get("htp_nodes")), _names(info.get("cpu_nodes"))
    path = Path(artifact_dir) / qdq_model
    if not path.is_file():  # fp16 / fp32 artifacts carry the float model
        path = next(Path(artifact_dir).glob("model_fp*.onnx"), path)
    m = onnx.load(str(path), load_external_data=False)
    prod = {o: n for n in m.graph.node for o in n.output}
    inits = {i.name: i for i in m.graph.initializer}
    vi = {v.name: v.type.tensor_type.elem_type for v in list(m.graph.value_info) + list(m.graph.input)}

    def q_type(t: str):
        n = prod.get(t)
        if n is None or n.op_type != "DequantizeLinear":
            return None
        src = n.input[0]
        if src in inits:
            return _BITS.get(inits[src].data_type)
        q = prod.get(src)
        if q is not None and q.op_type == "QuantizeLinear" and len(q.input) > 2 and q.input[2] in inits:
            return _BITS.get(inits[q.input[2]].data_type)
        return _BITS.get(vi.get(src, 0))

    rows = []
    for n in m.graph.node:
        if n.op_type not in WEIGHTED_OPS:
            continue
        a, w = q_type(n.input[0]), (q_type(n.input[1]) if len(n.input) > 1 else None)
        if n.name in cpu:
            rows.append({"name": n.name, "op": n.op_type, "precision": "fp32", "kernel": "CPU EP",
                         "why": "QNN did not take it: onnxruntime's CPU EP runs it on the host"})
        elif n.name not in htp:
            rows.append({"name": n.name, "op": n.op_type, "precision": "unknown", "kernel": None,
                         "why": "not in the graph-assignment record of the build"})
        elif a and w:
            rows.append({"name": n.name, "op": n.op_type, "precision": a, "kernel": f"HTP a{a[3:]}w{w[3:]}", "why": None})
        elif a and f"{n.name}_weight_dq" in htp:
            # ORT's graph transformers quantize the FP32 weights of a float op between DQ and Q before the
            # QNN EP sees the graph (their DequantizeLinear is in the assignment record): int8 on HTP. edgec's
            # builds disable that (WeightBiasQuantization, core/ort_session.py); artifacts built before did not.
            rows.append({"name": n.name, "op": n.op_type, "precision": a, "kernel": f"HTP a{a[3:]}w8",
                         "why": "kept FP32 in the Q/DQ model, but onnxruntime quantized its FP32 weights itself "
                                "because its input and output are Q/DQ"})
        else:
            rows.append({"name": n.name, "op": n.op_type, "precision": "fp16", "kernel": "HTP fp16",
                         "why": "float input or weights in the Q/DQ model (kept FP32 by --keep-fp32 or the accuracy "
                                "repair): HTP runs it in fp16"})
    return rows


def _names(entries) -> set[str]:
    """ORT's assignment record as ONNX node names: "conv_a_token_3 (Conv)" -> "conv_a" (the layout
    transformer's `_token_N` suffix and the op type removed)."""
    out = set()
    for e in entries or []:
        name = re.sub(r" \([^)]*\)$", "", e)
        out.add(re.sub(r"_token_\d+$", "", name))
    return out


def cut_at(qm, tensor: str):
    """`qm` with `tensor` as its only output and only the nodes and initializers it needs."""
    import onnx

    need, keep = {tensor}, []
    for n in reversed(qm.graph.node):
        if any(o in need for o in n.output):
            keep.append(n)
            need.update(n.input)
    m = onnx.ModelProto()
    m.CopyFrom(qm)
    del m.graph.node[:]
    m.graph.node.extend(reversed(keep))
    del m.graph.output[:]
    m.graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    used = {i for n in keep for i in n.input}
    inits = [i for i in m.graph.initializer if i.name in used]
    del m.graph.initializer[:]
    m.graph.initializer.extend(inits)
    del m.graph.value_info[:]
    return m


class CutGraphRunner(Runner):
    """The artifact's context model for its outputs, plus one HTP session per exposed tensor: the Q/DQ model
    cut at that tensor's DequantizeLinear, compiled for the artifact's target. A context binary returns only
    its graph outputs, and adding outputs to one graph would change QNN's node grouping (a DequantizeLinear
    read by a graph output cannot fold into its consumer); a cut graph computes the same integers up to the
    cut, since every tensor is requantized at its own QuantizeLinear."""

    def __init__(self, artifact_dir: Path, qdq_model: str, context_model: str, cfg, names, what: str):
        import onnx

        from edgec.backends.snpe import htp

        qm = onnx.load(str(Path(artifact_dir) / qdq_model))
        self.main = htp.HtpRunner(Path(artifact_dir) / context_model, cfg, what=what)
        self.inputs, self.outputs, self.where, self.threads = (self.main.inputs, self.main.outputs, self.main.where,
                                                               self.main.threads)
        graph_inputs = {i.name for i in qm.graph.input}
        self.exposed = {t: r for t, r in qdq_exposure(qm, names).items() if r not in graph_inputs}
        self._dtypes = {s.name: s.dtype for s in self.inputs}
        self._cuts = {}
        for r in dict.fromkeys(self.exposed.values()):
            s = htp.open_session(cut_at(qm, r).SerializeToString(), cfg)
            htp.check_on_htp(s, f"{what}, cut at {r}", cfg.cpu_fallback)
            self._cuts[r] = (s, [i.name for i in s.get_inputs()])
        self.note = (f"qnn: each of {len(self._cuts)} tensors read from its own HTP graph on the simulator (the Q/DQ "
                     "model cut at the tensor's DequantizeLinear, same target and options); the dequantized value "
                     "comes out of HTP in fp16 (about 0.1-0.3 LSB)")

    def run(self, feeds):
        out = dict(self.main.run(feeds))
        for t, r in self.exposed.items():
            s, names = self._cuts[r]
            out[t] = s.run(None, {k: np.ascontiguousarray(feeds[k], dtype=self._dtypes.get(k, "float32"))
                                  for k in names})[0]
        return out

    def close(self) -> None:
        self.main.close()
        self._cuts = {}
