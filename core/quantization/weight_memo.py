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
