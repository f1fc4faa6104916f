"""Dense layers whose weights are stored (K, N), N contiguous: `out[i, j] = sum_k x[i, k] * w[k, j]`
(the classifier of a CNN after the frontend's MatMul import), plus its fused epilogue (bias).

At batch 1 this is a GEMV streaming the whole weight matrix once: each step broadcasts x[i, k] and
FMAs it into `nf` accumulator vectors of consecutive outputs, so the weights are read as contiguous
vectors exactly once and the accumulators never leave registers.
"""
from __future__ import annotations

from dataclasses import dataclass

from edgec.backends.tvm.schedules.common import (
    VectorShape,
    epilogue_on_tile,
    is_spatial,
    iter_kinds,
    register_tile,
    split_channel_vectors,
)


@dataclass(frozen=True)
class DenseMatch:
    block: object
    epilogue: list


def match(sch) -> DenseMatch | None:
    from tvm import tirx
    from tvm.s_tir.dlight.analysis import get_root_block

    blocks = sch.get_child_blocks(get_root_block(sch))
    if not blocks or is_spatial(sch, blocks[0]) or not all(is_spatial(sch, b) for b in blocks[1:]):
        return None
    blk = sch.get(blocks[0])
    if iter_kinds(blk) != "SSR" or len(blk.writes) != 1:
        return None
    i, j, k = (iv.var for iv in blk.iter_vars)
    body = blk.body
    if not (isinstance(body, tirx.BufferStore) and isinstance(body.value, tirx.Add) and isinstance(body.value.b, tirx.Mul)):
        return None
    if str(blk.writes[0].source.dtype) != "float32" or not _idx(blk.writes[0], [i, j]):
        return None
    others = [r for r in blk.reads if not r.source.same_as(blk.writes[0].source)]
    if len(others) != 2 or not any(_idx(r, [i, k]) for r in others) or not any(_idx(r, [k, j]) for r in others):
        return None
    return DenseMatch(blocks[0], list(blocks[1:]))


def _idx(region, variables) -> bool:
    from tvm import tirx

    idx = [rg.min for rg in region.region]
    return (len(idx) == len(variables) and all(int(rg.extent) == 1 for rg in region.region)
            and all(isinstance(e, tirx.Var) and e.same_as(v) for e, v in zip(idx, variables)))


def schedule(sch, m: DenseMatch, vs: VectorShape) -> None:
    blk = m.block
    for b in m.epilogue[:-1]:
        sch.compute_inline(b)
    i, j, k = sch.get_loops(blk)
    (jo, jvo, jv), nf, fv = split_channel_vectors(sch, j, vs)
    sch.reorder(i, jo, k, jvo, jv)
    epilogue_on_tile(sch, blk, m.epilogue, jo, nf, fv)
    if vs.cores > 1:
        sch.parallel(sch.fuse(i, jo))
    register_tile(sch, blk, 2)  # before the init is split off (see conv.py)
    register_tile(sch, sch.decompose_reduction(blk, k), 2)
