"""Each optimizer pass on small hand-built graphs: where it must fire and where it must not.

Every case goes through `optimize(..., passes=[...])`, so the result is also checked by
onnx.checker and against the original in onnxruntime; a pass that broke the model would show up
as `rolled_back` in the report, which `_run` asserts never happens here.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.core.optimizer import optimize

RNG = np.random.default_rng(0)
F = TensorProto.FLOAT


def _init(name, shape, low=-1.0, high=1.0):
    return numpy_helper.from_array(RNG.uniform(low, high, shape).astype(np.float32), name)


def _model(nodes, inputs, outputs, inits=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    # Outputs written with shape None get their inferred shape (the checker wants one).
    inferred = onnx.shape_inference.infer_shapes(m)
    for out, inf in zip(m.graph.output, inferred.graph.output):
        if not out.type.tensor_type.HasField("shape"):
            out.CopyFrom(inf)
    onnx.checker.check_model(m)
    return m


def _vi(name, shape, dtype=F):
    return helper.make_tensor_value_info(name, dtype, shape)


def _run(model, passes, **kw):
    res = optimize(model, passes=["shape_inference", *passes], check_each_pass=True, **kw)
    for p in res.report["passes"]:
        assert not p["rolled_back"], p
    assert res.report["equivalence"]["ok"], res.report["equivalence"]
    return res


def _ops(model):
    return [n.op_type for n in model.graph.node]


def _changes(res, name):
    return sum(p["changes"] for p in res.report["passes"] if p["name"] == name)


def _ort(model, feeds):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"]).run(None, feeds)


def _conv_bn(extra_consumer=False):
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["y"], name="bn",
                              epsilon=1e-3)]
    outputs = [_vi("y", [1, 4, 8, 8])]
    if extra_consumer:
        nodes.append(helper.make_node("Relu", ["c"], ["r"], name="relu"))
        outputs.append(_vi("r", [1, 4, 8, 8]))
    inits = [_init("W", [4, 3, 3, 3]), _init("B", [4]), _init("g", [4], 0.5, 2),
             _init("b", [4]), _init("m", [4]), _init("v", [4], 0.1, 2)]
    return _model(nodes, [_vi("x", [1, 3, 8, 8])], outputs, inits)


# --- BatchNormalization folding ------------------------------------------------------------

def test_bn_folds_into_conv():
    res = _run(_conv_bn(), ["fold_batchnorm", "dead_code"])
    assert _ops(res.model) == ["Conv"]
    assert res.report["after"]["initializers"] == 2


def test_bn_not_folded_when_conv_output_has_another_consumer():
    res = _run(_conv_bn(extra_consumer=True), ["fold_batchnorm"])
    assert "BatchNormalization" in _ops(res.model)
    assert _changes(res, "fold_batchnorm") == 0


def test_bn_not_folded_when_weight_is_shared_by_two_convs():
    nodes = [helper.make_node("Conv", ["x", "W"], ["c1"], name="c1"),
             helper.make_node("Conv", ["x", "W"], ["c2"], name="c2"),
             helper.make_node("BatchNormalization", ["c1", "g", "b", "m", "v"], ["y1"], name="bn")]
    inits = [_init("W", [4, 3, 1, 1]), _init("g", [4]), _init("b", [4]), _init("m", [4]),
             _init("v", [4], 0.1, 1)]
    m = _model(nodes, [_vi("x", [1, 3, 4, 4])], [_vi("y1", [1, 4, 4, 4]), _vi("c2", [1, 4, 4, 4])],
               inits)
    res = _run(m, ["fold_batchnorm"])
    assert "BatchNormalization" in _ops(res.model)


@pytest.mark.parametrize("group", [1, 2])
def test_bn_folds_into_conv_transpose(group):
    nodes = [helper.make_node("ConvTranspose", ["x", "W"], ["c"], strides=[2, 2], group=group),
             helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["y"])]
    inits = [_init("W", [4, 6 // group, 3, 3]), _init("g", [6]), _init("b", [6]), _init("m", [6]),
             _init("v", [6], 0.1, 1)]
    m = _model(nodes, [_vi("x", [1, 4, 5, 5])], [_vi("y", None)], inits)
    res = _run(m, ["fold_batchnorm"])
    assert _ops(res.model) == ["ConvTranspose"]


@pytest.mark.parametrize("trans_b", [0, 1])
def test_bn_folds_into_gemm(trans_b):
    nodes = [helper.make_node("Gemm", ["x", "W", "C"], ["c"], transB=trans_b, alpha=0.5, beta=2.0),
             helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["y"])]
    inits = [_init("W", [5, 8] if trans_b else [8, 5]), _init("C", [5]), _init("g", [5]),
             _init("b", [5]), _init("m", [5]), _init("v", [5], 0.1, 1)]
    m = _model(nodes, [_vi("x", [3, 8])], [_vi("y", [3, 5])], inits)
    res = _run(m, ["fold_batchnorm"])
    assert _ops(res.model) == ["Gemm"]


# --- Mul/Add folding -----------------------------------------------------------------------

def _conv_then(op, const_shape, const_is_input=False, conv_first=True):
    x_inputs = [_vi("x", [1, 3, 6, 6])]
    operand = "k"
    inits = [_init("W", [4, 3, 3, 3]), _init("B", [4])]
    if const_is_input:
        x_inputs.append(_vi("k", const_shape))
    else:
        inits.append(_init("k", const_shape, 0.5, 2.0))
    ins = ["c", operand] if conv_first else [operand, "c"]
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv"),
             helper.make_node(op, ins, ["y"], name="op")]
    return _model(nodes, x_inputs, [_vi("y", None)], inits)


@pytest.mark.parametrize("op,shape,conv_first", [
    ("Mul", [4, 1, 1], True), ("Mul", [1, 4, 1, 1], False), ("Add", [4, 1, 1], True),
    ("Add", [1], False), ("Sub", [4, 1, 1], True), ("Sub", [4, 1, 1], False),
    ("Div", [1, 4, 1, 1], True), ("Mul", [], True),
])
def test_mul_add_fold_into_conv(op, shape, conv_first):
    res = _run(_conv_then(op, shape, conv_first=conv_first), ["fold_mul_add"])
    assert _ops(res.model) == ["Conv"]


def test_mul_by_non_constant_is_not_folded():
    res = _run(_conv_then("Mul", [1, 4, 1, 1], const_is_input=True), ["fold_mul_add"])
    assert _ops(res.model) == ["Conv", "Mul"]


def test_mul_varying_along_spatial_axis_is_not_folded():
    res = _run(_conv_then("Mul", [4, 4, 4]), ["fold_mul_add"])
    assert _ops(res.model) == ["Conv", "Mul"]


def test_mul_not_folded_when_conv_weight_is_shared():
    nodes = [helper.make_node("Conv", ["x", "W"], ["c1"]),
             helper.make_node("Conv", ["x", "W"], ["c2"]),
             helper.make_node("Mul", ["c1", "k"], ["y1"]),
             helper.make_node("Add", ["y1", "c2"], ["y"])]
    inits = [_init("W", [4, 3, 1, 1]), _init("k", [4, 1, 1])]
    m = _model(nodes, [_vi("x", [1, 3, 4, 4])], [_vi("y", None)], inits)
    res = _run(m, ["fold_mul_add"])
    assert _ops(res.model).count("Mul") == 1


def test_mul_and_add_chain_fold_into_gemm():
    nodes = [helper.make_node("Gemm", ["x", "W"], ["g"], transB=1),
             helper.make_node("Mul", ["g", "s"], ["m"]),
             helper.make_node("Add", ["t", "m"], ["y"])]
    inits = [_init("W", [5, 8]), _init("s", [5]), _init("t", [1, 5])]
    m = _model(nodes, [_vi("x", [2, 8])], [_vi("y", [2, 5])], inits)
    res = _run(m, ["fold_mul_add"])
    assert _ops(res.model) == ["Gemm"]


# --- MatMul + Add -> Gemm --------------------------------------------------------------------

def test_matmul_add_becomes_gemm():
    nodes = [helper.make_node("MatMul", ["x", "W"], ["mm"]),
             helper.make_node("Add", ["mm", "b"], ["y"])]
    m = _model(nodes, [_vi("x", ["N", 8])], [_vi("y", ["N", 5])], [_init("W", [8, 5]), _init("b", [5])])
    res = _run(m, ["matmul_add_to_gemm"])
    assert _ops(res.model) == ["Gemm"]
    assert res.model.graph.output[0].name == "y"


def test_matmul_with_3d_input_stays():
    nodes = [helper.make_node("MatMul", ["x", "W"], ["mm"]),
             helper.make_node("Add", ["mm", "b"], ["y"])]
    m = _model(nodes, [_vi("x", [2, 3, 8])], [_vi("y", None)], [_init("W", [8, 5]), _init("b", [5])])
    res = _run(m, ["matmul_add_to_gemm"])
    assert _ops(res.model) == ["MatMul", "Add"]


# --- Pad folding -----------------------------------------------------------------------------

def _pad_then(op, value=None, amounts=(0, 0, 1, 2, 0, 0, 2, 1), mode="constant", **attrs):
    inits = [numpy_helper.from_array(np.array(amounts, np.int64), "p")]
    pad_in = ["x", "p"]
    if value is not None:
        inits.append(numpy_helper.from_array(np.array(value, np.float32), "v"))
        pad_in.append("v")
    nodes = [helper.make_node("Pad", pad_in, ["xp"], mode=mode)]
    if op == "Conv":
        inits.append(_init("W", [2, 3, 3, 3]))
        nodes.append(helper.make_node("Conv", ["xp", "W"], ["y"], **attrs))
    else:
        nodes.append(helper.make_node(op, ["xp"], ["y"], kernel_shape=[3, 3], **attrs))
    return _model(nodes, [_vi("x", [1, 3, 7, 7])], [_vi("y", None)], inits)


@pytest.mark.parametrize("op,value,attrs", [
    ("Conv", None, {"pads": [1, 1, 1, 1]}), ("Conv", 0.0, {}),
    ("AveragePool", None, {}), ("AveragePool", None, {"count_include_pad": 1, "pads": [0, 0, 0, 1]}),
    ("MaxPool", -np.inf, {}),
])
def test_pad_folds(op, value, attrs):
    res = _run(_pad_then(op, value, **attrs), ["fold_pad"])
    assert _ops(res.model) == [op]


@pytest.mark.parametrize("op,value,mode,pads", [
    ("Conv", 1.0, "constant", (0, 0, 1, 1, 0, 0, 1, 1)),      # non-zero pad value
    ("Conv", None, "reflect", (0, 0, 1, 1, 0, 0, 1, 1)),      # not a constant pad
    ("Conv", None, "constant", (1, 0, 1, 1, 0, 0, 1, 1)),     # pads the batch axis
    ("MaxPool", 0.0, "constant", (0, 0, 1, 1, 0, 0, 1, 1)),   # zero pad is not MaxPool's padding
    ("AveragePool", None, "constant", (0, 0, 3, 0, 0, 0, 0, 0)),  # pool pad would reach the kernel
])
def test_pad_not_folded(op, value, mode, pads):
    res = _run(_pad_then(op, value, amounts=pads, mode=mode), ["fold_pad"])
    assert _ops(res.model) == ["Pad", op]


# --- No-op removal ----------------------------------------------------------------------------

def test_noops_removed():
    shape = [1, 3, 4, 4]
    inits = [numpy_helper.from_array(np.array(shape, np.int64), "shape"),
             numpy_helper.from_array(np.zeros(8, np.int64), "zpads")]
    nodes = [helper.make_node("Identity", ["x"], ["a"]),
             helper.make_node("Dropout", ["a"], ["b"]),
             helper.make_node("Reshape", ["b", "shape"], ["c"]),
             helper.make_node("Transpose", ["c"], ["d"], perm=[0, 2, 3, 1]),
             helper.make_node("Transpose", ["d"], ["e"], perm=[0, 3, 1, 2]),
             helper.make_node("Cast", ["e"], ["f"], to=F),
             helper.make_node("Pad", ["f", "zpads"], ["g"]),
             helper.make_node("Relu", ["g"], ["y"])]
    m = _model(nodes, [_vi("x", shape)], [_vi("y", shape)], inits)
    res = _run(m, ["noop_removal", "dead_code"])
    assert _ops(res.model) == ["Relu"]
    assert res.report["after"]["initializers"] == 0


def test_noop_feeding_graph_output_keeps_output_name():
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Identity", ["r"], ["y"])]
    m = _model(nodes, [_vi("x", [2])], [_vi("y", [2])])
    res = _run(m, ["noop_removal"])
    assert _ops(res.model) == ["Relu"] and res.model.graph.output[0].name == "y"


def test_non_cancelling_transpose_pair_is_merged_not_removed():
    nodes = [helper.make_node("Transpose", ["x"], ["a"], perm=[0, 2, 3, 1]),
             helper.make_node("Transpose", ["a"], ["y"], perm=[0, 2, 3, 1])]
    m = _model(nodes, [_vi("x", [1, 2, 3, 4])], [_vi("y", None)])
    res = _run(m, ["noop_removal"])
    assert _ops(res.model) == ["Transpose"]
    x = RNG.standard_normal((1, 2, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(_ort(res.model, {"x": x})[0], x.transpose(0, 2, 3, 1).transpose(0, 2, 3, 1))


def test_transpose_pair_with_shared_middle_stays():
    nodes = [helper.make_node("Transpose", ["x"], ["a"], perm=[1, 0]),
             helper.make_node("Transpose", ["a"], ["b"], perm=[1, 0]),
             helper.make_node("Neg", ["b"], ["y"]),
             helper.make_node("Relu", ["a"], ["r"])]
    m = _model(nodes, [_vi("x", [2, 3])], [_vi("y", None), _vi("r", None)])
    res = _run(m, ["noop_removal", "dead_code"])
    # The pair cancels for Neg, but the first Transpose still feeds Relu, so it stays.
    assert sorted(_ops(res.model)) == ["Neg", "Relu", "Transpose"]
    assert res.model.graph.node[[n.op_type for n in res.model.graph.node].index("Neg")].input[0] == "x"


def test_cast_to_other_type_and_real_reshape_stay():
    inits = [numpy_helper.from_array(np.array([3, 2], np.int64), "shape")]
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("Cast", ["r"], ["y"], to=TensorProto.DOUBLE),
             helper.make_node("Dropout", ["x", "ratio", "train"], ["d"])]
    inits += [numpy_helper.from_array(np.array(0.5, np.float32), "ratio"),
              numpy_helper.from_array(np.array(True), "train")]
    m = _model(nodes, [_vi("x", [2, 3])], [_vi("y", [3, 2], TensorProto.DOUBLE), _vi("d", [2, 3])],
               inits)
    res = optimize(m, passes=["shape_inference", "noop_removal"], verify=False)
    assert _ops(res.model) == ["Reshape", "Cast", "Dropout"]


# --- Constant folding, dead code, CSE ---------------------------------------------------------

def test_constant_folding_and_shape_folding():
    inits = [_init("a", [4]), _init("b", [4])]
    nodes = [helper.make_node("Add", ["a", "b"], ["ab"]),
             helper.make_node("Sqrt", ["ab2"], ["s"]),
             helper.make_node("Mul", ["ab", "ab"], ["ab2"]),
             helper.make_node("Shape", ["x"], ["shp"]),
             helper.make_node("Reshape", ["x", "shp"], ["xr"]),
             helper.make_node("Add", ["xr", "s"], ["y"])]
    m = _model(sorted(nodes, key=lambda n: ["ab", "ab2", "s", "shp", "xr", "y"].index(n.output[0])),
               [_vi("x", [2, 4])], [_vi("y", None)], inits)
    res = _run(m, ["constant_folding", "noop_removal", "dead_code"])
    assert _ops(res.model) == ["Add"]


def test_constant_folding_skips_random_ops():
    nodes = [helper.make_node("RandomUniform", [], ["r"], shape=[2], seed=1.0),
             helper.make_node("Add", ["x", "r"], ["y"])]
    m = _model(nodes, [_vi("x", [2])], [_vi("y", None)])
    res = optimize(m, passes=["constant_folding"], verify=False)
    assert _ops(res.model) == ["RandomUniform", "Add"]


def test_dead_code_removes_nodes_and_initializers_but_keeps_the_interface():
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["x"], ["unused"]),
             helper.make_node("Add", ["z", "w"], ["unused2"])]
    m = _model(nodes, [_vi("x", [2]), _vi("z", [2])], [_vi("y", None)], [_init("w", [2])])
    res = _run(m, ["dead_code"])
    assert _ops(res.model) == ["Relu"]
    assert [i.name for i in res.model.graph.input] == ["x", "z"]  # z is unread but the user may feed it
    assert not res.model.graph.initializer


def test_cse_merges_equal_constants_and_nodes():
    w = RNG.standard_normal((4, 3, 1, 1)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "W1"), numpy_helper.from_array(w.copy(), "W2")]
    nodes = [helper.make_node("Conv", ["x", "W1"], ["a"]), helper.make_node("Conv", ["x", "W2"], ["b"]),
             helper.make_node("Add", ["a", "b"], ["y"])]
    m = _model(nodes, [_vi("x", [1, 3, 4, 4])], [_vi("y", None)], inits)
    res = _run(m, ["cse"])
    assert _ops(res.model) == ["Conv", "Add"]
    assert len(res.model.graph.initializer) == 1


def test_normalize_turns_constants_and_initializer_inputs_into_initializers():
    const = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.ones(2, np.float32)))
    nodes = [const, helper.make_node("Add", ["x", "c"], ["a"]), helper.make_node("Mul", ["a", "w"], ["y"])]
    m = _model(nodes, [_vi("x", [2]), _vi("w", [2])], [_vi("y", None)], [_init("w", [2])])
    res = _run(m, ["normalize"])
    assert _ops(res.model) == ["Add", "Mul"]
    assert [i.name for i in res.model.graph.input] == ["x"]


# --- Fusion annotations -----------------------------------------------------------------------

def test_fusion_annotations_on_nodes_and_in_report():
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
             helper.make_node("Add", ["c", "x"], ["a"], name="add"),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Gemm", ["f", "G"], ["g"], name="gemm"),
             helper.make_node("Flatten", ["r"], ["f"], name="flat"),
             helper.make_node("Sigmoid", ["g"], ["s"], name="sig"),
             helper.make_node("Mul", ["g", "s"], ["y"], name="silu_mul")]
    order = ["conv", "add", "relu", "flat", "gemm", "sig", "silu_mul"]
    nodes.sort(key=lambda n: order.index(n.name))
    m = _model(nodes, [_vi("x", [1, 3, 2, 2])], [_vi("y", None)],
               [_init("W", [3, 3, 1, 1]), _init("G", [12, 5])])
    res = _run(m, ["fusion_annotation"])
    patterns = {f["pattern"]: f["nodes"] for f in res.report["fusions"]}
    assert patterns == {"Conv+Add+Relu": ["conv", "add", "relu"],
                        "Gemm+SiLU": ["gemm", "sig", "silu_mul"]}
    meta = {n.name: {p.key: p.value for p in n.metadata_props} for n in res.model.graph.node}
    assert meta["relu"]["edgec.fusion.pattern"] == "Conv+Add+Relu"
    assert meta["conv"]["edgec.fusion.role"] == "anchor"
    assert "edgec.fusion.group" not in meta["flat"]


def test_no_fusion_through_a_shared_tensor():
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["y"], name="relu"),
             helper.make_node("Neg", ["c"], ["z"], name="neg")]
    m = _model(nodes, [_vi("x", [1, 3, 2, 2])], [_vi("y", None), _vi("z", None)], [_init("W", [3, 3, 1, 1])])
    res = _run(m, ["fusion_annotation"])
    assert res.report["fusions"] == []


def test_bn_folds_when_only_the_bias_is_shared():
    nodes = [helper.make_node("Conv", ["x", "W1", "B"], ["c1"]),
             helper.make_node("Conv", ["x", "W2", "B"], ["c2"]),
             helper.make_node("BatchNormalization", ["c1", "g", "b", "m", "v"], ["y1"])]
    inits = [_init("W1", [4, 3, 1, 1]), _init("W2", [4, 3, 1, 1]), _init("B", [4]), _init("g", [4]),
             _init("b", [4]), _init("m", [4]), _init("v", [4], 0.1, 1)]
    m = _model(nodes, [_vi("x", [1, 3, 4, 4])], [_vi("y1", [1, 4, 4, 4]), _vi("c2", [1, 4, 4, 4])],
               inits)
    res = _run(m, ["fold_batchnorm", "dead_code"])
    assert _ops(res.model) == ["Conv", "Conv"]
    assert "B" in [i.name for i in res.model.graph.initializer]  # the other Conv still reads it


def test_shape_subgraph_folds_when_shapes_are_static():
    inits = [numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1"),
             numpy_helper.from_array(np.array([0], np.int64), "axes")]
    nodes = [helper.make_node("Shape", ["x"], ["shp"]),
             helper.make_node("Gather", ["shp", "zero"], ["n"]),
             helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"])]
    static = _model(nodes, [_vi("x", [2, 3, 4])], [_vi("y", [2, 12])], inits)
    res = _run(static, ["constant_folding", "dead_code"])
    assert _ops(res.model) == ["Reshape"]
    dynamic = _model(nodes, [_vi("x", ["N", 3, 4])], [_vi("y", ["N", 12])], inits)
    res = _run(dynamic, ["constant_folding", "dead_code"])
    assert _ops(res.model) == ["Shape", "Gather", "Unsqueeze", "Concat", "Reshape"]


def test_hardswish_written_as_mul_is_annotated():
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
             helper.make_node("HardSigmoid", ["c"], ["h"], name="hs", alpha=1 / 6),
             helper.make_node("Mul", ["c", "h"], ["y"], name="mul")]
    m = _model(nodes, [_vi("x", [1, 3, 2, 2])], [_vi("y", None)], [_init("W", [3, 3, 1, 1])])
    res = _run(m, ["fusion_annotation"])
    assert [f["pattern"] for f in res.report["fusions"]] == ["Conv+HardSwish"]


def test_shape_inference_keeps_sequence_types():
    """onnx-ir 1.1's own merge turns untyped sequence values into tensors; ours must not."""
    pos = numpy_helper.from_array(np.array(1, np.int64), "pos")
    nodes = [helper.make_node("SequenceConstruct", ["x", "x"], ["seq"]),
             helper.make_node("SequenceAt", ["seq", "pos"], ["at"]),
             helper.make_node("Identity", ["at"], ["y"])]
    m = _model(nodes, [_vi("x", [2, 3])], [_vi("y", [2, 3])], [pos])
    res = _run(m, ["noop_removal"])
    seq = [v for v in res.model.graph.value_info if v.name == "seq"]
    assert not seq or seq[0].type.HasField("sequence_type")
    assert _ops(res.model) == ["SequenceConstruct", "SequenceAt"]


@pytest.mark.parametrize("group,const_shape", [(1, [3, 1, 1]), (1, [1, 3, 1, 1]), (3, [3, 1, 1]),
                                               (1, [])])
def test_input_scale_mul_folds_into_following_conv(group, const_shape):
    cout = 6
    nodes = [helper.make_node("Mul", ["x", "s"], ["xs"]),
             helper.make_node("Conv", ["xs", "W", "B"], ["y"], pads=[1, 1, 1, 1], group=group)]
    inits = [_init("s", const_shape, 0.5, 2.0), _init("W", [cout, 3 // group, 3, 3]), _init("B", [cout])]
    m = _model(nodes, [_vi("x", [1, 3, 5, 5])], [_vi("y", None)], inits)
    res = _run(m, ["fold_mul_add"])
    assert _ops(res.model) == ["Conv"]


@pytest.mark.parametrize("trans_b", [0, 1])
def test_input_scale_mul_folds_into_following_gemm(trans_b):
    nodes = [helper.make_node("Mul", ["s", "x"], ["xs"]),
             helper.make_node("Gemm", ["xs", "W"], ["y"], transB=trans_b)]
    inits = [_init("s", [8]), _init("W", [5, 8] if trans_b else [8, 5])]
    m = _model(nodes, [_vi("x", [2, 8])], [_vi("y", [2, 5])], inits)
    res = _run(m, ["fold_mul_add"])
    assert _ops(res.model) == ["Gemm"]


def test_input_add_before_padded_conv_and_broadcasting_mul_stay():
    nodes = [helper.make_node("Add", ["x", "s"], ["xs"]),
             helper.make_node("Conv", ["xs", "W"], ["y"], pads=[1, 1, 1, 1])]
    inits = [_init("s", [3, 1, 1]), _init("W", [4, 3, 3, 3])]
    m = _model(nodes, [_vi("x", [1, 3, 5, 5])], [_vi("y", None)], inits)
    assert _ops(_run(m, ["fold_mul_add"]).model) == ["Add", "Conv"]
    nodes = [helper.make_node("Mul", ["x", "s"], ["xs"]), helper.make_node("Conv", ["xs", "W"], ["y"])]
    inits = [_init("s", [2, 3, 1, 1]), _init("W", [4, 3, 1, 1])]  # batch-broadcasting constant
    m = _model(nodes, [_vi("x", [1, 3, 5, 5])], [_vi("y", None)], inits)
    assert _ops(_run(m, ["fold_mul_add"]).model) == ["Mul", "Conv"]


def test_constant_sequences_are_not_folded_into_initializers():
    pos = numpy_helper.from_array(np.array(0, np.int64), "pos")
    nodes = [helper.make_node("SequenceConstruct", ["a", "b"], ["seq"]),
             helper.make_node("SequenceAt", ["seq", "pos"], ["at"]),
             helper.make_node("Add", ["x", "at"], ["y"])]
    m = _model(nodes, [_vi("x", [2])], [_vi("y", [2])], [_init("a", [2]), _init("b", [2]), pos])
    res = _run(m, ["constant_folding", "dead_code"])
    # SequenceConstruct stays (a sequence is not an initializer), so SequenceAt stays too.
    assert _ops(res.model) == ["SequenceConstruct", "SequenceAt", "Add"]
