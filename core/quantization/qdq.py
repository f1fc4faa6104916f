"""Q/DQ insertion for the three placement flavours, and weight-only INT8.

Insertion itself is ONNX Runtime's QDQQuantizer (per-channel axes per op incl. depthwise Conv and
ConvTranspose, int32 biases at s_in*s_w, Relu/Clip folded into the following Q range): it is what
ORT's CPU fusions are written against, and it handles opset bumps and 16-bit contrib Q/DQ for QNN.
We feed it our own activation ranges (calibration.py) and the flavour's constraints.
"""
from __future__ import annotations

import logging
from typing import Iterable, Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgec.core.backend import QuantFlavour
from edgec.core.errors import InputError

from .graph import folded_activation, initializers, input_readers, topo_sort, weighted_nodes
from .weights import channel_axis, symmetric_scales

# "weighted" (TensorRT/ORT/OpenVINO style): weighted ops and residual Adds, plus the activations that the
# quantizer folds into the producer's output range (no extra Q/DQ pair, and ORT fuses them).
WEIGHTED_PLACEMENT = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Relu", "Clip")
# Ops exact on integers that reuse their input's scale. In "weighted" they are quantized only when their
# input already is: then leaving them float merely adds a DQ/Q round trip (the Fashion-MNIST CNN ran 13 %
# slower than ORT's own QDQ), while after a float op (SqueezeNet's Concat -> MaxPool) they would add a
# new quantization point (agreement 95.4 -> 95.2, top-1 drop 0.4 -> 1.2).
PASS_THROUGH = ("MaxPool", "GlobalMaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze")
FIXED_RANGES = {"Softmax": (0.0, 1.0), "Sigmoid": (0.0, 1.0), "Tanh": (-1.0, 1.0)}
# Integer-only runtimes (TFLite's softmax/logistic/tanh kernels) demand exact 8-bit output grids:
# scale 1/256 (zero point -128) and 1/128 (zero point 0). These ranges give exactly those.
FIXED_RANGES_8BIT = {"Softmax": (0.0, 255 / 256), "Sigmoid": (0.0, 255 / 256), "Tanh": (-1.0, 127 / 128)}
# QNN HTP's 16-bit Sigmoid/Tanh take only these grids (scale 2^-16 zp 0, 2^-15 zp 32768; onnxruntime's QNN
# recipe forces the same): a uint16 range of exactly 65535 steps.
QNN16_FIXED_RANGES = {"Sigmoid": (0.0, 65535 / 65536), "Tanh": (-1.0, 32767 / 32768)}
# TFLite/QNN integer kernels require the output scale of these to equal the input scale. Not
# GlobalAveragePool (TFLite's MEAN rescales): its output range is far narrower than its input's, and
# forcing the input scale on SqueezeNet's pooled logits cost 13 points of agreement.
SAME_SCALE_OPS = ("MaxPool", "AveragePool", "GlobalMaxPool", "Reshape", "Flatten",
                  "Transpose", "Squeeze", "Unsqueeze", "Resize", "Slice", "Gather", "Pad", "DepthToSpace",
                  "SpaceToDepth", "Split")
# Ops ORT's quantizer registry does not list but TFLite runs as integer kernels: in "every_tensor" they
# get Q/DQ on every float input and output too (ORT's generic QDQOperatorBase), instead of staying float
# between a DQ and a Q (a float island with a DEQUANTIZE/QUANTIZE pair in the .tflite).
EVERY_TENSOR_EXTRA_OPS = ("Sub", "Tanh", "HardSwish", "PRelu", "ReduceMean", "ReduceMax", "GlobalMaxPool",
                          "LeakyRelu", "Relu", "Clip", "Sigmoid", "Softmax", "Pad", "Slice", "Split", "Resize")
_QTYPES = {"int8": "QInt8", "uint8": "QUInt8", "int16": "QInt16", "uint16": "QUInt16"}
PLACEMENTS = ("weighted", "every_tensor", "qnn")


def levels(dtype: str) -> int:
    return 65536 if dtype.endswith("16") else 256


def check_flavour(flavour: QuantFlavour) -> None:
    if flavour.quantize_io and flavour.placement == "weighted":
        from edgec.core.errors import UnsupportedError

        raise UnsupportedError("integer model I/O (QuantFlavour.quantize_io) needs placement every_tensor or qnn "
                               "(in 'weighted' the graph's inputs and outputs are not all quantized)")
    if flavour.placement not in PLACEMENTS:
        raise InputError(f"quantization placement {flavour.placement!r} is unknown; use one of {', '.join(PLACEMENTS)}")
    for what, dt in (("activation", flavour.activation_dtype), ("weight", flavour.weight_dtype)):
        if dt not in _QTYPES:
            raise InputError(f"{what} dtype {dt!r} is not supported; use int8, uint8 or uint16")
    if flavour.placement == "qnn" and flavour.activation_dtype not in ("uint8", "uint16"):
        raise InputError(f"placement 'qnn' needs uint8 or uint16 activations, not {flavour.activation_dtype}")


def constrain_ranges(model: onnx.ModelProto, ranges: Mapping[str, tuple[float, float]],
                     flavour: QuantFlavour) -> dict[str, tuple[float, float]]:
    """Apply the flavour's range rules: fixed output ranges and shared scales for integer-only runtimes."""
    r = {k: (min(lo, 0.0), max(hi, 0.0)) for k, (lo, hi) in ranges.items()}  # zero must be representable
    table = FIXED_RANGES_8BIT if flavour.placement == "every_tensor" and levels(flavour.activation_dtype) == 256 \
        else FIXED_RANGES
    for node in model.graph.node:
        fixed = table.get(node.op_type)
        if fixed and node.output[0] in r:
            r[node.output[0]] = fixed
        if flavour.placement == "qnn" and levels(flavour.activation_dtype) == 65536 and node.output[0] in r:
            r[node.output[0]] = QNN16_FIXED_RANGES.get(node.op_type, r[node.output[0]])
    if flavour.placement == "weighted":
        # Concat stays float here, but its output is re-quantized for the next layer: with the inputs'
        # own scales that is a second rounding of every value. One scale for inputs and output makes the
        # re-quantization exact (SqueezeNet 1.1 logit NMSE on calib500[200:500] 4.4e-4 -> 3.8e-4).
        _share_concat_ranges(model, r)
        return r
    # Shared scales: walk in topological order so chains (Conv -> MaxPool -> Reshape) inherit one range.
    for node in model.graph.node:
        if node.op_type in SAME_SCALE_OPS and node.input and node.input[0] in r:
            for o in node.output:
                if o in r:
                    r[o] = r[node.input[0]]
    _share_concat_ranges(model, r)
    return r


def _share_concat_ranges(model: onnx.ModelProto, r: dict[str, tuple[float, float]]) -> None:
    for node in model.graph.node:
        if node.op_type == "Concat":
            ts = [t for t in list(node.input) + list(node.output) if t in r]
            if ts:
                u = (min(r[t][0] for t in ts), max(r[t][1] for t in ts))
                for t in ts:
                    r[t] = u


def insert_qdq(model: onnx.ModelProto, ranges: Mapping[str, tuple[float, float]], flavour: QuantFlavour,
               exclude: Iterable[str] = (), only: Iterable[str] | None = None,
               keep_activations: bool = False) -> onnx.ModelProto:
    """The Q/DQ model for `ranges`; nodes in `exclude` stay FP32, `only` restricts quantization to those nodes.

    `keep_activations` keeps Relu/Clip as nodes instead of folding them into Q ranges, so every
    weighted node keeps its output tensor name (bias correction compares those tensors with FP32)."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData
    from onnxruntime.quantization.quant_utils import (QuantType, save_and_reload_model_with_shape_infer,
                                                      update_opset_version)

    act_t = getattr(QuantType, _QTYPES[flavour.activation_dtype])
    w_t = getattr(QuantType, _QTYPES[flavour.weight_dtype])
    trange = TensorsData(CalibrationMethod.MinMax, {
        k: TensorData(lowest=np.float32(lo), highest=np.float32(hi)) for k, (lo, hi) in ranges.items()})
    sixteen = flavour.activation_dtype.endswith("16") or flavour.weight_dtype.endswith("16")
    extra = {
        "ActivationSymmetric": flavour.symmetric_activations,
        "WeightSymmetric": flavour.symmetric_weights,
        "UseQDQContribOps": sixteen,
        "QDQKeepRemovableActivations": keep_activations,
        "QuantizeBias": not flavour.float_bias,
    }
    if flavour.placement == "qnn":
        extra["MinimumRealRange"] = 1e-4  # QNN HTP rejects near-zero ranges
        if flavour.per_channel:  # HTP has no per-channel MatMul: those weights per tensor (as ORT's QNN recipe)
            inits = initializers(model)
            extra["TensorQuantOverrides"] = {i: [{"quant_type": w_t, "symmetric": flavour.symmetric_weights}]
                                             for n in model.graph.node if n.op_type == "MatMul"
                                             for i in n.input if i in inits}
    full = full_range_weights(model, flavour)
    if full:  # per-initializer override of reduce_range (ORT's TensorQuantOverrides; axis needed per channel)
        extra["TensorQuantOverrides"] = {**extra.get("TensorQuantOverrides", {}), **{
            w: [{"reduce_range": False, **({"axis": 0} if flavour.per_channel else {})}] for w in full}}
    if flavour.placement == "weighted":
        op_types = list(WEIGHTED_PLACEMENT + PASS_THROUGH)
        exclude = list(exclude) + _float_fed_pass_through(model, set(exclude), only)
    else:
        from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

        op_types = sorted(set(QLinearOpsRegistry) | set(QDQRegistry) |
                          (set(EVERY_TENSOR_EXTRA_OPS) if flavour.placement == "every_tensor" else set()))
        extra["ForceQuantizeNoInputCheck"] = True  # quantize data-movement ops even off a float producer
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)  # ORT's "consider pre-processing" / "opset bumped to 21" warnings are noise here
    try:
        m = save_and_reload_model_with_shape_infer(model)
        m = update_opset_version(m, w_t, act_t)
        from .weight_memo import quantizer_class  # QDQQuantizer, its weight loops remembered

        q = quantizer_class()(m, flavour.per_channel, flavour.reduce_range, w_t, act_t, trange,
                         list(only) if only is not None else [], list(exclude), op_types, extra)
        q.quantize_model()
    finally:
        logger.setLevel(level)
    out = q.model.model
    # Shape-inference value_info from the reload is stale after rewiring; ORT and the checker re-infer.
    del out.graph.value_info[:]
    if flavour.float_outputs and flavour.placement == "weighted":
        _float_graph_outputs(out, model)
    if flavour.float_outputs and flavour.placement == "qnn":
        from .float_tensors import float_tensors

        tail = float_tail(out)
        if tail:
            out, _ = float_tensors(out, model, tail)
    if flavour.placement == "every_tensor" and levels(flavour.activation_dtype) == 256:
        _softmax_grid(out)
    if flavour.quantize_io:
        integer_io(out)
    return topo_sort(out)


# Unweighted ops that may end a graph (pooled logits, reshapes, Softmax): in the qnn flavour with
# float_outputs they stay float between the last weighted layer and the outputs, and HTP runs them in fp16.
FLOAT_TAIL_OPS = ("GlobalAveragePool", "AveragePool", "GlobalMaxPool", "MaxPool", "ReduceMean", "Flatten",
                  "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Softmax")


def float_tail(qm: onnx.ModelProto) -> list[str]:
    """Activation tensors of `qm` from its graph outputs back through FLOAT_TAIL_OPS, up to (not
    including) the last weighted layer's output, whose only readers are that tail or the outputs.

    Why: an 8-bit grid on the answer itself ties top-1 logits. SqueezeNet 1.1 ends Conv -> GlobalAveragePool
    -> Flatten; its pooled logits on one u8 grid (step 0.24) tied the top two classes on 27 of 500 eval
    images (onnxruntime's QNN recipe: 42), and argmax then takes the lower class index."""
    inits = initializers(qm)
    prod = {o: n for n in qm.graph.node for o in n.output}
    readers = input_readers(qm.graph.node)
    outputs = {o.name for o in qm.graph.output}
    tail: list[str] = []

    def source(t):  # the float tensor that a DQ(Q(x)) pair rounds, or None
        dq = prod.get(t)
        q = prod.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear" or q.input[0] in inits:
            return None
        return q, dq

    todo = [o for o in outputs]
    while todo:
        pair = source(todo.pop())
        if pair is None:
            continue
        q, dq = pair
        t = q.input[0]
        node = prod.get(t)
        if node is None or node.op_type not in FLOAT_TAIL_OPS or t in tail:
            continue
        if not all(r.op_type in FLOAT_TAIL_OPS or r.output[0] in outputs for r in readers.get(dq.output[0], [])):
            continue
        if any(r is not dq for r in readers.get(q.output[0], [])) or len(readers.get(t, [])) != 1:
            continue
        tail.append(t)
        todo.append(node.input[0])
    return tail


def full_range_weights(model: onnx.ModelProto, flavour: QuantFlavour) -> list[str]:
    """Weight initializers left on the 8-bit grid under reduce_range (QuantFlavour.depthwise_full_range):
    those of depthwise convs (one input channel per group, more than one group)."""
    if not (flavour.reduce_range and flavour.depthwise_full_range):
        return []
    inits = initializers(model)
    out = []
    for n in model.graph.node:
        if n.op_type != "Conv" or len(n.input) < 2 or n.input[1] not in inits:
            continue
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        dims = list(inits[n.input[1]].dims)
        if group > 1 and len(dims) >= 2 and dims[1] == 1:
            out.append(n.input[1])
    return out


def _softmax_grid(qm: onnx.ModelProto) -> None:
    """ORT's quantizer forces Softmax outputs to [0, 1] (scale 1/255); integer-only kernels want the
    FIXED_RANGES_8BIT grid (scale 1/256), so the Softmax output's Q parameters are set to it, in place."""
    inits = initializers(qm)
    readers = input_readers(qm.graph.node)
    for node in qm.graph.node:
        if node.op_type != "Softmax":
            continue
        for q in readers.get(node.output[0], []):
            if q.op_type != "QuantizeLinear" or len(q.input) < 3 or q.input[1] not in inits or q.input[2] not in inits:
                continue
            zp = numpy_helper.to_array(inits[q.input[2]])
            lo, hi = FIXED_RANGES_8BIT["Softmax"]
            info = np.iinfo(zp.dtype)
            scale = (hi - lo) / (info.max - info.min)
            inits[q.input[1]].CopyFrom(numpy_helper.from_array(np.array(scale, np.float32).reshape(
                numpy_helper.to_array(inits[q.input[1]]).shape), q.input[1]))
            inits[q.input[2]].CopyFrom(numpy_helper.from_array(np.array(info.min, zp.dtype).reshape(zp.shape),
                                                               q.input[2]))


def integer_io(qm: onnx.ModelProto) -> None:
    """Make the graph's float inputs and outputs the integer tensors of their own Q/DQ, in place.

    A float input X read by one QuantizeLinear becomes an integer input X (the Q is dropped, its readers
    read X); a float output Y made by a DequantizeLinear becomes the integer Y (the DQ is dropped).
    The scales stay in the graph (the input's DequantizeLinear, the output's QuantizeLinear), where a
    backend reads them; `edgec.io_quantization` metadata lists them for users. Inputs or outputs
    that are not so quantized (int64 ids, tensors kept float) are left alone."""
    import json

    g = qm.graph
    inits = initializers(qm)
    nodes = list(g.node)
    prod = {o: n for n in nodes for o in n.output}
    drop, table = set(), {}

    def qparams(node):
        scale = float(numpy_helper.to_array(inits[node.input[1]]).reshape(-1)[0])
        zp_t = inits.get(node.input[2]) if len(node.input) > 2 else None
        zp = numpy_helper.to_array(zp_t) if zp_t is not None else np.zeros((), np.uint8)
        return scale, int(zp.reshape(-1)[0]), zp_t.data_type if zp_t is not None else onnx.TensorProto.UINT8

    for vi in g.input:
        readers = [n for n in nodes if vi.name in n.input]
        if vi.name in inits or len(readers) != 1 or readers[0].op_type != "QuantizeLinear":
            continue
        q = readers[0]
        scale, zp, dt = qparams(q)
        for n in nodes:
            _rename_input(n, q.output[0], vi.name)
        vi.type.tensor_type.elem_type = dt
        drop.add(id(q))
        table[vi.name] = {"scale": scale, "zero_point": zp}
    for vo in g.output:
        dq = prod.get(vo.name)
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] in inits:
            continue
        src = dq.input[0]
        if any(src in n.input for n in nodes if n is not dq) or src not in prod:
            continue  # the integer tensor has other readers; keep the float output
        scale, zp, dt = qparams(dq)
        prod[src].output[list(prod[src].output).index(src)] = vo.name
        vo.type.tensor_type.elem_type = dt
        drop.add(id(dq))
        table[vo.name] = {"scale": scale, "zero_point": zp}
    keep = [n for n in nodes if id(n) not in drop]
    del g.node[:]
    g.node.extend(keep)
    if table:
        meta = qm.metadata_props.add()
        meta.key, meta.value = "edgec.io_quantization", json.dumps(table, sort_keys=True)


def _float_graph_outputs(qm: onnx.ModelProto, fp32: onnx.ModelProto) -> None:
    """Give each graph output of `qm` its float value instead of its Q -> DQ round trip, in place.

    The quantizer renames the producer's output to "<output>_QuantizeLinear_Input" and may have
    folded a final Relu/Clip into the Q's range; that activation comes back as a node (copied from
    `fp32`), otherwise the producer writes the output name again. Nodes that read the output keep
    reading the dequantized tensor, so a quantized consumer stays quantized."""
    g = qm.graph
    prod = {o: n for n in g.node for o in n.output}
    inits = initializers(qm)
    drop: list[onnx.NodeProto] = []
    for out in g.output:
        dq = prod.get(out.name)
        q = prod.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear" or q.input[0] in inits:
            continue
        src = q.input[0]
        act = folded_activation(qm, fp32, out.name, src)
        if act is None and src not in prod:
            continue
        # Readers that run quantized (a weighted op, or data movement after one) keep the DQ; float
        # ops (Softmax after the logits) read the float output like the graph does.
        quantized_readers = [n for n in g.node if out.name in n.input and n.op_type in WEIGHTED_PLACEMENT + PASS_THROUGH]
        if quantized_readers or sum(q.output[0] in n.input for n in g.node) > 1:
            dq.output[0] = f"{out.name}/dequantized"
            for n in quantized_readers:
                _rename_input(n, out.name, dq.output[0])
        else:
            drop += [q, dq]
        if act is not None:
            g.node.append(act)
        else:
            producer = prod[src]
            producer.output[list(producer.output).index(src)] = out.name
            for n in g.node:
                _rename_input(n, src, out.name)
    keep = [n for n in g.node if not any(n == d for d in drop)]
    del g.node[:]
    g.node.extend(keep)


def _rename_input(node: onnx.NodeProto, old: str, new: str) -> None:
    for i, x in enumerate(node.input):
        if x == old:
            node.input[i] = new


def _float_fed_pass_through(model: onnx.ModelProto, exclude: set[str], only) -> list[str]:
    """PASS_THROUGH nodes whose input does not come from a quantized op (walked in topological order)."""
    only = set(only) if only is not None else None
    quantized_tensors: set[str] = set()
    skip = []
    for node in model.graph.node:
        chosen = node.name not in exclude and (only is None or node.name in only)
        if node.op_type in PASS_THROUGH:
            if chosen and node.input and node.input[0] in quantized_tensors:
                quantized_tensors.update(node.output)
            else:
                skip.append(node.name)
        elif chosen and node.op_type in WEIGHTED_PLACEMENT:
            quantized_tensors.update(node.output)
    return skip


def weight_only(model: onnx.ModelProto, flavour: QuantFlavour, exclude: Iterable[str] = ()) -> onnx.ModelProto:
    """Dynamic-range INT8: weights stored as int8 + DequantizeLinear, activations stay float.

    4x smaller weights on every runtime; backends with dynamic-range kernels (TFLite, OpenVINO)
    run them integer, others dequantize once at load (ORT constant-folds the DQ).
    """
    exclude = set(exclude)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    if max((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), default=0) < 13:
        raise InputError("int8-dynamic needs opset >= 13 (per-channel DequantizeLinear); "
                         "convert the model with onnx.version_converter first")
    inits = initializers(m)
    done: dict[str, str] = {}
    new_nodes = []
    for node in weighted_nodes(m):
        w_name = node.input[1]
        if node.name in exclude or inits[w_name].data_type != onnx.TensorProto.FLOAT:
            continue
        if w_name in done:
            node.input[1] = done[w_name]
            continue
        w = numpy_helper.to_array(inits[w_name]).astype(np.float32)
        if w.size < 16:
            continue
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        axis = channel_axis(node.op_type, w.ndim, trans_b) if flavour.per_channel and w.ndim > 1 else None
        scale = symmetric_scales(w, axis)
        shape = [1] * w.ndim
        if axis is not None:
            shape[axis] = -1
        q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
        base = w_name + "_wq"
        m.graph.initializer.extend([numpy_helper.from_array(q, base),
                                    numpy_helper.from_array(scale.reshape(-1) if axis is not None else scale.reshape(()),
                                                            base + "_scale"),
                                    numpy_helper.from_array(np.zeros(scale.size if axis is not None else (),
                                                                     np.int8), base + "_zp")])
        attrs = {"axis": axis} if axis is not None else {}
        new_nodes.append(helper.make_node("DequantizeLinear", [base, base + "_scale", base + "_zp"],
                                          [w_name + "_dq"], name=w_name + "_DequantizeLinear", **attrs))
        done[w_name] = w_name + "_dq"
        node.input[1] = w_name + "_dq"
    for n in m.graph.node:  # other consumers of a shared weight read the dequantized copy too
        for j, i in enumerate(n.input):
            if i in done and n.op_type != "DequantizeLinear":
                n.input[j] = done[i]
    keep = [t for t in m.graph.initializer if t.name not in done]
    del m.graph.initializer[:]
    m.graph.initializer.extend(keep)
    nodes = list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(new_nodes + nodes)
    return m
