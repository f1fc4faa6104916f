"""QuantFlavour.depthwise_full_range (issue 17): under reduce_range, depthwise conv weights keep the
8-bit grid, because onnxruntime's depthwise u8 x s8 kernel does not saturate where its GEMM kernels do."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgec.core.backend import QuantFlavour
from edgec.core.quantization import quantize
from edgec.core.quantization.qdq import full_range_weights

from test_quantization import data, inits_of, tiny_cnn

REDUCED = QuantFlavour(reduce_range=True)


def _conv_qdq(cin: int, group: int, k: int) -> bytes:
    """x -> Q/DQ (u8, scale 1/255) -> Conv with s8 weights of +-127 / 100 / 120 -> Q/DQ (step 0.5)."""
    cout = cin if group > 1 else 16
    wq = np.random.default_rng(0).choice([127, -127, 120, 100], size=(cout, cin // group, k, k)).astype(np.int8)
    arr = numpy_helper.from_array
    inits = [arr(wq, "wq"), arr(np.full(cout, 0.01, np.float32), "ws"), arr(np.zeros(cout, np.int8), "wz"),
             arr(np.array(1 / 255, np.float32), "xs"), arr(np.array(0, np.uint8), "xz"),
             arr(np.array(0.5, np.float32), "ys"), arr(np.array(0, np.uint8), "yz")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0),
             helper.make_node("Conv", ["xd", "wd"], ["y"], group=group, kernel_shape=[k, k], pads=[k // 2] * 4),
             helper.make_node("QuantizeLinear", ["y", "ys", "yz"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["out"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, 16, 16])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)]).SerializeToString()


def _kernels_minus_emulation(model: bytes, cin: int) -> float:
    x = np.ones((1, cin, 16, 16), np.float32)  # u8 255 everywhere: the worst case for an int16 pair sum
    outs = []
    for level in (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
        so = ort.SessionOptions()
        so.graph_optimization_level = level
        outs.append(ort.InferenceSession(model, so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0])
    return float(np.abs(outs[0] - outs[1]).max())


def test_onnxruntime_depthwise_kernel_is_exact_with_full_range_weights():
    """The premise, checked on this host's onnxruntime: its fused depthwise QLinearConv equals Q/DQ
    emulation with +-127 weights (on an AVX2-only host its pointwise kernel is off by ~28 steps there;
    on a VNNI host nothing saturates, so only the depthwise half is asserted)."""
    assert _kernels_minus_emulation(_conv_qdq(32, 32, 3), 32) == 0
    assert _kernels_minus_emulation(_conv_qdq(32, 32, 5), 32) == 0


def test_depthwise_weights_keep_8_bits_and_gptq_uses_that_grid():
    m = tiny_cnn()
    assert full_range_weights(m, REDUCED) == []
    assert full_range_weights(m, replace(REDUCED, depthwise_full_range=True)) == ["dw_w"]
    assert full_range_weights(m, QuantFlavour(depthwise_full_range=True)) == []  # only under reduce_range
    kw = dict(calibration=data(32), progress=False, cache_dir=False)
    for rounding in (False, True):
        q = inits_of(quantize(m, "int8", flavour=replace(REDUCED, depthwise_full_range=True),
                              weight_rounding=rounding, **kw).model)
        peak = {k[:-len("_w_quantized")]: int(np.abs(v.astype(int)).max()) for k, v in q.items()
                if k.endswith("_w_quantized")}
        assert peak.pop("dw") == 127, rounding  # the largest weight of a channel lands on +-127
        assert set(peak) == {"stem", "pw", "ct", "fc"} and max(peak.values()) == 64, (rounding, peak)
