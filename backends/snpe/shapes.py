"""Static shapes for Qualcomm's compilers (HTP graphs and DLCs are static), shared by `qnn` and `snpe`."""
from __future__ import annotations

from edgec.core.errors import UnsupportedError


def static_batch(model, batch: int = 1):
    """A copy of `model` with a symbolic leading (batch) dim fixed to `batch` and every node named.

    HTP graphs are static: QNN EP leaves a node with a symbolic shape to the CPU. Other symbolic dims
    have no safe value, so they are a one-line error. Names make the manifest's node lists readable."""
    import onnx

    from edgec.core.quantization.graph import ensure_node_names

    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {t.name for t in m.graph.initializer}
    graph_inputs = [i for i in m.graph.input if i.name not in inits]
    for is_input, vi in [(True, i) for i in graph_inputs] + [(False, o) for o in m.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        for k, d in enumerate(dims):
            if d.HasField("dim_value") and d.dim_value > 0:
                continue
            if k == 0:
                d.Clear()
                d.dim_value = batch
            elif is_input:
                raise UnsupportedError(f"Qualcomm HTP/DLC graphs need static shapes, but input '{vi.name}' has symbolic dim {k} "
                                       f"({d.dim_param or '?'}); re-export the model with that dim fixed")
            else:
                d.Clear()  # an output's other dims: left for onnxruntime to infer
    del m.graph.value_info[:]
    return ensure_node_names(m)
