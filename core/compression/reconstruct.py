"""Structured channel pruning with least-squares reconstruction (He, Zhang & Sun 2017; ThiNet).

For each unit (channels.Unit, in graph order) the channels to remove are ranked, removed from the
graph (channels.prune_graph), and every consumer that read them is re-fitted by least squares so
that its output on the *pruned* model's input matches the *original* model's output:

    W' = argmin || X_p[:, kept] W'^T - X_o W_o^T ||^2   =>   W'^T = H_kk^-1 C_k W_o^T

with X_p the consumer's input rows (im2col) in the current, already pruned model, X_o the same rows
in the FP32 original, H = X_p^T X_p and C = X_p^T X_o (a column of ones in both carries the bias).
Fitting to the original output, not to the current one, lets each re-fit absorb the error of every
unit pruned before it. Ranking, per unit:
  reconstruction  greedy block optimal-brain-surgeon on H: remove the channel whose k*k input
                  columns raise the re-fitted output error least (the error the refit then reaches)
  activation      E[x^2] of the channel at its consumers times the consumer weights' squared norm
  l1              L1 norm of the producers' output rows (no data needed)
Kept counts are rounded up to a multiple of 8 (CPU kernels block channels by 8/16: a 90-channel
conv is no faster than a 96-channel one).
"""
from __future__ import annotations

import fnmatch
import math
import time
from typing import Callable, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from edgec.core.errors import InputError
from edgec.core.quantization.rounding import DAMP, _patches

from .channels import ChannelGraph, Unit, _attr, _weight_axes, analyse, prune_graph

SAMPLES = 128        # calibration images for the layer statistics (late 7x7 layers need many for 1k+ inputs)
ROWS_PER_IMAGE = 256  # im2col rows kept per image and consumer (early layers have 12k positions)
MAX_PASSES = 6       # statistics passes; units are processed in this many sequential chunks at most
MULTIPLE = 8
METHODS = ("reconstruction", "activation", "l1")


def _weight_matrix(node, w: np.ndarray) -> np.ndarray:
    """[Cout, K] view (K in the im2col column order for Conv)."""
    o, _ = _weight_axes(node)
    if node.op_type == "Conv":
        return w.reshape(w.shape[0], -1)
    return w if o == 0 else w.T


def _from_matrix(node, m: np.ndarray, shape) -> np.ndarray:
    o, _ = _weight_axes(node)
    if node.op_type == "Conv":
        return m.reshape(shape)
    return (m if o == 0 else m.T).reshape(shape)


def _rows(node, x: np.ndarray, kshape) -> np.ndarray:
    if node.op_type == "Conv":
        return _patches(x, node, kshape, 1)[0]
    return x.reshape(-1, x.shape[-1])


def select_units(cg: ChannelGraph, patterns: Sequence[str] | None = None, tied: bool = False,
                 min_channels: int = 16) -> list[Unit]:
    """Prunable units: not blocked, with consumers; residual-tied ones only with `tied` or when named."""
    out = []
    for u in cg.units:
        if u.blocked or not u.consumers:
            continue
        if patterns:
            if any(fnmatch.fnmatchcase(n, p) for p in patterns for n in u.producers):
                out.append(u)
        elif u.size >= min_channels and (tied or not u.tied):
            out.append(u)
    if patterns and not out:
        raise InputError(f"--layers {','.join(patterns)} matches no prunable channel group; prunable producers "
                         f"look like {', '.join(u.name for u in cg.units if not u.blocked)[:200]}")
    return out


def n_remove(size: int, ratio: float, multiple: int = MULTIPLE) -> int:
    keep = size - int(round(ratio * size))
    if size >= 2 * multiple:
        keep = max(int(math.ceil(keep / multiple) * multiple), multiple)
    return size - min(max(keep, 1), size)


class _Stats:
    """Per consumer: H = [X_p 1]^T [X_p 1] and C = [X_p 1]^T [X_o 1] over the calibration rows."""

    def __init__(self, cur: onnx.ModelProto, orig: onnx.ModelProto, consumers: list, data, rng):
        from edgec.core.quantization.calibration import session, with_outputs

        byname = {n.name: n for n in orig.graph.node}
        ws = {t.name: t for t in orig.graph.initializer}
        names = list(dict.fromkeys(byname[c].input[0] for c in consumers))
        s_cur = session(with_outputs(cur, names))
        s_orig = session(with_outputs(orig, names))
        self.h: dict = {}
        self.c: dict = {}
        self.o: dict = {}  # X_o^T X_o: the original output energy, for relative errors
        self.rows: dict = {}
        rows: dict = {c: ([], []) for c in consumers}
        for j, s in enumerate(data):
            feeds = {i.name: s.feeds[i.name] for i in s_cur.get_inputs()}
            a_cur = dict(zip(names, s_cur.run(names, feeds)))
            a_orig = dict(zip(names, s_orig.run(names, feeds)))
            for c in consumers:
                node = byname[c]
                k = tuple(ws[node.input[1]].dims[2:]) if node.op_type == "Conv" else None
                p = _rows(node, a_cur[node.input[0]].astype(np.float32), k)
                o = _rows(node, a_orig[node.input[0]].astype(np.float32), k)
                if p.shape[0] > ROWS_PER_IMAGE:
                    idx = rng.choice(p.shape[0], ROWS_PER_IMAGE, replace=False)
                    p, o = p[idx], o[idx]
                rows[c][0].append(p)
                rows[c][1].append(o)
            if (j + 1) % 32 == 0 or j + 1 == len(data):
                for c, (ps, os_) in rows.items():  # one product per 32 images: BLAS is slow on small ones
                    if ps:
                        self._add(c, np.concatenate(ps), np.concatenate(os_))
                    ps.clear()
                    os_.clear()

    def _add(self, c, p: np.ndarray, o: np.ndarray) -> None:
        # float32 products (the costly part), float64 sums
        p = np.hstack([p, np.ones((p.shape[0], 1), np.float32)])
        o = np.hstack([o, np.ones((o.shape[0], 1), np.float32)])
        self.h[c] = self.h.get(c, 0.0) + (p.T @ p).astype(np.float64)
        self.c[c] = self.c.get(c, 0.0) + (p.T @ o).astype(np.float64)
        self.o[c] = self.o.get(c, 0.0) + (o.T @ o).astype(np.float64)
        self.rows[c] = self.rows.get(c, 0) + p.shape[0]


def _column_groups(cg: ChannelGraph, node, tensor: str, removed: set, kk: int) -> tuple[np.ndarray, dict]:
    """(roots of the consumer's input channels with `removed` gone, root -> its column indices there)."""
    roots = cg.roots(tensor)
    cur = roots[np.array([r not in removed for r in roots], bool)] if removed else roots
    cols: dict = {}
    for i, r in enumerate(cur.tolist()):
        cols.setdefault(r, []).extend(range(i * kk, (i + 1) * kk))
    return cur, {r: np.array(v) for r, v in cols.items()}


def _obs_costs(alive: list, terms: list) -> np.ndarray:
    """Each candidate's block-OBS cost sum_t tr(W_S (Hinv_SS)^-1 W_S^T), batched over candidates."""
    costs = np.zeros(len(alive))
    for w, hinv, cols in terms:
        have = [i for i, r in enumerate(alive) if r in cols]
        if not have:
            continue
        lens = {len(cols[alive[i]]) for i in have}
        if len(lens) == 1:
            idx = np.stack([cols[alive[i]] for i in have])                       # [n, kk]
            blk = hinv[idx[:, :, None], idx[:, None, :]]                          # [n, kk, kk]
            ws = w[:, idx].transpose(1, 0, 2)                                     # [n, Cout, kk]
            try:
                sol = np.linalg.solve(blk, ws.transpose(0, 2, 1))                 # [n, kk, Cout]
                costs[have] += np.einsum("nck,nkc->n", ws, sol)
                continue
            except np.linalg.LinAlgError:
                pass
        for i in have:
            s = cols[alive[i]]
            ws = w[:, s]
            costs[i] += float(np.sum((ws @ np.linalg.pinv(hinv[np.ix_(s, s)])) * ws))
    return costs


def _greedy_obs(cands: list, n: int, terms: list) -> list:
    """`n` of `cands` removed by block OBS, a few at a time; terms = [(W [Cout, K], Hinv [K, K], {root: cols})]."""
    removed: list = []
    alive = list(cands)
    chunk = max(1, int(round(n / 32)))
    while len(removed) < n:
        costs = _obs_costs(alive, terms)
        take = [alive[i] for i in np.argsort(costs)[:min(chunk, n - len(removed))]]
        for w, hinv, cols in terms:
            hit = [cols[r] for r in take if r in cols]
            if not hit:
                continue
            s = np.concatenate(hit)
            blk_inv = np.linalg.pinv(hinv[np.ix_(s, s)])
            w -= (w[:, s] @ blk_inv) @ hinv[s, :]
            hinv -= hinv[:, s] @ blk_inv @ hinv[s, :]
            w[:, s] = 0.0
        removed.extend(take)
        gone = set(take)
        alive = [r for r in alive if r not in gone]
    return removed


def _damped_inv(h: np.ndarray) -> np.ndarray:
    h = h.copy()
    d = np.diag(h)
    dead = d <= 0
    h[dead, dead] = 1.0
    h += np.eye(len(h)) * DAMP * float(np.mean(d[:-1] if len(d) > 1 else d))
    return np.linalg.inv(h)


def prune_channels(model: onnx.ModelProto, ratio: float, *, calibration=None, method: str | None = None,
                   reconstruct: bool = True, tied: bool = False, patterns: Sequence[str] | None = None,
                   per_unit: dict | None = None, samples: int = SAMPLES, multiple: int = MULTIPLE,
                   progress: Callable[[str], None] | None = None, seed: int = 0) -> tuple[onnx.ModelProto, dict]:
    """(pruned model, report): remove `ratio` of each selected unit's channels (see the module docstring)."""
    if not 0 <= ratio < 1:
        raise InputError(f"--prune-channels {ratio}: the fraction of channels to remove is in [0, 1), e.g. 0.3")
    say = progress or (lambda m: None)
    method = method or ("reconstruction" if calibration is not None else "l1")
    if method not in METHODS:
        raise InputError(f"unknown channel ranking {method!r}; use one of {', '.join(METHODS)}")
    if method != "l1" and calibration is None:
        raise InputError(f"channel ranking {method!r} needs calibration data: pass --calib DATA "
                         "(or --prune-channels-method l1, which needs none)")
    t0 = time.perf_counter()
    cg = analyse(model)
    orig = onnx.ModelProto()
    orig.CopyFrom(cg.model)
    units = select_units(cg, patterns, tied)
    todo = [(u, n_remove(u.size, (per_unit or {}).get(u.name, ratio), multiple)) for u in units]
    todo = [(u, n) for u, n in todo if n > 0]
    nodes = {n.name: n for n in cg.model.graph.node}
    inits = {t.name: t for t in cg.model.graph.initializer}
    w_orig = {c: numpy_helper.to_array(inits[nodes[c].input[1]]).astype(np.float64)
              for u, _ in todo for c in u.consumers}
    b_orig = {}
    for c in w_orig:
        node = nodes[c]
        rows = _weight_matrix(node, w_orig[c]).shape[0]
        b_orig[c] = (numpy_helper.to_array(inits[node.input[2]]).astype(np.float64).reshape(-1)
                     if len(node.input) > 2 and node.input[2] else np.zeros(rows))
    data = list(calibration.take(samples)) if calibration is not None and (reconstruct or method != "l1") else None
    rng = np.random.default_rng(seed)
    removed: set = set()
    rows_report = []
    chunk = max(1, math.ceil(len(todo) / MAX_PASSES))
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        cons = list(dict.fromkeys(c for u, _ in part for c in u.consumers))
        stats = None
        base = set(removed)  # the layout the statistics are taken in
        if data is not None:
            say(f"channel pruning: units {start + 1}-{start + len(part)}/{len(todo)}, statistics on {len(data)} samples")
            stats = _Stats(prune_graph(cg, removed), orig, cons, data, rng)
        for u, n in part:
            cands = [r for r in u.channels if r not in removed]
            take = _rank(cg, u, n, cands, method, stats, base, nodes, inits)
            removed |= set(take)
            row = {"unit": u.name, "producers": len(u.producers), "channels": u.size, "removed": len(take),
                   "consumers": len(u.consumers)}
            if reconstruct and stats is not None:
                row["refit_error"] = _refit(cg, u, stats, base, removed, nodes, inits, w_orig, b_orig)
            rows_report.append(row)
    out = prune_graph(cg, removed)
    onnx.checker.check_model(out)
    from edgec.core.graph_stats import model_stats

    before, after = model_stats(orig), model_stats(out)
    report = {"technique": "prune_channels", "ratio": ratio, "method": method, "reconstruct": bool(reconstruct and data),
              "tied": tied, "samples": len(data) if data else 0, "units": rows_report,
              "macs_before": before["macs"], "macs_after": after["macs"],
              "params_before": before["parameters"], "params_after": after["parameters"],
              "seconds": round(time.perf_counter() - t0, 2)}
    return out, report


def _current_weight(cg, node, inits, removed) -> np.ndarray:
    """The consumer's [Cout_kept, K_kept] matrix in the current (pruned) layout."""
    w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
    o, i = _weight_axes(node)
    kin = cg.keep_mask(node.input[0], removed)
    kout = cg.keep_mask(node.output[0], removed)
    w = np.compress(kin, np.compress(kout, w, axis=o), axis=i)
    return _weight_matrix(node, w)


def _rank(cg, u: Unit, n: int, cands: list, method: str, stats, removed: set, nodes, inits) -> list:
    n = min(n, len(cands))
    if method == "l1":
        score = np.zeros(len(cands))
        pos = {r: i for i, r in enumerate(cands)}
        for p in u.producers:
            node = nodes[p]
            w = numpy_helper.to_array(inits[node.input[1]])
            m = np.abs(_weight_matrix(node, w)).sum(1)
            m = m / max(float(m.mean()), 1e-12)
            for r, v in zip(cg.roots(node.output[0]).tolist(), m):
                if r in pos:
                    score[pos[r]] += v
        return [cands[i] for i in np.argsort(score)[:n]]
    terms = []
    for c in u.consumers:
        node = nodes[c]
        kk = int(np.prod(inits[node.input[1]].dims[2:])) if node.op_type == "Conv" else 1
        _, cols = _column_groups(cg, node, node.input[0], removed, kk)
        w = _current_weight(cg, node, inits, removed)
        h = stats.h[c][:-1, :-1]
        terms.append((w.copy(), h, cols))
    if method == "activation":
        score = np.zeros(len(cands))
        for w, h, cols in terms:
            d = np.diag(h)
            for i, r in enumerate(cands):
                s = cols.get(r)
                if s is not None:
                    score[i] += float(np.sum(d[s] * np.sum(w[:, s] ** 2, 0)))
        return [cands[i] for i in np.argsort(score)[:n]]
    # OBS on the bias-augmented problem: the re-fit moves the bias too, so a channel whose activation
    # is nearly constant costs nothing (its mean goes into the bias).
    aug = []
    for (w, _, cols), c in zip(terms, u.consumers):
        node = nodes[c]
        b = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64).reshape(-1) \
            if len(node.input) > 2 and node.input[2] else np.zeros(w.shape[0])
        b = b[cg.keep_mask(node.output[0], removed)]
        aug.append((np.hstack([w, b[:, None]]), _damped_inv(stats.h[c]), cols))
    return _greedy_obs(cands, n, aug)


def _refit(cg, u: Unit, stats, base: set, removed: set, nodes, inits, w_orig, b_orig) -> float:
    """Least-squares re-fit of u's consumers onto the original outputs; returns the mean relative error."""
    errs = []
    for c in u.consumers:
        node = nodes[c]
        kk = int(np.prod(inits[node.input[1]].dims[2:])) if node.op_type == "Conv" else 1
        # columns of the consumer's current input (before this unit's removal) that survive it
        roots_before, _ = _column_groups(cg, node, node.input[0], base, kk)
        keep_cols = np.repeat([r not in removed for r in roots_before.tolist()], kk)
        keep_cols = np.r_[keep_cols, True]  # bias column
        h, cmat = stats.h[c], stats.c[c]
        # original columns: the consumer's full original input (plus ones)
        kout = cg.keep_mask(node.output[0], removed)
        wo = np.hstack([_weight_matrix(node, w_orig[c]), b_orig[c][:, None]])[kout]  # [Cout_kept, Ko+1]
        hk = h[np.ix_(keep_cols, keep_cols)]
        ck = cmat[keep_cols]
        # Ridge towards the sliced original weights: a Gemm after global pooling sees one row per
        # image, fewer rows than unknowns, and a plain least-squares fit there memorises the
        # calibration images (82 -> 8 % top-1 on EfficientNet-Lite0 at 30 %).
        w_sl = wo[:, np.r_[np.repeat(cg.keep_mask(node.input[0], removed), kk), True]]
        lam = float(np.mean(np.diag(hk)[:-1])) * max(DAMP, 2.0 * len(hk) / max(stats.rows[c], 1))
        w_new = (wo @ ck.T + lam * w_sl) @ np.linalg.inv(hk + lam * np.eye(len(hk)))  # [Cout_kept, Kk+1]
        # relative output error on the calibration rows: tr(W' H W'^T) - 2 tr(W' C Wo^T) + tr(Wo Hoo Wo^T)
        ref = float(np.sum((wo @ stats.o[c]) * wo))
        num = float(np.sum((w_new @ hk) * w_new) - 2 * np.sum((w_new @ ck) * wo)) + ref
        errs.append(max(num, 0.0) / max(ref, 1e-30))
        _store(cg, node, inits, w_new, removed, kk)
    return float(f"{np.mean(errs):.4g}") if errs else 0.0


def _store(cg, node, inits, w_new: np.ndarray, removed: set, kk: int) -> None:
    """Scatter the re-fitted [Cout_kept, K_kept + 1] matrix into the original-layout weight and bias."""
    t = inits[node.input[1]]
    w = numpy_helper.to_array(t).astype(np.float64)
    m = _weight_matrix(node, w).copy()
    kin = np.repeat(cg.keep_mask(node.input[0], removed), kk)
    kout = cg.keep_mask(node.output[0], removed)
    m[np.ix_(kout, kin)] = w_new[:, :-1]
    m[:, ~kin] = 0.0
    t.CopyFrom(numpy_helper.from_array(_from_matrix(node, m, w.shape).astype(np.float32), t.name))
    bias = np.zeros(m.shape[0])
    if len(node.input) > 2 and node.input[2]:
        bt = inits[node.input[2]]
        bias = numpy_helper.to_array(bt).astype(np.float64).reshape(-1).copy()
    bias[kout] = w_new[:, -1]
    name = node.input[2] if len(node.input) > 2 and node.input[2] else f"{node.input[1]}__bias"
    bt = numpy_helper.from_array(bias.astype(np.float32), name)
    if name in inits:
        inits[name].CopyFrom(bt)
    else:
        cg.model.graph.initializer.append(bt)
        inits[name] = cg.model.graph.initializer[-1]
        while len(node.input) < 3:
            node.input.append("")
        node.input[2] = name
