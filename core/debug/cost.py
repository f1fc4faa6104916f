"""What a keep-set costs in integer work: which weighted layers still run int8 once some quantized
activation tensors are float, and which quantized tensors no int8 layer reads or writes any more.

The rule is the one `--float-tensors` builds (core/quantization/float_tensors.py): a weighted layer
that reads or writes a float tensor gets its FP32 weights and runs float on every backend, so a layer
stays int8 only while its input is still quantized and its output (after a folded Relu/Clip) was not
returned to float (an output that was never quantized, a classifier's logits, leaves QGemm int8).
Data-movement ops (MaxPool, Concat, Reshape, ...) are looked through, up to a tensor that is itself
quantized (its own Q/DQ serves whoever is behind it): they cost little either way.

A quantized tensor whose neighbouring weighted layers (through data movement) all run float is
*stranded*: its Q/DQ pair is two elementwise passes and a rounding error that buy no integer kernel.
On SqueezeNet 1.1 the 98 % keep-sets that the bisection found last (22-23 of 36 tensors) left no conv
int8 at all and kept 13-14 such pairs, which is why they timed at or above FP32 (2.0x INT8 vs FP32's
1.47x on onnxruntime). `close` floats them; `int8_macs` says how much integer work is left, before any
compile, and `order_by_cost` puts cheap tensors (own error per int8 MAC they would cost) first.
"""
from __future__ import annotations

from typing import Iterable

import onnx

from edgec.core.quantization.graph import FOLDABLE_ACTIVATIONS, WEIGHTED_OPS, initializers, input_readers

# Ops that only move or pick values: a quantized tensor passes through them at the same scale.
MOVEMENT_OPS = ("MaxPool", "Concat", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Split",
                "Gather", "Pad", "Resize", "Identity", "DepthToSpace", "SpaceToDepth", "AveragePool",
                "GlobalAveragePool", "GlobalMaxPool")


class CostModel:
    """The FP32 graph (as the quantizer saw it) and its quantized activations, for keep-set questions."""

    def __init__(self, fp32: onnx.ModelProto, quantized: Iterable[str]):
        self.q = list(dict.fromkeys(quantized))
        self._qset = set(self.q)
        g = fp32.graph
        inits = initializers(fp32)
        self.producer = {o: n for n in g.node for o in n.output}
        self.consumers = input_readers(g.node)
        self.layers = [n for n in g.node if n.op_type in WEIGHTED_OPS and len(n.input) > 1
                       and n.input[0] not in inits]
        self.macs = _macs(fp32, self.layers)
        # each layer's activation input and the tensors its output passes through a folded activation
        self.l_in = {n.name: n.input[0] for n in self.layers}
        self.l_out = {n.name: self._out_chain(n) for n in self.layers}
        self.base = self.int8_layers(())

    def _out_chain(self, node: onnx.NodeProto) -> list[str]:
        chain = [node.output[0]]
        while len(self.consumers.get(chain[-1], [])) == 1:
            nxt = self.consumers[chain[-1]][0]
            if nxt.op_type not in FOLDABLE_ACTIVATIONS:
                break
            chain.append(nxt.output[0])
        return chain

    def int8_layers(self, floated: Iterable[str]) -> set[str]:
        """Names of the weighted layers that still read and write quantized tensors."""
        live = self._qset - set(floated)
        out = set()
        for n in self.layers:
            chain = self.l_out[n.name]
            qs = [t for t in chain if t in self._qset]
            if self.l_in[n.name] in live and all(t in live for t in qs):
                out.add(n.name)
        return out

    def neighbours(self, t: str) -> set[str]:
        """The weighted layers that read or write `t`, looking through data movement and folded activations."""
        found: set[str] = set()
        seen = {t}
        todo = [t]
        while todo:  # forward: consumers
            x = todo.pop()
            for c in self.consumers.get(x, []):
                if c.op_type in WEIGHTED_OPS and c.input and c.input[0] == x:
                    found.add(c.name)
                elif c.op_type in MOVEMENT_OPS:
                    for o in c.output:  # a quantized output has its own Q/DQ for whoever reads it
                        if o not in seen and o not in self._qset:
                            seen.add(o)
                            todo.append(o)
        todo = [t]
        while todo:  # backward: producers
            x = todo.pop()
            p = self.producer.get(x)
            if p is None:
                continue
            if p.op_type in WEIGHTED_OPS:
                found.add(p.name)
            elif p.op_type in MOVEMENT_OPS or p.op_type in FOLDABLE_ACTIVATIONS:
                for i in p.input:  # nor does a quantized input's producer need this tensor's Q/DQ
                    if i in self.producer and i not in seen and i not in self._qset:
                        seen.add(i)
                        todo.append(i)
        return {n for n in found if n in self.l_in}

    def stranded(self, floated: Iterable[str]) -> list[str]:
        """Quantized tensors left that no int8 layer reads or writes (graph order)."""
        floated = set(floated)
        int8 = self.int8_layers(floated)
        out = []
        for t in self.q:
            if t in floated:
                continue
            nb = self.neighbours(t)
            if nb and not (nb & int8):
                out.append(t)
        return out

    def close(self, keep: Iterable[str]) -> list[str]:
        """`keep` plus every tensor it strands (to a fixed point), in keep's order then graph order."""
        keep = list(dict.fromkeys(keep))
        while True:
            extra = [t for t in self.stranded(keep) if t not in keep]
            if not extra:
                return keep
            keep += extra

    def int8_macs(self, floated: Iterable[str]) -> dict:
        """How much of the plain INT8 model's integer work a keep-set leaves int8."""
        int8 = self.int8_layers(floated)
        base = sum(self.macs.get(n, 0) for n in self.base)
        left = sum(self.macs.get(n, 0) for n in int8)
        return {"int8_layers": len(int8), "int8_layers_base": len(self.base),
                "int8_macs_fraction": round(left / base, 4) if base else None,
                "stranded": len(self.stranded(floated))}

    def order_by_cost(self, ranked: list[str], own_error: dict[str, float]) -> list[str]:
        """`ranked` reordered greedily: next the tensor with the most own error per int8 MAC it would cost
        (given those already chosen; a free tensor first), ties kept in rank order."""
        chosen: list[str] = []
        left = [t for t in ranked]
        total = sum(self.macs.get(n, 0) for n in self.base) or 1
        while left:
            int8 = self.int8_layers(chosen)

            def score(t):
                lost = int8 - self.int8_layers(chosen + [t])
                cost = sum(self.macs.get(n, 0) for n in lost) / total
                return own_error.get(t, 0.0) / max(cost, 1e-6)

            best = max(left, key=lambda t: (score(t), -left.index(t)))
            chosen.append(best)
            left.remove(best)
        return chosen


def _macs(model: onnx.ModelProto, layers: list[onnx.NodeProto]) -> dict[str, int]:
    """Multiply-accumulates per weighted layer from inferred shapes; the weight's size when a shape is unknown."""
    import numpy as np

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - a model shape inference cannot handle still gets weight-size costs
        inferred = model
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        shapes[vi.name] = dims
    inits = initializers(model)
    out = {}
    for n in layers:
        w = inits.get(n.input[1])
        wsize = int(np.prod(w.dims)) if w is not None else 1
        o = shapes.get(n.output[0])
        if n.op_type in ("Conv", "ConvTranspose") and w is not None and o and all(o):
            # every output element of a Conv takes Cin/group * kH * kW MACs = weight size / Cout
            out[n.name] = int(np.prod(o)) * wsize // max(int(w.dims[0]), 1)
        elif n.op_type in ("Gemm", "MatMul") and o and all(o) and w is not None:
            k = int(w.dims[0] if n.op_type == "MatMul" else np.prod(w.dims) // max(o[-1], 1))
            out[n.name] = int(np.prod(o)) * k
        else:
            out[n.name] = wsize
    return out
