"""Small graph-surgery helpers shared by the passes (onnx-ir has the IR, not these idioms)."""
from __future__ import annotations

import itertools

import numpy as np
import onnx_ir as ir


def const_array(value: ir.Value | None) -> np.ndarray | None:
    """The value's constant contents, or None when it is computed or can be overridden at run time."""
    if value is None or value.const_value is None or value.is_graph_input():
        return None
    try:
        return value.const_value.numpy()
    except Exception:  # noqa: BLE001 - e.g. external data that cannot be read
        return None


def only_consumer(value: ir.Value, node: ir.Node) -> bool:
    """True when `node` is the sole reader of `value` and it is not a graph output."""
    if value.is_graph_output():
        return False
    consumers = value.consumers()
    return len(consumers) == 1 and consumers[0] is node


def single_consumer(value: ir.Value) -> ir.Node | None:
    if value.is_graph_output():
        return None
    consumers = value.consumers()
    if len(consumers) != 1:
        return None
    # A node reading the value twice (x*x) counts as "shared": folds into it would be wrong.
    if sum(1 for i in consumers[0].inputs if i is value) != 1:
        return None
    return consumers[0]


def used_only_by(value: ir.Value, node: ir.Node) -> bool:
    """A weight may be rewritten only when no other node (or output) reads it."""
    return not value.is_graph_output() and all(u.node is node for u in value.uses())


_counter = itertools.count()


def unique_name(graph: ir.Graph, hint: str) -> str:
    taken = set(graph.initializers)
    taken.update(v.name for v in graph.inputs)
    for node in graph:
        taken.update(o.name for o in node.outputs)
    name = hint
    while name in taken:
        name = f"{hint}_{next(_counter)}"
    return name


def add_initializer(graph: ir.Graph, hint: str, array: np.ndarray) -> ir.Value:
    name = unique_name(graph, hint)
    # not ascontiguousarray: it turns 0-d arrays into 1-d ones
    tensor = ir.tensor(np.asarray(array, order="C"), name=name)
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(tensor.dtype),
                     const_value=tensor)
    graph.register_initializer(value)
    return value


def bypass(node: ir.Node, src: ir.Value, out: ir.Value) -> bool:
    """Make readers of `out` read `src` instead and drop `node` (its other outputs must be unused).

    When `out` is a graph output, `src` takes over its name, which is impossible when `src` is
    itself a graph input, initializer or another graph output; then the node stays.
    """
    graph = node.graph
    if graph is None:
        return False
    if any(o is not out and (o.uses() or o.is_graph_output()) for o in node.outputs):
        return False
    is_output = out.is_graph_output()
    if is_output and (src.is_graph_input() or src.is_initializer() or src.is_graph_output()):
        return False
    if src.type is None:
        src.type = out.type
    ir.convenience.replace_all_uses_with(out, src, replace_graph_outputs=True)
    if is_output:
        src.name = out.name
    graph.remove(node, safe=True)
    return True


def int_attr(node: ir.Node, name: str, default: int) -> int:
    return node.attributes.get_int(name, default)


def ints_attr(node: ir.Node, name: str, default=None) -> list[int] | None:
    v = node.attributes.get_ints(name, default)
    return list(v) if v is not None else None


def static_shape(value: ir.Value | None) -> tuple[int, ...] | None:
    if value is None or value.shape is None or not value.shape.is_static():
        return None
    return tuple(int(d) for d in value.shape)


def opset(model: ir.Model) -> int:
    return model.opset_imports.get("", model.graph.opset_imports.get("", 1))


def rewrite_to_fixpoint(graph: ir.Graph, try_rewrite) -> int:
    """Apply `try_rewrite(node) -> bool` over the graph until nothing changes; returns the rewrite count.

    One rewrite can expose the next (a removed Identity makes a Transpose pair adjacent), so a single
    sweep is not enough. Nodes removed earlier in a sweep have `graph is None` and are skipped.
    """
    changes = 0
    progress = True
    while progress:
        progress = False
        for node in list(graph):
            if node.graph is not None and try_rewrite(node):
                changes += 1
                progress = True
    return changes

