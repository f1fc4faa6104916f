"""Fine-tuning that keeps the entropy-coded size: the integer codes of compressed layers are frozen.

After ECQ or clustering, a compressed layer's weight is w[c, k] = s_c * q[c, k]: q are integers on
the channel's INT8 grid (the payload the entropy coder sees) and s_c = max|w_c| / qmax is its
per-channel scale, fixed by the +-qmax code every channel keeps on its largest weight. Training
anything that leaves q alone leaves the coded size alone, so distillation (distill.finetune, the
FP32 model as teacher) trains only:
  - each compressed layer's per-channel scale, as s_c = s0_c * exp(a_c) (positive, so the +-qmax
    code stays the channel's extreme and the quantizer derives exactly s_c again: same codes);
  - every bias (float side information, counted raw);
  - the weights of layers compression left alone (depthwise convs, the small stem: INT8 rounds them later).
Conv and Gemm train (onnx2torch's Conv/Linear modules); a MatMul's constant weight stays as it is.
This is the cheap half of Deep Compression's trained quantization (its centroids are per-layer
floats; here the levels are integers shared by channels with different scales, so the scales are
what can move). Written back into the same graph, the codes are re-derived from the written
floats and compared with the ones before: any change is an error, not a silent size change.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from edgec.core.errors import InputError

LR_SCALE = 2e-3   # Adam step on log-scales: 0.2 % of a scale per step
LR_BIAS = 2e-4
LR_FREE = 5e-5    # distill.LR: the uncompressed layers' weights
GRID_TOL = 1e-3   # as entropy.GRID_TOL


def grid_codes(w: np.ndarray, qmax: int, per_channel: bool = True) -> np.ndarray | None:
    """Integer codes of `w` ([Cout, ...] in its own layout, output channels first) on its INT8 grid,
    or None when `w` is not on it."""
    rows = w.reshape(w.shape[0], -1).astype(np.float64)
    amax = np.abs(rows).max(1) if per_channel else np.full(rows.shape[0], np.abs(rows).max())
    s = np.where(amax > 0, amax, 1.0) / qmax
    u = rows / s[:, None]
    q = np.round(u)
    if np.max(np.abs(u - q)) > GRID_TOL:
        return None
    return q.astype(np.int64).reshape(w.shape)


def _onnx_codes(model: onnx.ModelProto, names: Sequence[str], axes: dict, qmax: int, per_channel: bool) -> dict:
    inits = {t.name: t for t in model.graph.initializer}
    out = {}
    for n in names:
        a = np.moveaxis(numpy_helper.to_array(inits[n]), axes.get(n, 0), 0)
        out[n] = grid_codes(a, qmax, per_channel)
    return out


def finetune_codes(model: onnx.ModelProto, teacher: onnx.ModelProto, calibration, frozen: Sequence[str], *,
                   qmax: int = 127, per_channel: bool = True, minutes: float = 10.0, epochs: int = 3,
                   lr_scale: float = LR_SCALE, lr_bias: float = LR_BIAS, lr_free: float = LR_FREE,
                   train_free: bool = True, batch: int | None = None, seed: int = 0,
                   progress: Callable[[str], None] | None = None) -> tuple[onnx.ModelProto, dict]:
    """(fine-tuned model, report): distillation with the integer codes of the `frozen` weight
    initializers fixed (module docstring). Raises if a frozen weight is not on its INT8 grid."""
    from .distill import BATCH, finetune
    from .entropy import _axis

    axes = _axis(model)
    frozen = list(dict.fromkeys(frozen))
    before = _onnx_codes(model, frozen, axes, qmax, per_channel)
    off = [n for n, q in before.items() if q is None]
    if off:
        raise InputError(f"fine-tuning with frozen codes: {off[0]} is not on its INT8 grid (qmax {qmax}); "
                         "compress with --ecq or --cluster on the grid the backend quantizes to")
    by_output = {n.output[0]: n for n in model.graph.node}
    info: dict = {}

    def prepare(torch, net):
        from torch.nn.utils import parametrize

        class ScaledCodes(torch.nn.Module):
            """weight = s0 * exp(a) * codes (per output channel); the original tensor is ignored."""

            def __init__(self, codes, s0):
                super().__init__()
                self.register_buffer("codes", codes)
                self.register_buffer("s0", s0)
                self.log_scale = torch.nn.Parameter(torch.zeros_like(s0))

            def forward(self, _w):
                shape = (-1,) + (1,) * (self.codes.dim() - 1)
                return (self.s0 * torch.exp(self.log_scale)).reshape(shape) * self.codes

        scales, biases, free = [], [], []
        seen = set()
        for _, mod in net.named_modules():
            mapping = getattr(mod, "onnx_mapping", None)
            if mapping is None or not isinstance(mod, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d,
                                                       torch.nn.Linear)):
                continue
            node = by_output.get(mapping.outputs[0])
            wname = node.input[1] if node is not None and len(node.input) > 1 else None
            if wname in before:
                w = mod.weight.detach().double()
                rows = w.reshape(w.shape[0], -1)
                amax = rows.abs().amax(1) if per_channel else rows.abs().max().expand(rows.shape[0])
                s0 = torch.where(amax > 0, amax, torch.ones_like(amax)) / qmax
                codes = torch.round(w / s0.reshape((-1,) + (1,) * (w.dim() - 1)))
                parametrize.register_parametrization(mod, "weight", ScaledCodes(codes.float(), s0.float()),
                                                     unsafe=True)
                mod.parametrizations.weight.original.requires_grad_(False)
                scales.append(mod.parametrizations.weight[0].log_scale)
                seen.add(wname)
            elif train_free:
                free.append(mod.weight)
            else:
                mod.weight.requires_grad_(False)
            if mod.bias is not None:
                biases.append(mod.bias)
        # a weight onnx2torch keeps as a constant (MatMul's) does not train: its codes and scales stay
        info["untrained_compressed"] = [n for n in before if n not in seen]
        taken = {id(p) for p in scales + biases + free}
        for p in net.parameters():  # anything else (PRelu slopes, ...) stays as compression left it
            if id(p) not in taken:
                p.requires_grad_(False)
        info.update(frozen_layers=len(scales), scale_parameters=int(sum(p.numel() for p in scales)),
                    bias_parameters=int(sum(p.numel() for p in biases)),
                    free_weights=int(sum(p.numel() for p in free)))
        groups = [{"params": scales, "lr": lr_scale}, {"params": biases, "lr": lr_bias}]
        if free:
            groups.append({"params": free, "lr": lr_free})
        return [g for g in groups if g["params"]], {"mode": "frozen codes", **info,
                                                    "lr_scale": lr_scale, "lr_bias": lr_bias,
                                                    "lr_free": lr_free if free else None}

    out, rep = finetune(model, teacher, calibration, minutes=minutes, epochs=epochs, batch=batch or BATCH, seed=seed,
                        progress=progress, prepare=prepare)
    after = _onnx_codes(out, frozen, axes, qmax, per_channel)
    changed = {n: (int(np.sum(after[n] != before[n])) if after[n] is not None else int(before[n].size)) for n in frozen}
    if any(changed.values()):  # a bug, never a size the report would misstate
        bad = next(n for n, c in changed.items() if c)
        raise RuntimeError(f"fine-tuning changed {changed[bad]} frozen codes of {bad}")
    rep["codes_changed"] = 0
    return out, rep


def refresh_layers(model: onnx.ModelProto, layers) -> None:
    """Each Layer's [Cout, K] matrix re-read from `model` (after fine-tuning moved its scales)."""
    from edgec.core.quantization.rounding import _attr

    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for ly in layers:
        a = inits.get(ly.weight)
        if a is None:
            continue
        op = ly.node.op_type
        if op == "Conv" or (op == "Gemm" and _attr(ly.node, "transB", 0)):
            ly.w = a.reshape(ly.w.shape).astype(np.float64)
        else:
            ly.w = a.reshape(ly.shape).T.reshape(ly.w.shape).astype(np.float64)
