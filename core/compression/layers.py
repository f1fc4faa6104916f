"""The layers compression works on: each weighted node's constant weight as a [Cout, K] matrix.

One matrix view for every technique: rows are output channels (the per-channel INT8 grid's axis,
quantization/weights.channel_axis), columns are what one output sees, in the im2col order of
quantization/rounding._patches, so the second moment H = E[x x^T] that GPTQ uses for rounding is
the same H that SparseGPT uses for pruning and the data-aware clustering uses for assignment.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from edgec.core.errors import InputError
from edgec.core.quantization.graph import ensure_node_names, initializers, input_uses
from edgec.core.quantization.rounding import _attr, _layers

QMAX = 127  # symmetric INT8 weight grid: ORT and every backend's s8 weights use [-127, 127]


@dataclass
class Layer:
    node: onnx.NodeProto
    weight: str                 # initializer name
    shape: tuple                # the initializer's own shape
    w: np.ndarray               # [Cout, K] float64, updated in place by the techniques
    rows: Callable              # activation -> [G, M, K] (see rounding._layers)
    groups: int
    mask: np.ndarray | None = None  # True where pruned (kept zero by later steps)
    codebook: np.ndarray | None = None  # integer levels on the layer's INT8 grid when clustered
    done: list = field(default_factory=list)  # per-step report entries

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.w.shape[0] == self.groups

    def to_initializer(self) -> np.ndarray:
        """w back in the initializer's layout (float32)."""
        op = self.node.op_type
        if op == "Conv" or (op == "Gemm" and _attr(self.node, "transB", 0)):
            out = self.w.reshape(self.shape)
        else:
            out = self.w.T.reshape(self.shape)
        return out.astype(np.float32)


def grid_scale(w: np.ndarray, per_channel: bool = True, qmax: int = QMAX) -> np.ndarray:
    """The symmetric INT8 scale of each row (max-abs / 127, as ORT's quantizer computes it), or one for all."""
    amax = np.abs(w).max(1) if per_channel else np.full(w.shape[0], np.abs(w).max())
    return np.where(amax > 0, amax, 1.0) / qmax


def find_layers(model: onnx.ModelProto) -> list[Layer]:
    """Every Conv/Gemm/MatMul with a float32 constant weight used by that node alone."""
    model = ensure_node_names(model)
    inits = initializers(model)
    uses = input_uses(model.graph)
    out = []
    for node, w, rows, groups in _layers(model):
        t = inits[node.input[1]]
        if t.data_type != onnx.TensorProto.FLOAT or uses.get(t.name, 0) != 1:
            continue
        out.append(Layer(node, t.name, tuple(t.dims), w.astype(np.float64), rows, groups))
    return out


MIN_PARAMS = 2048  # default selection: smaller layers (a first 3x3 conv, 864 weights in EfficientNet-Lite0) stay


def select(layers: Sequence[Layer], patterns: Sequence[str] | None, *, skip_depthwise: bool = True) -> list[Layer]:
    """Layers matching any pattern (fnmatch on node name, weight name or op type); by default all but two kinds.

    Depthwise convs and layers under MIN_PARAMS weights are skipped unless named: EfficientNet-Lite0's
    depthwise convs hold 1.5 % of its weights with 9-25 per channel, and the Fashion-MNIST CNN's first
    conv (144 weights) took 5 of the 6 points that 50 % pruning + 16 levels cost it (1000 images)."""
    if not patterns:
        return [ly for ly in layers if not (skip_depthwise and ly.depthwise) and ly.w.size >= MIN_PARAMS]
    chosen = [ly for ly in layers
              if any(fnmatch.fnmatchcase(k, p) for p in patterns for k in (ly.name, ly.weight, ly.node.op_type))]
    if not chosen:
        raise InputError(f"--layers {','.join(patterns)} matches no prunable layer (Conv/Gemm/MatMul with a "
                         f"constant weight); names look like {', '.join(ly.name for ly in layers[:3])}")
    return chosen


def moments(model: onnx.ModelProto, layers: Sequence[Layer], data, counts: dict | None = None) -> tuple[dict, dict]:
    """(H[g], mean row mu[g]) per layer from FP32 activations on `data`, in one pass; `counts`, if
    given, receives how many input rows each H sums (ecq.shrink needs it).

    H is rounding.input_moments' sum of x x^T; mu is what bias correction needs: a weight change dW
    shifts the layer's mean output by dW mu, which the bias can take back."""
    from edgec.core.quantization.calibration import session, with_outputs

    names = list(dict.fromkeys(ly.node.input[0] for ly in layers))
    sess = session(with_outputs(model, names))
    hs: dict[str, np.ndarray] = {}
    sums: dict[str, np.ndarray] = {}
    rows_seen: dict[str, int] = {}
    for s in data:
        acts = dict(zip(names, sess.run(names, {i.name: s.feeds[i.name] for i in sess.get_inputs()})))
        for ly in layers:
            r = ly.rows(acts[ly.node.input[0]].astype(np.float32))
            hs[ly.name] = hs.get(ly.name, 0.0) + np.matmul(r.transpose(0, 2, 1), r).astype(np.float64)
            sums[ly.name] = sums.get(ly.name, 0.0) + r.sum(1, dtype=np.float64)
            rows_seen[ly.name] = rows_seen.get(ly.name, 0) + r.shape[1]
    if counts is not None:
        counts.update(rows_seen)
    return hs, {k: v / max(rows_seen[k], 1) for k, v in sums.items()}


def correct_bias(model: onnx.ModelProto, layers: Sequence[Layer], originals: dict, means: dict) -> int:
    """Subtract each changed layer's mean output shift (dW mu) from its bias, in place; returns how many.

    Measured locally from FP32 inputs (as quantization's bias_deltas does): correcting end to end,
    all layers at once, folds upstream shifts into every delta and over-corrects."""
    inits = {t.name: i for i, t in enumerate(model.graph.initializer)}
    by_node = {n.name: n for n in model.graph.node}
    done = 0
    for ly in layers:
        mu = means.get(ly.name)
        if mu is None or ly.node.op_type not in ("Conv", "Gemm") or ly.name not in originals:
            continue
        dw = ly.w - originals[ly.name].w
        if not np.any(dw):
            continue
        per = dw.shape[0] // ly.groups
        shift = np.concatenate([dw[g * per:(g + 1) * per] @ mu[g] for g in range(ly.groups)])
        node = by_node[ly.name]
        if len(node.input) > 2 and node.input[2] in inits:
            t = model.graph.initializer[inits[node.input[2]]]
            b = numpy_helper.to_array(t).astype(np.float64)
            t.CopyFrom(numpy_helper.from_array((b - shift).astype(np.float32), t.name))
        else:
            name = ly.weight + "_bias_correction"
            model.graph.initializer.append(numpy_helper.from_array((-shift).astype(np.float32), name))
            while len(node.input) < 2:
                node.input.append("")
            if len(node.input) == 2:
                node.input.append(name)
            else:
                node.input[2] = name
        done += 1
    return done


def write_back(model: onnx.ModelProto, layers: Sequence[Layer]) -> onnx.ModelProto:
    """A copy of `model` with every layer's weight replaced (same names, shapes, dtype)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    by_name = {ly.weight: ly for ly in layers}
    for i, t in enumerate(out.graph.initializer):
        ly = by_name.get(t.name)
        if ly is not None:
            out.graph.initializer[i].CopyFrom(numpy_helper.from_array(ly.to_initializer(), t.name))
    return out
