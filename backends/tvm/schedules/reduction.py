"""Sum or max reductions over the spatial axes of a channel-last tensor: global average pooling
(`out[n, 1, 1, c] = sum_{h, w} x[n, h, w, c]`, then the division by h*w as epilogue) and windowed max
pooling (`out[n, y, x, c] = max_{ry, rx} pad[n, y*s + ry, x*s + rx, c]`, after its padding copy).

Channels are the contiguous axis of both input and output, so the channel loop goes innermost and is
vectorized, with a register tile of `nf` vectors accumulated over the whole window before it is stored.
"""
from __future__ import annotations

from dataclasses import dataclass

from edgec.backends.tvm.schedules.common import (
    VectorShape,
    epilogue_on_tile,
    inline_neighbours,
    is_spatial,
    iter_kinds,
    register_tile,
    split_channel_vectors,
)


@dataclass(frozen=True)
class ReductionMatch:
    block: object
    producers: list  # padding copies
    epilogue: list
    n_spatial: int


def match(sch) -> ReductionMatch | None:
    from tvm import tirx
    from tvm.s_tir.dlight.analysis import get_root_block

    blocks = sch.get_child_blocks(get_root_block(sch))
    reductions = [i for i, b in enumerate(blocks) if not is_spatial(sch, b)]
    if len(reductions) != 1:
        return None
    i = reductions[0]
    blk = sch.get(blocks[i])
    kinds = iter_kinds(blk)
    ns = kinds.count("S")
    if kinds != "S" * ns + "R" * (len(kinds) - ns) or ns < 2 or len(kinds) == ns or len(blk.writes) != 1:
        return None
    c = blk.iter_vars[ns - 1].var
    body = blk.body
    if not (isinstance(body, tirx.BufferStore) and isinstance(body.value, (tirx.Add, tirx.Max))):
        return None
    w = blk.writes[0]
    if str(w.source.dtype) != "float32" or not _last_is(w, c):
        return None
    others = [r for r in blk.reads if not r.source.same_as(w.source)]
    if len(others) != 1 or not _last_is(others[0], c):
        return None
    return ReductionMatch(blocks[i], list(blocks[:i]), list(blocks[i + 1:]), ns)


def _last_is(region, var) -> bool:
    from tvm import tirx

    last = region.region[-1]
    return int(last.extent) == 1 and isinstance(last.min, tirx.Var) and last.min.same_as(var)


def schedule(sch, m: ReductionMatch, vs: VectorShape) -> None:
    blk = m.block
    inline_neighbours(sch, m.epilogue, m.producers, vs)
    loops = sch.get_loops(blk)
    spatial, red = loops[:m.n_spatial], loops[m.n_spatial:]
    c = spatial[-1]
    (co, cvo, cv), nf, fv = split_channel_vectors(sch, c, vs)
    sch.reorder(*spatial[:-1], co, *red, cvo, cv)
    epilogue_on_tile(sch, blk, m.epilogue, co, nf, fv)
    register_tile(sch, blk, 2)  # before the init is split off (see conv.py)
    register_tile(sch, sch.decompose_reduction(blk, red[0]), 2)
