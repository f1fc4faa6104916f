"""ONNX (fp32, fp16-to-be, or the core's Q/DQ) -> .tflite bytes plus what the manifest records."""
from __future__ import annotations

import onnx

from edgec.core.errors import InputError

from . import ops  # noqa: F401  (fills lower.HANDLERS)
from .lower import LowerOptions, Lowering
from .quant import fold
from .writer import audit


def static_model(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    """Symbolic input dims fixed (the leading one to `batch`) and shapes inferred through the graph:
    TFLite kernels are planned for static shapes, and every lowering decision reads them."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    init = {t.name for t in m.graph.initializer}
    for vi in m.graph.input:
        if vi.name in init:
            continue
        for k, d in enumerate(vi.type.tensor_type.shape.dim):
            if not d.HasField("dim_value"):
                if k != 0:
                    raise InputError(f"tflite: input '{vi.name}' has a symbolic dim {k} ({d.dim_param or '?'}); "
                                     "only the batch dim may be dynamic (give the model static shapes)")
                d.Clear()
                d.dim_value = batch
    del m.graph.value_info[:]
    return onnx.shape_inference.infer_shapes(m, strict_mode=False, data_prop=True)


def to_tflite(model: onnx.ModelProto, opts: dict, fp16: bool = False) -> tuple[bytes, dict]:
    m = static_model(model, int(opts.get("batch", 1)))
    folded = fold(m)
    lo = Lowering(m, LowerOptions(io_layout=opts.get("io_layout", "nhwc"), fp16_weights=fp16,
                                  io_dtype=opts.get("io", "float")), folded)
    data = lo.run()
    info = {"file": audit(data), "io": {k: [e.to_json() for e in v] for k, v in lo.io.items()},
            "float_islands": lo.float_islands, "fixed_output_ranges": folded.fixed,
            "layout": {"file_io": opts.get("io_layout", "nhwc"), "internal": "NHWC"}}
    return data, info


def delegation(runner) -> dict:
    """Which ops XNNPACK took. LiteRT lists the file's nodes and then one DELEGATE node per partition
    XNNPACK claimed, with the partition's boundary tensors as its inputs/outputs; a partition's ops
    are found by walking back from its outputs to its inputs."""
    from .runner import litert_version

    details = runner.ops()
    nodes = [d for d in details if d.get("op_name") != "DELEGATE"]
    delegates = [d for d in details if d.get("op_name") == "DELEGATE"]
    producer = {int(t): d for d in nodes for t in d["outputs"]}
    taken: set[int] = set()
    for dl in delegates:
        boundary = {int(t) for t in dl["inputs"]}
        stack = [int(t) for t in dl["outputs"]]
        while stack:
            t = stack.pop()
            p = producer.get(t)
            if p is None or p["index"] in taken or t in boundary:
                continue
            taken.add(p["index"])
            stack.extend(int(x) for x in p["inputs"] if x >= 0)
    per_type: dict[str, dict[str, int]] = {}
    for d in nodes:
        row = per_type.setdefault(d["op_name"], {"xnnpack": 0, "litert": 0})
        row["xnnpack" if d["index"] in taken else "litert"] += 1
    return {"litert": litert_version(), "delegate": runner.delegate, "threads": runner.threads,
            "xnnpack_partitions": len(delegates), "ops_delegated": len(taken), "ops": len(nodes),
            "per_op_type": dict(sorted(per_type.items())),
            "ops_not_delegated": [f"{d['index']}:{d['op_name']}" for d in nodes if d["index"] not in taken]}
