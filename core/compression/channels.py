"""Channel dependency groups of an ONNX graph, and the surgery that removes channels for real.

Every output channel of a prunable producer (Conv with group 1, Gemm, 2-D MatMul, constant weight
used once) is an *atom*. Atoms flow along axis 1 of the tensors downstream: through per-channel ops
(activations, BatchNormalization, pooling, per-channel constant Mul/Add, depthwise Conv whose
input and output channel are the same atom), Concat on axis 1 (the output lists its inputs' atoms
in order), Flatten/Reshape to [N, C*H*W] (each atom repeated H*W times), and into consumers (Conv,
Gemm, MatMul with a constant weight), where they end. A residual Add (or any two-tensor
elementwise op) ties its inputs' atoms pairwise: a union-find makes one *channel* of all of them,
so pruning it removes the producer row in every block of the stage at once. A channel reaching
anything else (graph output, Transpose, Softmax, Split, a grouped non-depthwise Conv, ...) is
blocked. Channels with the same producers form a *unit* (one Conv's expansion channels; a stage's
residual stream); a unit is what a pruning ratio applies to.

`prune_graph` deletes a set of channels: weight rows of producers, columns of consumers, depthwise
filters (and its group attribute), BatchNorm/PRelu/constant slices, and Reshape targets that spell
the channel count; then re-runs shape inference, so MACs and parameters drop in `edgec inspect`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from edgec.core.quantization.graph import ensure_node_names, input_uses

PER_CHANNEL_UNARY = {
    "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "Elu", "Selu", "Tanh", "Softplus",
    "Softsign", "Gelu", "Mish", "Identity", "Dropout", "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool",
    "GlobalMaxPool", "GlobalLpPool", "Cast", "Erf", "Abs", "Neg", "Exp", "Sqrt", "Floor", "Ceil", "Round",
    "Celu", "ThresholdedRelu",
}
BINARY = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow"}
CHANNEL_PARAMS = {"BatchNormalization": (1, 2, 3, 4), "PRelu": (1,), "InstanceNormalization": (1, 2)}


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


@dataclass
class Unit:
    """Channels that share their producers; pruned by one ratio."""
    name: str                      # the first producer's node name
    producers: list                # node names
    channels: list                 # union-find roots, one per channel, in the first producer's order
    consumers: list                # node names of the Conv/Gemm/MatMul that read these channels
    blocked: bool = False

    @property
    def tied(self) -> bool:
        return len(self.producers) > 1

    @property
    def size(self) -> int:
        return len(self.channels)


@dataclass
class ChannelGraph:
    model: onnx.ModelProto              # shape-inferred, named nodes
    atoms: dict                         # tensor -> np.ndarray of atom ids along axis 1 (None: untracked)
    parent: list                        # union-find over atom ids
    blocked: set                        # roots that may not be removed
    producers: dict                     # node name -> np.ndarray of its output atom ids
    consumers: dict                     # node name -> input tensor name (Conv/Gemm/MatMul with constant weight)
    units: list = field(default_factory=list)

    def root(self, a: int) -> int:
        p = self.parent
        while p[a] != a:
            p[a] = p[p[a]]
            a = p[a]
        return a

    def roots(self, tensor: str) -> np.ndarray:
        return np.array([self.root(int(a)) for a in self.atoms[tensor]], dtype=np.int64)

    def keep_mask(self, tensor: str, remove: set) -> np.ndarray:
        return np.array([self.root(int(a)) not in remove for a in self.atoms[tensor]])

    def unit(self, name: str) -> Unit:
        return next(u for u in self.units if u.name == name)


def _consts(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    out = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            out[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return out


def _shapes(model: onnx.ModelProto) -> dict[str, list]:
    inferred = onnx.shape_inference.infer_shapes(model)
    out = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    for t in model.graph.initializer:
        out[t.name] = list(t.dims)
    return out


def _weight_axes(node) -> tuple[int, int] | None:
    """(output-channel axis, input-channel axis) of the node's constant weight."""
    if node.op_type == "Conv":
        return 0, 1
    if node.op_type == "Gemm":
        if _attr(node, "transA", 0):
            return None
        return (0, 1) if _attr(node, "transB", 0) else (1, 0)
    if node.op_type == "MatMul":
        return 1, 0
    return None


def analyse(model: onnx.ModelProto) -> ChannelGraph:
    """The atoms, ties, blocks and units of `model` (see the module docstring)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # the re-fits write into cg.model
    model = ensure_node_names(copy)
    consts = _consts(model)
    shapes = _shapes(model)
    uses = input_uses(model.graph)
    atoms: dict = {}
    parent: list = []
    blocked_atoms: list = []
    producers: dict = {}
    consumers: dict = {}

    def new_atoms(k: int) -> np.ndarray:
        start = len(parent)
        parent.extend(range(start, start + k))
        return np.arange(start, start + k)

    def block(t: str) -> None:
        if atoms.get(t) is not None:
            blocked_atoms.extend(int(a) for a in atoms[t])

    def rank(t: str):
        s = shapes.get(t)
        return None if s is None else len(s)

    for node in model.graph.node:
        op = node.op_type
        ins = [i for i in node.input]
        tracked = [i for i in ins if i and atoms.get(i) is not None]
        x = ins[0] if ins else ""
        handled = False
        axes = _weight_axes(node)
        if axes is not None and len(ins) > 1 and ins[1] in consts and consts[ins[1]].dtype == np.float32 \
                and uses.get(ins[1], 0) == 1 and (len(ins) < 3 or not ins[2] or ins[2] in consts):
            w = consts[ins[1]]
            group = _attr(node, "group", 1) if op == "Conv" else 1
            ok_shape = (op == "Conv" and w.ndim == 4) or (op != "Conv" and w.ndim == 2 and rank(x) == 2)
            if ok_shape and group == 1:
                if atoms.get(x) is not None:
                    consumers[node.name] = x
                    tracked = [t for t in tracked if t != x]
                atoms[node.output[0]] = new_atoms(w.shape[axes[0]])
                producers[node.name] = atoms[node.output[0]]
                handled = True
            elif ok_shape and op == "Conv" and atoms.get(x) is not None and w.shape[1] == 1 \
                    and w.shape[0] == group == len(atoms[x]):
                atoms[node.output[0]] = atoms[x]  # depthwise: output channel c is input channel c
                tracked = []
                handled = True
        if not handled and op in PER_CHANNEL_UNARY and atoms.get(x) is not None and len(node.output) >= 1:
            atoms[node.output[0]] = atoms[x]
            tracked = []
            handled = True
        elif not handled and op in CHANNEL_PARAMS and atoms.get(x) is not None:
            params = CHANNEL_PARAMS[op]
            c = len(atoms[x])
            if all(i < len(ins) and ins[i] in consts and consts[ins[i]].size in (1, c) for i in params):
                atoms[node.output[0]] = atoms[x]
                tracked = []
                handled = True
        elif not handled and op in BINARY and len(ins) == 2 and tracked:
            r = rank(node.output[0])
            a, b = ins
            if len(tracked) == 2 and len(atoms[a]) == len(atoms[b]) and rank(a) == rank(b) == r:
                for u, v in zip(atoms[a], atoms[b]):
                    ra, rb = _find(parent, int(u)), _find(parent, int(v))
                    if ra != rb:
                        parent[rb] = ra
                atoms[node.output[0]] = atoms[a]
                tracked = []
                handled = True
            elif len(tracked) == 1:
                t = tracked[0]
                other = b if t == a else a
                if other in consts and r is not None and rank(t) == r and _channel_axis(consts[other], r, len(atoms[t])) \
                        is not False:
                    atoms[node.output[0]] = atoms[t]
                    tracked = []
                    handled = True
        elif not handled and op == "Concat" and tracked and len(tracked) == len([i for i in ins if i]):
            r = rank(node.output[0])
            axis = _attr(node, "axis", 0)
            if r is not None and axis in (1, 1 - r):
                atoms[node.output[0]] = np.concatenate([atoms[i] for i in ins if i])
                tracked = []
                handled = True
        elif not handled and op in ("Flatten", "Reshape") and atoms.get(x) is not None \
                and (op == "Flatten" or ins[1] in consts):
            s_in, s_out = shapes.get(x), shapes.get(node.output[0])
            if s_in and s_out and len(s_out) == 2 and None not in s_in[1:] and s_out[1] == int(np.prod(s_in[1:])) \
                    and (op == "Flatten" and _attr(node, "axis", 1) == 1 or op == "Reshape"):
                atoms[node.output[0]] = np.repeat(atoms[x], int(np.prod(s_in[2:])) if len(s_in) > 2 else 1)
                tracked = []
                handled = True
        for t in tracked:  # anything this node did not understand ends those channels' prunability
            block(t)
    for o in model.graph.output:
        block(o.name)
    cg = ChannelGraph(model, atoms, parent, set(), producers, consumers)
    cg.blocked = {cg.root(a) for a in blocked_atoms}
    cg.units = _units(cg)
    return cg


def _find(parent, a):
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


def _channel_axis(c: np.ndarray, rank: int, channels: int):
    """Axis of constant `c` (broadcast against a rank-`rank` tensor) along axis 1, None when it is
    constant across channels, False when it spans something else we cannot slice."""
    if c.ndim > rank:
        return False
    if c.size == 1:
        return None
    shape = [1] * (rank - c.ndim) + list(c.shape)
    if rank < 2:
        return False
    if shape[1] == channels and all(d == 1 for i, d in enumerate(shape) if i != 1):
        return 1 - (rank - c.ndim)  # the constant's own axis
    if shape[1] == 1:
        return None  # broadcast over channels, varies along another axis: slicing not needed
    return False


def _units(cg: ChannelGraph) -> list[Unit]:
    by_root: dict[int, set] = {}
    order: dict[int, int] = {}
    for name, ats in cg.producers.items():
        for a in ats:
            r = cg.root(int(a))
            by_root.setdefault(r, set()).add(name)
            order.setdefault(r, len(order))
    consumer_roots = {n: set(cg.roots(t).tolist()) for n, t in cg.consumers.items()}
    groups: dict[tuple, list] = {}
    node_pos = {n.name: i for i, n in enumerate(cg.model.graph.node)}
    for r, prods in by_root.items():
        key = tuple(sorted(prods, key=node_pos.get))
        groups.setdefault(key, []).append(r)
    units = []
    for prods, roots in groups.items():
        first = prods[0]
        # channels in the first producer's row order
        pos = {cg.root(int(a)): i for i, a in enumerate(cg.producers[first])}
        roots = sorted(roots, key=lambda r: pos.get(r, 1 << 30))
        rs = set(roots)
        cons = [n for n, t in cg.consumers.items() if rs & consumer_roots[n]]
        units.append(Unit(first, list(prods), roots, sorted(cons, key=node_pos.get),
                          blocked=any(r in cg.blocked for r in roots)))
    return sorted(units, key=lambda u: node_pos[u.name])


def prune_graph(cg: ChannelGraph, remove: set) -> onnx.ModelProto:
    """A copy of cg.model without the channels (union-find roots) in `remove`, shape-inferred."""
    remove = set(remove)
    if remove & cg.blocked:
        raise ValueError("blocked channels cannot be removed")
    model = onnx.ModelProto()
    model.CopyFrom(cg.model)
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    const_nodes = {n.output[0]: n for n in g.node if n.op_type == "Constant"}
    uses = input_uses(g)
    keep_of = {t: np.array([cg.root(int(a)) not in remove for a in ats]) for t, ats in cg.atoms.items() if ats is not None}
    shapes = _shapes(cg.model)

    def get(name):
        if name in inits:
            return numpy_helper.to_array(inits[name])
        return numpy_helper.to_array(const_nodes[name].attribute[0].t)

    def put(node, idx, arr):
        """Write a sliced constant as the node's input idx (a private copy if others use the original)."""
        name = node.input[idx]
        if uses.get(name, 0) > 1:
            name = f"{name}__{node.name}"
            node.input[idx] = name
            uses[name] = 1
            g.initializer.append(numpy_helper.from_array(arr, name))
            inits[name] = g.initializer[-1]
            return
        t = numpy_helper.from_array(arr, name)
        if name in inits:
            inits[name].CopyFrom(t)
        else:
            const_nodes[name].attribute[0].t.CopyFrom(t)

    for node in g.node:
        op = node.op_type
        x = node.input[0] if node.input else ""
        kin = keep_of.get(x)
        if node.name in cg.producers or node.name in cg.consumers:
            axes = _weight_axes(node)
            w = get(node.input[1])
            if node.name in cg.consumers and kin is not None and not kin.all():
                w = np.compress(kin, w, axis=axes[1])
            kout = keep_of.get(node.output[0])
            if node.name in cg.producers and kout is not None and not kout.all():
                w = np.compress(kout, w, axis=axes[0])
                if len(node.input) > 2 and node.input[2]:
                    b = get(node.input[2])
                    if b.size == len(kout):
                        put(node, 2, np.compress(kout, b.reshape(-1)).reshape(-1) if b.ndim <= 1 else
                            np.compress(kout, b, axis=b.ndim - 1))
            put(node, 1, w)
        elif kin is not None and not kin.all() and op == "Conv":  # depthwise
            put(node, 1, np.compress(kin, get(node.input[1]), axis=0))
            if len(node.input) > 2 and node.input[2]:
                put(node, 2, np.compress(kin, get(node.input[2]), axis=0))
            for a in node.attribute:
                if a.name == "group":
                    a.i = int(kin.sum())
        elif kin is not None and not kin.all() and op in CHANNEL_PARAMS:
            for i in CHANNEL_PARAMS[op]:
                c = get(node.input[i])
                if c.size == len(kin) and c.size > 1:
                    put(node, i, np.compress(kin, c.reshape(-1)).reshape((-1,) + (1,) * (c.ndim - 1)
                                                                         if c.ndim > 1 else (-1,)))
        elif op in BINARY and len(node.input) == 2:
            for i, t in enumerate(node.input):
                other = node.input[1 - i]
                k = keep_of.get(other)
                if k is None or k.all() or not (t in inits or t in const_nodes) or keep_of.get(t) is not None:
                    continue
                c = get(t)
                ax = _channel_axis(c, len(shapes[node.output[0]]), len(k))
                if ax is not None and ax is not False:
                    put(node, i, np.compress(k, c, axis=ax))
        elif op == "Reshape" and kin is not None and not kin.all():
            s = get(node.input[1]).copy()
            s[1:] = -1 if len(s) == 2 else s[1:]
            if len(s) == 2:
                s[1] = -1
            put(node, 1, s.astype(np.int64))
    del g.value_info[:]
    return onnx.shape_inference.infer_shapes(model)
