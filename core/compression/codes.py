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

from .entropy import GRID_TOL
from .layers import grid_scale

LR_SCALE = 1e-3   # Adam step on log-scales: 0.1 % of a scale per step (3e-3 and 1e-2 diverged on EfficientNet-Lite0)
LR_BIAS = 1e-4
LR_FREE = 2e-5    # the uncompressed layers' weights (depthwise convs: few weights per channel)
LR_CODES = 0.02   # mode "ste": Adam's step on the latent codes, in level spacings of the layer


def grid_codes(w: np.ndarray, qmax: int, per_channel: bool = True) -> np.ndarray | None:
    """Integer codes of `w` ([Cout, ...] in its own layout, output channels first) on its INT8 grid,
    or None when `w` is not on it."""
    rows = w.reshape(w.shape[0], -1).astype(np.float64)
    u = rows / grid_scale(rows, per_channel, qmax)[:, None]
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
                   train_free: bool = True, batch: int | None = None, seed: int = 0, mode: str = "frozen",
                   lr_codes: float = LR_CODES, keep_zero: dict | None = None,
                   progress: Callable[[str], None] | None = None) -> tuple[onnx.ModelProto, dict]:
    """(fine-tuned model, report): distillation with the integer codes of the `frozen` weight
    initializers fixed (module docstring). Raises if a frozen weight is not on its INT8 grid.

    mode "ste": the codes train too (quantization-aware training): a latent value per weight in grid
    units starts at its code, the forward pass rounds it to the nearest of the layer's own levels (so
    a clustered layer keeps <= N values) with a straight-through gradient, each channel's +-qmax code
    and the `keep_zero` positions ({weight: bool mask, output channels first}: pruned weights) stay.
    Codes that cross a rounding boundary change, so the coded size is re-measured, not kept."""
    if mode not in ("frozen", "ste"):
        raise InputError(f"--finetune-codes {mode!r}: use frozen or ste")
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
                # per-tensor grids (--per-tensor) keep one scale for the whole layer
                self.log_scale = torch.nn.Parameter(torch.zeros_like(s0) if per_channel else torch.zeros(1))

            def forward(self, _w):
                shape = (-1,) + (1,) * (self.codes.dim() - 1)
                return (self.s0 * torch.exp(self.log_scale)).reshape(shape) * self.codes

        class STECodes(ScaledCodes):
            """weight = s0 * exp(a) * round_levels(u), straight-through; u starts at the codes."""

            def __init__(self, codes, s0, keep):
                super().__init__(codes, s0)
                self.register_buffer("levels", torch.unique(codes).float())
                self.register_buffer("keep", keep)
                self.u = torch.nn.Parameter(codes.clone())

            def forward(self, _w):
                u, lv = self.u, self.levels
                i = torch.searchsorted(lv, u.detach().contiguous()).clamp(1, max(lv.numel() - 1, 1))
                lo, hi = lv[i - 1], lv[i.clamp(max=lv.numel() - 1)]
                q = torch.where((u.detach() - lo).abs() <= (hi - u.detach()).abs(), lo, hi)
                q = torch.where(self.keep, self.codes, q)
                shape = (-1,) + (1,) * (self.codes.dim() - 1)
                return (self.s0 * torch.exp(self.log_scale)).reshape(shape) * (u + (q - u).detach())

        scales, biases, free, latents = [], [], [], []
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
                if mode == "ste":
                    flat = codes.reshape(codes.shape[0], -1)
                    keep = torch.zeros_like(flat, dtype=torch.bool)
                    keep[torch.arange(flat.shape[0]), flat.abs().argmax(1)] = True  # the +-qmax that fixes s_c
                    kz = (keep_zero or {}).get(wname)
                    if kz is not None:
                        keep |= torch.from_numpy(np.asarray(kz, bool).reshape(flat.shape))
                    par = STECodes(codes.float(), s0.float(), keep.reshape(codes.shape))
                else:
                    par = ScaledCodes(codes.float(), s0.float())
                parametrize.register_parametrization(mod, "weight", par, unsafe=True)
                mod.parametrizations.weight.original.requires_grad_(False)
                scales.append(mod.parametrizations.weight[0].log_scale)
                if mode == "ste":  # Adam's step in units of the layer's level spacing (ECQ's steps differ 10x)
                    lv = par.levels
                    gap = float(torch.median(torch.diff(lv))) if lv.numel() > 1 else 1.0
                    latents.append((par.u, max(gap, 1.0)))
                seen.add(wname)
            elif train_free:
                free.append(mod.weight)
            else:
                mod.weight.requires_grad_(False)
            if mod.bias is not None:
                biases.append(mod.bias)
        # a weight onnx2torch keeps as a constant (MatMul's) does not train: its codes and scales stay
        info["untrained_compressed"] = [n for n in before if n not in seen]
        taken = {id(p) for p in scales + biases + free + [u for u, _ in latents]}
        for p in net.parameters():  # anything else (PRelu slopes, ...) stays as compression left it
            if id(p) not in taken:
                p.requires_grad_(False)
        info.update(frozen_layers=len(scales), scale_parameters=int(sum(p.numel() for p in scales)),
                    bias_parameters=int(sum(p.numel() for p in biases)),
                    free_weights=int(sum(p.numel() for p in free)))
        groups = [{"params": scales, "lr": lr_scale}, {"params": biases, "lr": lr_bias}]
        groups += [{"params": [u], "lr": lr_codes * gap} for u, gap in latents]
        if free:
            groups.append({"params": free, "lr": lr_free})
        return [g for g in groups if g["params"]], {"mode": "frozen codes" if mode == "frozen" else "ste codes",
                                                    **info, "lr_scale": lr_scale, "lr_bias": lr_bias,
                                                    "lr_free": lr_free if free else None,
                                                    "lr_codes": lr_codes if latents else None}

    out, rep = finetune(model, teacher, calibration, minutes=minutes, epochs=epochs, batch=batch or BATCH, seed=seed,
                        progress=progress, prepare=prepare)
    after = _onnx_codes(out, frozen, axes, qmax, per_channel)
    off = [n for n in frozen if after[n] is None or not set(np.unique(after[n]).tolist()) <= set(np.unique(before[n]).tolist())]
    if off:  # a bug: the written floats left the grid or the layer's levels
        raise RuntimeError(f"fine-tuning moved {off[0]} off its INT8 grid levels")
    changed = {n: int(np.sum(after[n] != before[n])) for n in frozen}
    if mode == "frozen" and any(changed.values()):  # a bug, never a size the report would misstate
        bad = next(n for n, c in changed.items() if c)
        raise RuntimeError(f"fine-tuning changed {changed[bad]} frozen codes of {bad}")
    rep["codes_changed"] = int(sum(changed.values()))
    rep["codes_total"] = int(sum(before[n].size for n in frozen))
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
