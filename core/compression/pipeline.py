"""`compress()`: a list of compression steps over one model, each step one technique module.

A step is (technique, amount, method, layers). Techniques register in TECHNIQUES by name; each
gets the selected layers (layers.Layer: [Cout, K] matrices, masks, codebooks) and a Context that
holds the calibration data and the lazily collected second moments H. Structured pruning or
low-rank factorisation (issue #19) add one module and one TECHNIQUES entry; the CLI, compile stage
and max_drop selection take them as further steps.

With `max_drop`, every layer gets a ladder of rungs per step (e.g. sparsity 0 .. S, clusters
none .. N); a rung's cost is the layer's relative output error tr(dW H dW^T) / tr(W H W^T), and one
threshold tau picks for every layer the most aggressive rung whose error stays below it (AIMET's
per-layer ratio selection, with the output error instead of a per-layer evaluation pass). tau is
bisected on the real model: the compressed FP32 model runs on the validation data and must meet
the budget on the conservative smooth bound (quantization/repair.assess), the rule INT8 repair uses.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
import onnx

from edgec.core.errors import InputError

from . import cluster as _cluster
from . import ecq as _ecq
from . import prune as _prune
from . import sparsegpt as _sparsegpt
from .entropy import size_report
from .layers import Layer, correct_bias, find_layers, moments, select, write_back

H_SAMPLES = 32  # as quantization's GPTQ: H of a conv input from 32 images x all positions is well estimated
FEW_ROWS = 8  # ... unless the layer saw fewer than FEW_ROWS x K input rows (K inputs per output):
FEW_ROWS_SAMPLES = 200  # then it gets up to this many images


@dataclass
class Step:
    technique: str                 # a TECHNIQUES key
    amount: float                  # prune: sparsity in [0, 1); cluster: number of levels
    method: str | None = None      # prune: magnitude | obs | global; cluster: nearest | obs (None: obs with data)
    layers: tuple = ()             # fnmatch patterns on node / weight name / op type; () = the default selection
    per_layer: dict | None = None  # layer name -> amount overriding `amount` (what --max-drop chose; 0 / 255 = none)
    options: dict | None = None    # technique extras (structured.py: tied channels, fine-tuning epochs)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Context:
    model: onnx.ModelProto
    calibration: object = None
    per_channel: bool = True
    samples: int = H_SAMPLES
    progress: Callable[[str], None] = lambda msg: None
    _h: dict = field(default_factory=dict)
    means: dict = field(default_factory=dict)
    qmax: int = 127  # the INT8 weight grid the backend will quantize to (64 for 7-bit weights)
    rows: dict = field(default_factory=dict)   # input rows each H sums
    gains: dict = field(default_factory=dict)  # ecq: each layer's output sensitivity

    def hessians(self, layers: Sequence[Layer]) -> dict[str, np.ndarray]:
        need = [ly for ly in layers if ly.name not in self._h]
        if need:
            if self.calibration is None:
                raise InputError("this compression method needs calibration data: pass --calib DATA "
                                 "(or --prune-method magnitude / --cluster-method nearest, which need none)")
            self.progress(f"collecting layer input statistics on {min(self.samples, len(self.calibration))} samples")
            h, mu = moments(self.model, need, self.calibration.take(self.samples), self.rows)
            # Layers that see few input rows per image (a classifier: one) get more images, up to
            # FEW_ROWS_SAMPLES: their H is otherwise rank-deficient and what is fitted to it overfits.
            few = [ly for ly in need if self.rows.get(ly.name, 0) < FEW_ROWS * ly.w.shape[1] // ly.groups]
            more = min(FEW_ROWS_SAMPLES, len(self.calibration)) - self.samples
            if few and more > 0:
                self.progress(f"statistics of {len(few)} layers with few input rows on {more} more samples")
                rows2: dict = {}
                h2, mu2 = moments(self.model, few, itertools.islice(iter(self.calibration), self.samples,
                                                                    self.samples + more), rows2)
                for ly in few:
                    n1, n2 = self.rows[ly.name], rows2[ly.name]
                    h[ly.name] = h[ly.name] + h2[ly.name]
                    mu[ly.name] = (mu[ly.name] * n1 + mu2[ly.name] * n2) / (n1 + n2)
                    self.rows[ly.name] = n1 + n2
            for ly in need:  # shrink what is still rank-deficient (ecq.shrink)
                h[ly.name] = _ecq.shrink(h[ly.name], self.rows.get(ly.name))
            self._h.update(h)
            self.means.update(mu)
        return self._h


def _method(step: Step, ctx: Context) -> str:
    if step.method:
        return step.method
    return "obs" if ctx.calibration is not None else ("magnitude" if step.technique == "prune" else "nearest")


def run_prune(layers: Sequence[Layer], step: Step, ctx: Context, amount: dict[str, float] | None = None) -> None:
    if not 0 <= step.amount < 1:
        raise InputError(f"--prune {step.amount}: sparsity is a fraction in [0, 1), e.g. 0.5")
    method = _method(step, ctx)
    if method not in ("magnitude", "obs", "global"):
        raise InputError(f"unknown prune method {method!r}; use magnitude, obs or global")
    if method == "global" and amount is None:
        got = _prune.global_magnitude(layers, step.amount)
        for ly in layers:
            ly.done.append({"step": "prune", "method": "global", "sparsity": round(got[ly.name], 4)})
        return
    hs = ctx.hessians(layers) if method == "obs" else {}
    for ly in layers:
        s = amount.get(ly.name, step.amount) if amount is not None else step.amount
        if s > 0:
            if method == "obs":
                _sparsegpt.prune(ly, s, hs[ly.name])
            else:
                _prune.magnitude(ly, s)
        ly.done.append({"step": "prune", "method": "magnitude" if method == "global" else method,
                        "sparsity": round(float(ly.mask.mean()) if ly.mask is not None else 0.0, 4)})


def run_cluster(layers: Sequence[Layer], step: Step, ctx: Context, amount: dict[str, float] | None = None) -> None:
    n0 = int(step.amount)
    if n0 != step.amount or not 3 <= n0 <= 255:
        raise InputError(f"--cluster {step.amount}: the number of shared values is an integer in 3..255, e.g. 16")
    method = _method(step, ctx)
    if method not in ("nearest", "obs"):
        raise InputError(f"unknown cluster method {method!r}; use nearest or obs")
    hs = ctx.hessians(layers) if method == "obs" else {}
    for ly in layers:
        n = amount.get(ly.name, n0) if amount is not None else n0
        if n and n < 255:
            _cluster.cluster(ly, int(n), hs.get(ly.name), ctx.per_channel, ctx.qmax)
        ly.done.append({"step": "cluster", "method": method, "clusters": int(n) if n and n < 255 else None,
                        "levels": int(ly.codebook.size) if ly.codebook is not None else None})


def run_ecq(layers: Sequence[Layer], step: Step, ctx: Context, amount: dict[str, float] | None = None) -> None:
    """Entropy-constrained quantization at slope step.amount (ecq.py); per_layer overrides the slope."""
    if not step.amount > 0:
        raise InputError(f"--ecq {step.amount}: the rate-distortion slope is a positive number, e.g. 3e-9")
    if ctx.calibration is None:
        raise InputError("--ecq needs calibration data (--calib DATA): it weighs every weight's error by the "
                         "layer's input statistics and each layer by its measured output sensitivity")
    hs = ctx.hessians(layers)
    if not all(ly.name in ctx.gains for ly in layers):
        ctx.progress(f"measuring the output sensitivity of {len(layers)} layers")
        ctx.gains.update(_ecq.sensitivities(ctx.model, [ly for ly in layers if ly.name not in ctx.gains], hs,
                                            ctx.calibration.take(min(ctx.samples, _ecq.GAIN_SAMPLES))))
    for ly in layers:
        lam = amount.get(ly.name, step.amount) if amount is not None else step.amount
        rep = _ecq.quantize(ly, lam / max(ctx.gains[ly.name], _ecq.MIN_GAIN), hs[ly.name], ctx.per_channel, ctx.qmax)
        rep["sensitivity"] = round(ctx.gains[ly.name], 4)
        ly.done.append(rep)


TECHNIQUES: dict[str, Callable] = {"prune": run_prune, "cluster": run_cluster, "ecq": run_ecq}


def _ladder(step: Step) -> list[float]:
    """Rungs from the most aggressive (the step's amount) to none."""
    if step.technique == "prune":
        rungs = [s for s in (0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1) if s < step.amount]
        return [step.amount] + rungs + [0.0]
    n = int(step.amount)
    rungs = [n]
    while rungs[-1] * 2 < 255:
        rungs.append(rungs[-1] * 2)
    return rungs + [255]  # 255 = no clustering


def _rel_error(ly: Layer, w_before: np.ndarray, h: np.ndarray, w_ref: np.ndarray) -> float:
    per = ly.w.shape[0] // ly.groups
    num = den = 0.0
    for g in range(ly.groups):
        sl = slice(g * per, (g + 1) * per)
        d = ly.w[sl] - w_before[sl]
        num += float(np.sum((d @ h[g]) * d))
        den += float(np.sum((w_ref[sl] @ h[g]) * w_ref[sl]))
    return num / max(den, 1e-30)


@dataclass
class CompressResult:
    model: onnx.ModelProto
    report: dict
    layers: list = field(default_factory=list)
    # A compressed model differs from its FP32 source on purpose; compile's default validation
    # threshold for it (the accuracy demand is --compress-max-drop / --max-drop, judged on top-1).
    min_cosine: float = 0.98

    def enforce(self, qmodel: onnx.ModelProto) -> onnx.ModelProto:
        """See enforce.enforce: keep masks and levels through quantization's weight rounding."""
        from .enforce import enforce

        return enforce(qmodel, self)


def compress(model: onnx.ModelProto, steps: Sequence[Step], *, calibration=None, validation=None,
             max_drop: float | None = None, per_channel: bool = True, samples: int = H_SAMPLES,
             progress: Callable[[str], None] | None = None, hessians: dict | None = None,
             bias_correction: bool = True, qmax: int = 127) -> CompressResult:
    """Apply `steps` in order; see the module docstring. Returns the model and a JSON-able report.

    `hessians` (a dict, filled on first use) shares the layer statistics between calls on the same
    model and calibration data (benchmarks sweep many settings). `bias_correction` (with calibration
    data) gives each changed Conv/Gemm back its mean output (layers.correct_bias)."""
    t0 = time.perf_counter()
    say = progress or (lambda msg: None)
    from .structured import STRUCTURED, apply_structured  # graph-changing steps (issue #19) run first

    # With weight steps, --finetune distill runs after them with their integer codes frozen (codes.py);
    # alone (or with structured steps only) it trains every weight, before any weight step (structured.py).
    after = [st for st in steps if st.technique == "distill"] if any(st.technique in TECHNIQUES for st in steps) else []
    teacher = model
    if not after and any(st.technique == "distill" and (st.options or {}).get("mode") for st in steps):
        raise InputError("--finetune-codes applies to the codes of --ecq / --cluster: give one of them")
    model, structured = apply_structured(model, [st for st in steps if st not in after], calibration=calibration,
                                         validation=validation, max_drop=max_drop, progress=say)
    max_drop, steps = (None if structured else max_drop), [st for st in steps if st.technique not in STRUCTURED]
    for st in steps:
        if st.technique not in TECHNIQUES:
            raise InputError(f"unknown compression technique {st.technique!r}; use one of {', '.join(TECHNIQUES)}")
    from edgec.core.quantization.graph import ensure_node_names

    base = onnx.ModelProto()
    base.CopyFrom(model)
    base = ensure_node_names(base)
    shared = hessians if hessians is not None else {}
    ctx = Context(base, calibration, per_channel, samples, say, shared.setdefault("h", {}),
                  shared.setdefault("mu", {}), qmax, shared.setdefault("rows", {}), shared.setdefault("gain", {}))
    all_layers = find_layers(base)
    chosen = {i: {ly.name for ly in select(all_layers, st.layers or None)} for i, st in enumerate(steps)}
    report: dict = {"steps": [st.to_json() for st in steps], "per_channel_grid": per_channel, "grid_qmax": qmax}
    before = size_report(base, layers=False)

    # One pass over the calibration data for every layer any step reconstructs.
    data_aware = set().union(*[chosen[i] for i, st in enumerate(steps) if _method(st, ctx) == "obs"] or [set()])
    if data_aware or max_drop is not None:
        ctx.hessians([ly for ly in all_layers if ly.name in data_aware or max_drop is not None and
                      any(ly.name in c for c in chosen.values())])
    if max_drop is None:
        layers = find_layers(base)
        for i, st in enumerate(steps):
            say(f"compression step {i + 1}/{len(steps)}: {st.technique} {st.amount:g}")
            TECHNIQUES[st.technique]([ly for ly in layers if ly.name in chosen[i]], st, ctx, st.per_layer)
        out = write_back(base, layers)
    elif any(st.technique == "ecq" for st in steps):
        if len(steps) > 1:
            raise InputError("--max-drop with --ecq searches the one slope LAMBDA; it does not combine with "
                             "--prune/--cluster (drop --max-drop to apply them at their given amounts)")
        from .slope_search import search

        # The search corrects each probe's biases: the returned model is the one it measured.
        out, layers, report["max_drop"] = search(base, steps[0], chosen[0], ctx, validation, max_drop, say,
                                                 run_ecq, bias_correction)
        report["bias_corrected"] = report["max_drop"].pop("bias_corrected")
        bias_correction = False
        amounts = report["max_drop"].pop("amounts")
        report["chosen_steps"] = [{**steps[0].to_json(), "per_layer": amounts[0]}]
    else:
        out, layers, report["max_drop"] = _select(base, steps, chosen, ctx, validation, max_drop, say)
        # The chosen per-layer amounts as steps: compress(model, these) rebuilds the same model without a search.
        amounts = report["max_drop"].pop("amounts")
        report["chosen_steps"] = [{**st.to_json(), "per_layer": amounts[i]} for i, st in enumerate(steps)]
    if bias_correction and calibration is not None:
        ctx.hessians([ly for ly in layers if ly.done])
        report["bias_corrected"] = correct_bias(out, layers, {ly.name: ly for ly in all_layers}, ctx.means)
    if after:
        out, report["finetune"] = _finetune_frozen(out, teacher, layers, after[-1], calibration, per_channel, qmax, say)
    hs = ctx._h
    rows = []
    originals = {ly.name: ly for ly in all_layers}
    for ly in layers:
        if not ly.done or all(d.get("sparsity", 0) == 0 and d.get("clusters") is None and d["step"] != "ecq"
                              for d in ly.done):
            continue
        row = {"layer": ly.name, "weight": ly.weight, "op": ly.node.op_type, "params": int(ly.w.size),
               "sparsity": round(float(np.mean(ly.w == 0)), 4),
               "distinct_levels": int(ly.codebook.size) if ly.codebook is not None else None,
               "steps": ly.done}
        if ly.name in hs:
            ref = originals[ly.name].w
            row["output_error"] = float(f"{_rel_error(ly, ref, hs[ly.name], ref):.4g}")
        rows.append(row)
    report["layers"] = rows
    report["size_before"] = before
    if structured:
        report["structured"] = structured
    report["size_after"] = size_report(out, layers=False)
    report["seconds"] = round(time.perf_counter() - t0, 2)
    return CompressResult(out, report, layers)


def _finetune_frozen(model, teacher, layers, step: Step, calibration, per_channel, qmax, say):
    """Distillation after the weight steps, their codes frozen (codes.finetune_codes); layers re-read."""
    from .codes import finetune_codes, refresh_layers

    if calibration is None:
        raise InputError("--finetune distill trains on unlabelled calibration images: pass --calib DATA")
    opts = dict(step.options or {})
    if opts.get("mode", "frozen") not in ("frozen", "ste"):
        raise InputError(f"--finetune-codes {opts['mode']!r}: use frozen or ste")
    frozen = [ly.weight for ly in layers if ly.codebook is not None]
    if not frozen:
        raise InputError("--finetune distill after --prune alone has no integer codes to keep: add --ecq or "
                         "--cluster (or fine-tune before pruning with --finetune distill and no weight step)")
    kw = {k: opts[k] for k in ("lr_scale", "lr_bias", "lr_free", "lr_codes", "train_free", "batch", "seed", "mode")
          if k in opts}
    pruned = {ly.weight: ly.mask for ly in layers if ly.mask is not None and any(d["step"] == "prune" for d in ly.done)}
    say(f"fine-tuning with the integer codes of {len(frozen)} layers " +
        ("frozen" if kw.get("mode", "frozen") == "frozen" else "trained straight-through on their levels"))
    out, rep = finetune_codes(model, teacher, calibration, frozen, qmax=qmax, per_channel=per_channel,
                              minutes=step.amount, epochs=opts.get("epochs", 3), progress=say, keep_zero=pruned, **kw)
    refresh_layers(out, layers)
    if rep["codes_changed"]:  # ste: what enforce() keeps after INT8 is the trained codes
        from .codes import grid_codes

        for ly in layers:
            if ly.codebook is not None:
                q = grid_codes(ly.w, qmax, per_channel)
                ly.codebook = np.unique(q)
                ly.mask = (q == 0) if ly.weight not in pruned else ly.mask
    return out, rep


class _States:
    """Each layer's state after steps 0..i at given rungs, computed once: probes of the threshold
    search share most per-layer choices, and the sensitivity pass is the first rung of every state."""

    def __init__(self, originals: dict[str, Layer], steps, chosen, ctx):
        self.originals, self.steps, self.chosen, self.ctx = originals, steps, chosen, ctx
        self.cache: dict = {}

    def get(self, name: str, rungs: tuple) -> Layer:
        if not rungs:
            ly = self.originals[name]
            return replace(ly, w=ly.w.copy(), mask=None, codebook=None, done=[])
        key = (name, rungs)
        if key not in self.cache:
            prev = self.get(name, rungs[:-1])
            ly = replace(prev, w=prev.w.copy(), mask=None if prev.mask is None else prev.mask.copy(),
                         done=list(prev.done))
            i = len(rungs) - 1
            if name in self.chosen[i]:
                TECHNIQUES[self.steps[i].technique]([ly], self.steps[i], self.ctx, {name: rungs[-1]})
            self.cache[key] = ly
        return self.cache[key]


def _build(base: onnx.ModelProto, states: _States, amounts: list[dict]) -> tuple[onnx.ModelProto, list[Layer]]:
    layers = []
    for name in states.originals:
        rungs = tuple(a.get(name, 0) for a in amounts)
        ly = states.get(name, rungs)
        layers.append(replace(ly, w=ly.w.copy()))
    return write_back(base, layers), layers


def _select(base, steps, chosen, ctx: Context, validation, budget: float, say):
    """Per-layer rungs by a bisected error threshold (module docstring)."""
    from edgec.core.quantization.repair import Evaluator, assess

    if validation is None:
        raise InputError("--max-drop needs validation data to measure the drop; pass --val DATA "
                         "(labelled data gives top-1, unlabelled gives agreement with FP32)")
    if any(st.method == "global" for st in steps):
        raise InputError("--max-drop chooses per-layer sparsity; it does not combine with --prune-method global")
    ladders = [_ladder(st) for st in steps]
    none = [lad[-1] for lad in ladders]
    every = {ly.name: ly for ly in find_layers(base)}
    hs = ctx.hessians([ly for ly in every.values() if any(ly.name in c for c in chosen.values())])
    states = _States(every, steps, chosen, ctx)
    # errors[i][layer][rung]: step i alone (earlier steps at "none") on the FP32 layer
    errors: list[dict] = []
    for i, st in enumerate(steps):
        say(f"sensitivity of {len(chosen[i])} layers to {st.technique} ({len(ladders[i])} rungs)")
        e_i: dict = {}
        for name in chosen[i]:
            ref = every[name].w
            e_i[name] = [_rel_error(states.get(name, tuple(none[:i]) + (r,)), ref, hs[name], ref) for r in ladders[i]]
        errors.append(e_i)

    def amounts_for(tau: float) -> list[dict]:
        return [{name: next((r for r, e in zip(ladders[i], errs) if e <= tau), ladders[i][-1])
                 for name, errs in errors[i].items()} for i in range(len(steps))]

    evaluator = Evaluator(base, validation, progress=False)
    trials = []

    def probe(tau: float):
        model, layers = _build(base, states, amounts_for(tau))
        row = assess(evaluator, evaluator.outputs(model))
        size = size_report(model, layers=False)["ans_bytes"]
        trials.append({"tau": float(f"{tau:.4g}"), "drop": round(row["drop"], 3), "drop_bound": round(row["drop_bound"], 3),
                       "ans_bytes": size})
        say(f"max-drop search: tau {tau:.3g} -> drop {row['drop']:.2f} (bound {row['drop_bound']:.2f}), "
            f"{size / 1e6:.2f} MB")
        return model, layers, row["drop_bound"] <= budget

    lo, hi = -5.0, 0.0  # log10 tau
    best = None
    m, ly, ok = probe(10 ** hi)
    if ok:
        best = (m, ly, 10 ** hi)
    else:
        for _ in range(6):
            mid = (lo + hi) / 2
            m, ly, ok = probe(10 ** mid)
            if ok:
                best, lo = (m, ly, 10 ** mid), mid
            else:
                hi = mid
    if best is None:
        m, ly, _ = probe(10 ** lo)
        best = (m, ly, 10 ** lo)
    model, layers, tau = best
    met = trials[[t["tau"] for t in trials].index(float(f"{tau:.4g}"))]["drop_bound"] <= budget
    return model, layers, {"amounts": amounts_for(tau), "budget": budget, "metric": evaluator.metric, "samples": len(evaluator.feeds),
                           "tau": float(f"{tau:.4g}"), "met": met, "trials": trials}
