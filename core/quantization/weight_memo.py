"""onnxruntime's weight quantization, remembered within a process (issue 17).

One INT8 compile inserts Q/DQ more than once with the same weights: GPTQ's grid, then the final model
(whose biases differ by the bias correction), then every repair candidate. Most of each QDQQuantizer
run is two Python loops over weights: per-channel scales (`compute_data_quant_params` once per output
channel, ~22,000 calls for EfficientNet-Lite0) and the int8 weights themselves; 2.9 of its 3.5 s.
Both are pure functions of the initializer and the quantizer's settings, so they are kept keyed by
the initializer's bytes (name included) and every setting the computation reads; a hit returns a copy
of what the same call returned before, so the Q/DQ model is byte for byte the one without the memo.
"""
from __future__ import annotations

import copy
import hashlib
import threading

import onnx

_LOCK = threading.Lock()
_PARAMS: dict = {}
_WEIGHTS: dict = {}
MAX_ENTRIES = 4096  # ~ a few models' weights: the whole memo is dropped beyond this
_CLASS = None


def _digest(t: onnx.TensorProto) -> bytes:
    return hashlib.sha256(t.SerializeToString()).digest()


def _remember(store: dict, key, value) -> None:
    with _LOCK:
        if len(store) >= MAX_ENTRIES:
            store.clear()
        store[key] = value


def quantizer_class():
    """QDQQuantizer with both loops remembered (made on first use: onnxruntime is imported lazily)."""
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    import numpy as np
    import onnxruntime.quantization.qdq_quantizer as qq

    original = qq.quantize_onnx_initializer

    def quantize_onnx_initializer(weight, quant_type, zero_point, scale, axis=None, quant_weight_name=None,
                                  block_size=0):
        zp, sc = np.asarray(zero_point), np.asarray(scale)
        key = (_digest(weight), quant_type, zp.dtype.str, zp.shape, zp.tobytes(), sc.dtype.str, sc.shape, sc.tobytes(),
               axis, quant_weight_name, block_size)
        hit = _WEIGHTS.get(key)
        if hit is None:
            hit = _per_channel_weight(weight, quant_type, zp, sc, axis, quant_weight_name, block_size)
            if hit is None:
                hit = original(weight, quant_type, zero_point, scale, axis, quant_weight_name, block_size=block_size)
            _remember(_WEIGHTS, key, hit)
        out = onnx.TensorProto()
        out.CopyFrom(hit)
        return out

    class MemoQDQQuantizer(qq.QDQQuantizer):
        def _calc_initializer_quant_params(self):
            settings = repr((self.weight_qType, self.activation_qType, self.per_channel, self.reduce_range,
                             getattr(self, "min_real_range", None), getattr(self, "block_size", 0),
                             getattr(self, "is_activation_symmetric", None),
                             sorted((k, repr(v)) for k, v in self.extra_options.items())))
            inits = {}
            for t in self.model.initializer():
                inits.setdefault(t.name, t)
            found, todo, keys = {}, {}, {}
            for name, info in self.tensors_to_quantize.items():
                t = inits.get(name)
                if t is None:
                    todo[name] = info  # not an initializer: onnxruntime skips it itself
                    continue
                info_key = _info_key(info)
                if info_key is None:
                    todo[name] = info
                    continue
                keys[name] = (_digest(t), info_key, settings)
                hit = _PARAMS.get(keys[name])
                if hit is not None:
                    found[name] = copy.deepcopy(hit)
                else:
                    todo[name] = info
            for name in [n for n in todo if n in keys]:
                params = _per_channel_params(self, inits[name], todo[name])
                if params is not None:
                    _remember(_PARAMS, keys[name], copy.deepcopy(params))
                    found[name] = params
                    del todo[name]
            if todo:
                every = self.tensors_to_quantize
                self.tensors_to_quantize = todo
                try:
                    got = super()._calc_initializer_quant_params()
                finally:
                    self.tensors_to_quantize = every
                for name, params in got.items():
                    if name in keys:
                        _remember(_PARAMS, keys[name], copy.deepcopy(params))
                    found[name] = params
            return {name: found[name] for name in self.tensors_to_quantize if name in found}

        def _add_qdq_nodes_for_initializer(self, weight_proto):
            # The module-level function the base class calls, swapped for this call only (under a lock:
            # another thread's plain QDQQuantizer must keep onnxruntime's own).
            with _SWAP:
                qq.quantize_onnx_initializer = quantize_onnx_initializer
                try:
                    return super()._add_qdq_nodes_for_initializer(weight_proto)
                finally:
                    qq.quantize_onnx_initializer = original

    _CLASS = MemoQDQQuantizer
    return _CLASS


_SWAP = threading.RLock()


def _info_key(info):
    """What of a QDQTensorQuantInfo the scale computation reads, or None (not remembered) for a shared
    tensor, whose parameters come from another tensor. Not repr(info): the class has no __repr__, so
    its repr holds the object's address and no key ever matched (session 6: the final model's Q/DQ
    insertion recomputed all 22,008 channel scales of EfficientNet-Lite0, 2.6 s)."""
    if getattr(info, "quant_para_provider", None) is not None:
        return None
    return (str(getattr(info, "tensor_type", None)), getattr(info, "axis", None), getattr(info, "data_type", None))


# onnxruntime's per-channel weight loops, vectorised over channels. Only the common case, the one the
# core's flavours produce (a symmetric per-channel 8/16-bit grid of a float32 weight, no overrides, no
# blocks); anything else returns None and takes onnxruntime's own code. The arithmetic is the same,
# element for element, in the same dtypes (float32 min/max, the float64 range, the float32 division
# and rounding), so the arrays are bit for bit onnxruntime's: tests/test_quantization_speed.py checks
# the Q/DQ model byte for byte against plain QDQQuantizer's. Why: ~22,000 calls per EfficientNet-Lite0
# into compute_data_quant_params and quantize_nparray were 2-3 s of a first INT8 compile (issue 17).
_INT_TYPES = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT16, onnx.TensorProto.UINT16)


def _per_channel_params(quantizer, initializer, info):
    import numpy as np
    from onnxruntime.quantization import quant_utils as qu
    from onnxruntime.quantization.qdq_quantizer import QDQQuantTensorType, QuantizationParams

    name = initializer.name
    # Overrides of the grid itself only (qdq.insert_qdq's depthwise_full_range: reduce_range, axis).
    overrides = quantizer.tensor_quant_overrides.get(name, [{}])
    if (len(overrides) != 1 or set(overrides[0]) - {"reduce_range", "axis", "symmetric"}
            or not overrides[0].get("symmetric", True)):
        return None
    axis = overrides[0].get("axis", info.axis)
    reduce_range = overrides[0].get("reduce_range", quantizer.reduce_range)
    if axis is None or getattr(quantizer, "block_size", 0) or initializer.data_type != onnx.TensorProto.FLOAT:
        return None
    is_weight = info.tensor_type is QDQQuantTensorType.WEIGHT
    quant_type = quantizer.weight_qType if is_weight else quantizer.activation_qType
    if quant_type not in _INT_TYPES:
        return None
    data = qu.tensor_proto_to_array(initializer)
    ok, axis = qu.normalize_axis(axis, data.ndim)
    if not ok or data.shape[axis] == 0 or data.size == 0:
        return None
    rows = np.moveaxis(data, axis, 0).reshape(data.shape[axis], -1)
    qmin, qmax = qu.get_qmin_qmax_for_qType(quant_type, reduce_range, symmetric=True)
    rmin = np.minimum(rows.min(axis=1), np.float32(0))
    rmax = np.maximum(rows.max(axis=1), np.float32(0))
    if quantizer.min_real_range is not None:
        rmax = np.maximum(rmax, rmin + np.asarray(quantizer.min_real_range, dtype=np.float32))
    absmax = np.maximum(np.abs(rmin), np.abs(rmax))
    scale = (absmax.astype(np.float64) - (-absmax).astype(np.float64)) / (np.float64(qmax) - np.float64(qmin))
    tiny = scale < np.finfo(np.float32).tiny
    zero = np.array(np.round((qmin + qmax) / np.array(2.0, dtype=np.float64)), dtype=qmin.dtype)
    zero_point = np.where(tiny, np.array(0, dtype=qmin.dtype), zero).astype(qmin.dtype)
    stored = np.where(tiny, np.float32(1.0), scale.astype(np.float32)).astype(np.float32)
    return QuantizationParams(zero_point=zero_point, scale=stored, quant_type=quant_type, axis=axis)


def _per_channel_weight(weight, quant_type, zp, sc, axis, quant_weight_name, block_size):
    import numpy as np
    from onnxruntime.quantization import quant_utils as qu

    if axis is None or block_size or quant_type not in _INT_TYPES or weight.data_type != onnx.TensorProto.FLOAT:
        return None
    data = qu.tensor_proto_to_array(weight)
    if sc.dtype != np.float32 or sc.ndim != 1 or zp.ndim != 1 or not sc.shape[0] == data.shape[axis] == zp.shape[0]:
        return None
    lo, hi = qu.get_qmin_qmax_for_qType(quant_type, reduce_range=False, symmetric=False)
    shape = [1] * data.ndim
    shape[axis] = -1
    q = np.asarray((data / sc.reshape(shape)).round() + zp.reshape(shape))
    np.clip(q, lo, hi, out=q)
    q = q.astype(onnx.helper.tensor_dtype_to_np_dtype(quant_type)).reshape(weight.dims)
    return onnx.numpy_helper.from_array(q, quant_weight_name or f"{weight.name}{qu.TENSOR_NAME_QUANT_SUFFIX}")
