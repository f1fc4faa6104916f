"""TFLite backend: every lowered op on LiteRT against onnxruntime (float, and int8 against the same Q/DQ
model on onnxruntime), the file read back with the schema's reader, integer I/O, layouts, errors."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("ai_edge_litert.interpreter", reason="LiteRT not installed: pip install 'edgec[tflite]'")

import onnxruntime as ort  # noqa: E402

from conftest import build_tiny_cnn, shared_path  # noqa: E402
from edgec.backends.tflite.backend import TFLiteBackend  # noqa: E402
from edgec.backends.tflite.convert import to_tflite  # noqa: E402
from edgec.backends.tflite.runner import TFLiteRunner  # noqa: E402
from edgec.backends.tflite.writer import audit, read  # noqa: E402
from edgec.core.data import ArrayDataset  # noqa: E402
from edgec.core.quantization import quantize  # noqa: E402

RNG = np.random.default_rng(0)
C, H, W = 8, 8, 8
FLAVOUR = TFLiteBackend.requirements.quant


def _f(name, arr):
    return numpy_helper.from_array(np.asarray(arr, np.float32), name)


def _i(name, arr):
    return numpy_helper.from_array(np.asarray(arr, np.int64), name)


def op_model(nodes, inits=(), out_shape=None, in_shape=(1, 3, H, W), opset=17, stem=True, extra_outputs=()):
    """input -> Conv(3->8, 3x3) 'a' -> nodes -> 'y' (the stem makes the op see an NHWC activation)."""
    rng = np.random.default_rng(1)
    all_nodes, all_inits = [], list(inits)
    if stem:
        all_nodes.append(helper.make_node("Conv", ["x", "stem_w", "stem_b"], ["a"], pads=[1, 1, 1, 1], name="stem"))
        all_inits += [_f("stem_w", rng.normal(0, 0.4, (C, in_shape[1], 3, 3))), _f("stem_b", rng.normal(0, 0.1, C))]
    all_nodes += nodes
    for k, n in enumerate(all_nodes):
        n.name = n.name or f"{n.op_type}_{k}"
    g = helper.make_graph(all_nodes, "op", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)] +
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in extra_outputs],
                          all_inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    m = onnx.shape_inference.infer_shapes(m)
    onnx.checker.check_model(m)
    return m


def W_(*shape, s=0.3):
    return RNG.normal(0, s, shape).astype(np.float32)


def N(op, ins, outs=("y",), **kw):
    return helper.make_node(op, list(ins), list(outs), **kw)


CASES = {
    "conv": lambda: op_model([N("Conv", ["a", "w", "b"], pads=[1, 1, 1, 1])], [_f("w", W_(6, C, 3, 3)), _f("b", W_(6))]),
    "conv_asym_pads_s2": lambda: op_model([N("Conv", ["a", "w"], pads=[0, 0, 1, 1], strides=[2, 2])],
                                          [_f("w", W_(6, C, 3, 3))]),
    "conv_explicit_pads": lambda: op_model([N("Conv", ["a", "w", "b"], pads=[2, 1, 0, 1])],
                                           [_f("w", W_(6, C, 3, 3)), _f("b", W_(6))]),
    "conv_dilated": lambda: op_model([N("Conv", ["a", "w", "b"], pads=[2, 2, 2, 2], dilations=[2, 2])],
                                     [_f("w", W_(6, C, 3, 3)), _f("b", W_(6))]),
    "conv_same_upper": lambda: op_model([N("Conv", ["a", "w", "b"], auto_pad="SAME_UPPER", strides=[2, 2])],
                                        [_f("w", W_(6, C, 3, 3)), _f("b", W_(6))]),
    "conv_1x1_relu": lambda: op_model([N("Conv", ["a", "w", "b"], ["c"]), N("Relu", ["c"])],
                                      [_f("w", W_(6, C, 1, 1)), _f("b", W_(6))]),
    "conv_relu6": lambda: op_model([N("Conv", ["a", "w", "b"], ["c"]), N("Clip", ["c", "lo", "hi"])],
                                   [_f("w", W_(6, C, 1, 1)), _f("b", W_(6)), _f("lo", 0.0), _f("hi", 6.0)]),
    "depthwise": lambda: op_model([N("Conv", ["a", "w", "b"], pads=[1, 1, 1, 1], group=C)],
                                  [_f("w", W_(C, 1, 3, 3)), _f("b", W_(C))]),
    "depthwise_multiplier2": lambda: op_model([N("Conv", ["a", "w", "b"], pads=[1, 1, 1, 1], group=C)],
                                              [_f("w", W_(2 * C, 1, 3, 3)), _f("b", W_(2 * C))]),
    "grouped_conv": lambda: op_model([N("Conv", ["a", "w", "b"], pads=[1, 1, 1, 1], group=2)],
                                     [_f("w", W_(6, C // 2, 3, 3)), _f("b", W_(6))]),
    "conv_transpose_s2": lambda: op_model([N("ConvTranspose", ["a", "w", "b"], strides=[2, 2], pads=[1, 1, 1, 1],
                                             output_padding=[1, 1])], [_f("w", W_(C, 4, 3, 3)), _f("b", W_(4))]),
    "conv_transpose_k2": lambda: op_model([N("ConvTranspose", ["a", "w", "b"], strides=[2, 2])],
                                          [_f("w", W_(C, 4, 2, 2)), _f("b", W_(4))]),
    "gemm": lambda: op_model([N("Flatten", ["a"], ["f"]), N("Gemm", ["f", "w", "b"], transB=1)],
                             [_f("w", W_(10, C * H * W, s=0.05)), _f("b", W_(10))]),
    "gemm_transb0_alpha": lambda: op_model([N("Flatten", ["a"], ["f"]),
                                            N("Gemm", ["f", "w", "b"], alpha=0.5, beta=2.0)],
                                           [_f("w", W_(C * H * W, 10, s=0.05)), _f("b", W_(10))]),
    "gemm_relu": lambda: op_model([N("GlobalAveragePool", ["a"], ["p"]), N("Flatten", ["p"], ["f"]),
                                   N("Gemm", ["f", "w", "b"], ["g"], transB=1), N("Relu", ["g"])],
                                  [_f("w", W_(10, C)), _f("b", W_(10))]),
    "matmul_const_rank3": lambda: op_model([N("Reshape", ["a", "s"], ["r"]), N("MatMul", ["r", "w"])],
                                           [_i("s", [1, C, H * W]), _f("w", W_(H * W, 5))]),
    "matmul_two_activations": lambda: op_model([N("Reshape", ["a", "s"], ["r"]), N("Transpose", ["r"], ["t"], perm=[0, 2, 1]),
                                                N("MatMul", ["r", "t"])], [_i("s", [1, C, H * W])]),
    "add_const": lambda: op_model([N("Add", ["a", "k"])], [_f("k", W_(C, 1, 1))]),
    "add_residual": lambda: op_model([N("Conv", ["a", "w"], ["c"]), N("Add", ["a", "c"])], [_f("w", W_(C, C, 1, 1))]),
    "sub": lambda: op_model([N("Sub", ["a", "k"])], [_f("k", W_(1, C, 1, 1))]),
    "mul": lambda: op_model([N("Conv", ["a", "w"], ["c"]), N("Mul", ["a", "c"])], [_f("w", W_(C, C, 1, 1))]),
    "mul_scalar": lambda: op_model([N("Mul", ["a", "k"])], [_f("k", 0.7)]),
    "div": lambda: op_model([N("Div", ["a", "k"])], [_f("k", np.abs(W_(C, 1, 1)) + 0.5)]),
    "relu": lambda: op_model([N("Relu", ["a"])]),
    "clip_general": lambda: op_model([N("Clip", ["a", "lo", "hi"])], [_f("lo", -0.5), _f("hi", 0.8)]),
    "leaky_relu": lambda: op_model([N("LeakyRelu", ["a"], alpha=0.1)]),
    "prelu": lambda: op_model([N("PRelu", ["a", "s"])], [_f("s", np.abs(W_(C, 1, 1)))]),
    "sigmoid": lambda: op_model([N("Sigmoid", ["a"])]),
    "tanh": lambda: op_model([N("Tanh", ["a"])]),
    "hard_swish": lambda: op_model([N("HardSwish", ["a"])]),
    "hard_sigmoid": lambda: op_model([N("HardSigmoid", ["a"], alpha=0.2, beta=0.5)]),
    "max_pool": lambda: op_model([N("MaxPool", ["a"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])]),
    "max_pool_ceil": lambda: op_model([N("MaxPool", ["a"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)]),
    "max_pool_2x2": lambda: op_model([N("MaxPool", ["a"], kernel_shape=[2, 2], strides=[2, 2])]),
    "average_pool_same": lambda: op_model([N("AveragePool", ["a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]),
    "average_pool_2x2": lambda: op_model([N("AveragePool", ["a"], kernel_shape=[2, 2], strides=[2, 2])]),
    "global_average_pool": lambda: op_model([N("GlobalAveragePool", ["a"])]),
    "global_max_pool": lambda: op_model([N("GlobalMaxPool", ["a"])]),
    "reduce_mean_hw": lambda: op_model([N("ReduceMean", ["a"], axes=[2, 3], keepdims=1)], opset=17),
    "reduce_max_c": lambda: op_model([N("ReduceMax", ["a"], axes=[1], keepdims=0)], opset=17),
    "concat": lambda: op_model([N("Conv", ["a", "w"], ["c"]), N("Concat", ["a", "c"], axis=1)], [_f("w", W_(4, C, 1, 1))]),
    "reshape": lambda: op_model([N("Reshape", ["a", "s"])], [_i("s", [1, C * H, W])]),
    "flatten": lambda: op_model([N("Flatten", ["a"])]),
    "squeeze_unsqueeze": lambda: op_model([N("ReduceMean", ["a"], ["m"], axes=[2], keepdims=1),
                                           N("Squeeze", ["m", "ax"], ["s"]), N("Unsqueeze", ["s", "ax2"])],
                                          [_i("ax", [2]), _i("ax2", [0])]),
    "transpose": lambda: op_model([N("Transpose", ["a"], perm=[0, 3, 1, 2])]),
    "softmax_flat": lambda: op_model([N("Flatten", ["a"], ["f"]), N("Softmax", ["f"], axis=-1)]),
    "softmax_channels": lambda: op_model([N("Softmax", ["a"], axis=1)]),
    "pad_constant": lambda: op_model([N("Pad", ["a", "p"])], [_i("p", [0, 0, 1, 2, 0, 0, 2, 1])]),
    "pad_reflect": lambda: op_model([N("Pad", ["a", "p"], mode="reflect")], [_i("p", [0, 0, 1, 1, 0, 0, 1, 1])]),
    "resize_nearest": lambda: op_model([N("Resize", ["a", "", "sc"], coordinate_transformation_mode="asymmetric",
                                          mode="nearest", nearest_mode="floor")], [_f("sc", [1, 1, 2, 2])]),
    "resize_bilinear": lambda: op_model([N("Resize", ["a", "", "sc"], mode="linear")], [_f("sc", [1, 1, 2, 2])]),
    "resize_bilinear_align": lambda: op_model([N("Resize", ["a", "", "", "sz"], mode="linear",
                                                 coordinate_transformation_mode="align_corners")],
                                              [_i("sz", [1, C, 13, 11])]),
    "slice": lambda: op_model([N("Slice", ["a", "st", "en", "ax", "sp"])],
                              [_i("st", [1, 0, 7]), _i("en", [7, 8, 0]), _i("ax", [1, 2, 3]), _i("sp", [2, 1, -2])]),
    "split": lambda: op_model([N("Split", ["a", "sz"], ["y", "z"], axis=1)], [_i("sz", [3, 5])], extra_outputs=["z"]),
    "batch_norm": lambda: op_model([N("BatchNormalization", ["a", "s", "bb", "mu", "var"])],
                                   [_f("s", W_(C)), _f("bb", W_(C)), _f("mu", W_(C)), _f("var", np.abs(W_(C)) + 0.5)]),
    "nhwc_input_transpose": lambda: op_model([N("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
                                              N("Conv", ["t", "w", "b"], pads=[1, 1, 1, 1])],
                                             [_f("w", W_(6, 3, 3, 3)), _f("b", W_(6))], in_shape=(1, H, W, 3), stem=False),
}

# What the file must contain for each case (the schema reader must find the op we wrote).
EXPECT_OP = {"conv": "CONV_2D", "depthwise": "DEPTHWISE_CONV_2D", "grouped_conv": "SPLIT",
             "conv_transpose_s2": "TRANSPOSE_CONV", "gemm": "FULLY_CONNECTED", "matmul_two_activations": "BATCH_MATMUL",
             "add_const": "ADD", "sub": "SUB", "mul": "MUL", "div": "DIV", "leaky_relu": "LEAKY_RELU",
             "prelu": "PRELU", "sigmoid": "LOGISTIC", "tanh": "TANH", "hard_swish": "HARD_SWISH",
             "max_pool": "MAX_POOL_2D", "average_pool_2x2": "AVERAGE_POOL_2D", "global_average_pool": "MEAN",
             "global_max_pool": "REDUCE_MAX", "concat": "CONCATENATION", "reshape": "RESHAPE", "transpose": "TRANSPOSE",
             "softmax_flat": "SOFTMAX", "pad_constant": "PAD", "pad_reflect": "MIRROR_PAD",
             "resize_nearest": "RESIZE_NEAREST_NEIGHBOR", "resize_bilinear": "RESIZE_BILINEAR",
             "slice": "STRIDED_SLICE", "split": "SPLIT_V", "conv_asym_pads_s2": "CONV_2D"}


def _inputs(m, n=1, seed=0):
    vi = m.graph.input[0]
    shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    return np.random.default_rng(seed).normal(0, 1, (n, *shape[1:])).astype(np.float32)


def _ort(m, x):
    # No graph optimizations: the Q/DQ model then runs as written (DQ -> float op -> Q), the exact
    # semantics TFLite's integer kernels approximate; ORT's fused s8s8 kernels round differently.
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, {"x": x})))


def _tflite(m, tmp_path, precision="fp32", **opts):
    data, info = to_tflite(m, opts, fp16=precision == "fp16")
    p = tmp_path / "model.tflite"
    p.write_bytes(data)
    return TFLiteRunner(p, info["io"], threads=1), data, info


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_float(case, tmp_path):
    m = CASES[case]()
    x = _inputs(m)
    runner, data, info = _tflite(m, tmp_path)
    got, ref = runner.run({"x": x}), _ort(m, x)
    for k in ref:
        assert got[k].shape == ref[k].shape, k
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-4, atol=1e-4 * (1 + np.abs(ref[k]).max()))
    ops = audit(data)["op_types"]
    if case in EXPECT_OP:
        assert EXPECT_OP[case] in ops, ops
    assert "TRANSPOSE" not in ops or case in ("transpose", "matmul_two_activations", "reshape", "flatten", "gemm",
                                               "gemm_transb0_alpha", "matmul_const_rank3", "softmax_flat",
                                               "reduce_max_c", "squeeze_unsqueeze"), ops


def _quantized(m, n=24):
    calib = ArrayDataset({m.graph.input[0].name: _inputs(m, n, seed=3)})
    return quantize(m, "int8", flavour=FLAVOUR, calibration=calib, bias_correction=False, progress=False).model


def _output_scales(qm):
    prod = {o: n for n in qm.graph.node for o in n.output}
    inits = {t.name: numpy_helper.to_array(t) for t in qm.graph.initializer}
    out = {}
    for o in qm.graph.output:
        n = prod[o.name]
        out[o.name] = float(inits[n.input[1]].reshape(-1)[0]) if n.op_type == "DequantizeLinear" else None
    return out


@pytest.mark.parametrize("case", sorted(c for c in CASES if c != "nhwc_input_transpose"))
def test_op_int8(case, tmp_path):
    """The int8 file against the same Q/DQ model on onnxruntime: within a few output steps (TFLite
    requantizes with fixed-point multipliers, ORT in float), and every activation integer."""
    m = CASES[case]()
    qm = _quantized(m)
    x = _inputs(m, 1, seed=5)
    runner, data, info = _tflite(qm, tmp_path)
    got, ref = runner.run({"x": x}), _ort(qm, x)
    scales = _output_scales(qm)
    for k in ref:
        step = scales[k] or 1e-3 * (1 + np.abs(ref[k]).max())
        err = np.abs(got[k] - ref[k])
        # Integer kernels may differ from ORT's float requantization by one step; a few values by two.
        assert err.max() <= 3.01 * step, (k, err.max(), step)
        assert err.mean() <= 0.5 * step, (k, err.mean(), step)
    acts = audit(data)["activation_dtypes"]
    assert acts.get("int8", 0) > 0
    islands = info["float_islands"]
    if case not in ("div", "hard_sigmoid", "clip_general", "batch_norm"):
        assert not islands, islands
        assert acts.get("float32", 0) <= 1 + len(qm.graph.output), acts  # the float input and outputs only


def test_file_is_read_by_schema_reader(tmp_path):
    m = build_tiny_cnn()
    runner, data, info = _tflite(m, tmp_path)
    model = read(data)
    assert data[4:8] == b"TFL3"
    assert model.buffers[0].data is None  # the empty sentinel
    sg = model.subgraphs[0]
    codes = {c.builtinCode for c in model.operatorCodes}
    from ai_edge_litert.schema_py_generated import BuiltinOperator as B
    assert {B.CONV_2D, B.DEPTHWISE_CONV_2D, B.FULLY_CONNECTED} <= codes
    assert all(c.deprecatedBuiltinCode == min(c.builtinCode, 127) for c in model.operatorCodes)
    conv = next(o for o in sg.operators if model.operatorCodes[o.opcodeIndex].builtinCode == B.CONV_2D)
    filt = sg.tensors[conv.inputs[1]]
    assert list(filt.shape)[3] == 3  # OHWI: input channels last
    dw = next(o for o in sg.operators if model.operatorCodes[o.opcodeIndex].builtinCode == B.DEPTHWISE_CONV_2D)
    assert list(sg.tensors[dw.inputs[1]].shape)[0] == 1  # 1HWO


def test_rebuild_is_byte_identical():
    m = build_tiny_cnn()
    assert to_tflite(m, {})[0] == to_tflite(m, {})[0]
    qm = _quantized(m)
    assert to_tflite(qm, {})[0] == to_tflite(qm, {})[0]


@pytest.mark.parametrize("io", ["int8", "uint8"])
def test_integer_io(io, tmp_path):
    import edgec

    m = build_tiny_cnn()
    p = tmp_path / "m.onnx"
    onnx.save(m, p)
    calib = tmp_path / "c.npz"
    np.savez(calib, input=np.random.default_rng(0).normal(0, 1, (32, 3, 16, 16)).astype(np.float32))
    art = edgec.compile(p, "tflite", "int8", calibration=calib, output=tmp_path / "out", options={"io": io})
    io_info = json.loads((tmp_path / "out" / "tflite_io.json").read_text())
    for e in io_info["inputs"] + io_info["outputs"]:
        assert e["dtype"] == io and "scale" in e and "zero_point" in e
    assert art.manifest["backend_info"]["file"]["activation_dtypes"].get("float32", 0) == 0
    assert art.manifest["validation"]["cosine"] > 0.99
    # Raw integer feeds go straight in.
    r = edgec.load(tmp_path / "out")
    e = io_info["inputs"][0]
    xq = np.clip(np.round(np.zeros((1, 3, 16, 16)) / e["scale"]) + e["zero_point"], 0 if io == "uint8" else -128,
                 255 if io == "uint8" else 127).astype(io)
    assert np.isfinite(r.run({"input": xq})["logits"]).all()


def test_core_integer_io_keeps_scales():
    qm = quantize(build_tiny_cnn(), "int8", flavour=__import__("dataclasses").replace(FLAVOUR, quantize_io=True),
                  calibration=ArrayDataset({"input": np.random.default_rng(0).normal(0, 1, (8, 3, 16, 16)).astype(np.float32)}),
                  progress=False, bias_correction=False).model
    assert qm.graph.input[0].type.tensor_type.elem_type == TensorProto.INT8
    assert qm.graph.output[0].type.tensor_type.elem_type == TensorProto.INT8
    meta = json.loads(next(p.value for p in qm.metadata_props if p.key == "edgec.io_quantization"))
    assert set(meta) == {"input", "logits"}
    onnx.checker.check_model(qm)


@pytest.mark.parametrize("precision,opts", [("fp32", {"io_layout": "nchw"}), ("fp32", {"delegate": "none"}),
                                            ("fp16", {}), ("int8", {"int8": "dynamic"})])
def test_compile_variants(precision, opts, tmp_path):
    import edgec

    m = build_tiny_cnn()
    p = tmp_path / "m.onnx"
    onnx.save(m, p)
    # int8=dynamic quantizes without data; the compile flow still takes --calib for int8 (and validates on it).
    calib = None
    if precision == "int8":
        calib = tmp_path / "c.npz"
        np.savez(calib, input=np.random.default_rng(0).normal(0, 1, (8, 3, 16, 16)).astype(np.float32))
    art = edgec.compile(p, "tflite", precision, output=tmp_path / "out", options=opts, calibration=calib)
    man = art.manifest
    bi = man["backend_info"]
    assert man["validation"]["passed"]
    assert bi["layers"]["litert"] and "per_op_type" in bi["layers"]
    if opts.get("io_layout") == "nchw":
        assert bi["io"]["inputs"][0]["shape"] == [1, 3, 16, 16]
        assert "TRANSPOSE" in bi["file"]["op_types"]
    if opts.get("delegate") == "none":
        assert bi["layers"]["xnnpack_partitions"] == 0
    elif precision != "int8":
        assert bi["layers"]["ops_delegated"] == bi["layers"]["ops"], bi["layers"]
    else:
        per = bi["layers"]["per_op_type"]  # XNNPACK takes hybrid CONV_2D and FULLY_CONNECTED
        assert per["CONV_2D"]["xnnpack"] == 1 and per["FULLY_CONNECTED"]["xnnpack"] == 1, per
    if precision == "fp16":
        assert bi["file"]["tensor_dtypes"].get("float16", 0) >= 3 and "DEQUANTIZE" in bi["file"]["op_types"]
        assert man["validation"]["cosine"] > 0.999
    if precision == "int8":  # dynamic range: int8 weights, float activations, depthwise weights float
        assert bi["file"]["tensor_dtypes"].get("int8", 0) == 2  # the conv and the FC
        assert bi["file"]["activation_dtypes"].get("int8", 0) == 0
        assert bi["layers"]["ops_delegated"] == bi["layers"]["ops"], bi["layers"]
        assert len(man["quantization"]["kept_fp32"]) == 1
    h1 = hashlib.sha256((tmp_path / "out" / "model.tflite").read_bytes()).hexdigest()
    assert man["files"]["model.tflite"]["sha256"] == h1


def _cli_fails(run_cli, tmp_path, m, *extra):
    p = tmp_path / "bad.onnx"
    onnx.save(m, p)
    out = tmp_path / "out"
    code, _, err = run_cli("compile", str(p), "--backend", "tflite", "-o", str(out), *extra)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not any(x.name.startswith(".out") for x in tmp_path.iterdir())
    return err


def test_unsupported_op_is_one_line(run_cli, tmp_path):
    m = op_model([N("LRN", ["a"], size=3)])
    err = _cli_fails(run_cli, tmp_path, m)
    assert "LRN" in err and "LRN_1" in err


def test_unsupported_attribute_is_one_line(run_cli, tmp_path):
    m = op_model([N("Resize", ["a", "", "sc"], mode="cubic")], [_f("sc", [1, 1, 2, 2])])
    err = _cli_fails(run_cli, tmp_path, m)
    assert "Resize" in err and "mode='cubic'" in err


def test_bad_option_is_one_line(run_cli, tmp_path):
    err = _cli_fails(run_cli, tmp_path, build_tiny_cnn(), "-O", "io=int4")
    assert "io" in err and "int8" in err


def test_io_int8_needs_int8(run_cli, tmp_path):
    err = _cli_fails(run_cli, tmp_path, build_tiny_cnn(), "-O", "io=int8")
    assert "--precision int8" in err


# ------------------------------------------------------------------ the shared models (slow)
MODELS = {"efficientnet_lite0": "efficientnet-lite", "squeezenet1_1": "squeezenet-bgr",
          "mobilenetv2_backbone": "imagenet", "fashion_mnist_cnn": "unit"}


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("precision,opts", [("fp32", {}), ("fp16", {}), ("int8", {"int8": "dynamic"})])
def test_shared_model_float_and_dynamic(model, precision, opts, tmp_path):
    import edgec

    path = shared_path("models", f"{model}.onnx")
    art = edgec.compile(path, "tflite", precision, output=tmp_path / "out", options=opts)
    v = art.manifest["validation"]
    assert v["passed"]
    if precision == "fp32":
        assert v["cosine"] >= 0.9999, v


@pytest.mark.slow
@pytest.mark.parametrize("model", ["efficientnet_lite0", "squeezenet1_1", "mobilenetv2_backbone"])
def test_shared_model_full_int8(model, tmp_path):
    import edgec

    path = shared_path("models", f"{model}.onnx")
    calib = shared_path("data", "imagenet_calib500_jpeg.npz")
    val = shared_path("data", "imagenet_eval500_jpeg.npz")
    # The MobileNetV2 backbone's 1280 features lose more to every-tensor int8: the core's Q/DQ model itself
    # reaches cosine 0.989 on onnxruntime (30 eval images), the .tflite 0.989 (0.994 against that Q/DQ model).
    min_cosine = 0.98 if model == "mobilenetv2_backbone" else None
    art = edgec.compile(path, "tflite", "int8", calibration=calib, validation=val, preprocess=MODELS[model],
                        calib_samples=100, val_samples=100, output=tmp_path / "out", options={"io": "int8"},
                        min_cosine=min_cosine)
    bi = art.manifest["backend_info"]
    assert bi["file"]["activation_dtypes"] == {"int8": bi["file"]["activation_dtypes"]["int8"]}
    assert art.manifest["validation"]["passed"]


def test_dynamic_batch_runs_in_chunks(tmp_path):
    m = build_tiny_cnn()
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    m.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
    runner, data, info = _tflite(m, tmp_path)
    assert info["io"]["inputs"][0]["shape"][0] == 1
    x = np.random.default_rng(2).normal(0, 1, (3, 3, 16, 16)).astype(np.float32)
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(runner.run({"input": x})["logits"], s.run(None, {"input": x})[0], rtol=1e-4, atol=1e-4)


def test_wrong_input_shape_is_input_error(tmp_path):
    from edgec.core.errors import InputError

    runner, _, _ = _tflite(build_tiny_cnn(), tmp_path)
    with pytest.raises(InputError, match="input 'input' has shape"):
        runner.run({"input": np.zeros((1, 3, 15, 16), np.float32)})
