"""Functions without any reduction: elementwise arithmetic, casts, broadcasts, layout transposes,
reshapes, concatenations, pads, gathers (what TVM calls injective / broadcast / elemwise patterns).

Why a rule for these at all: without one they fell to the `sampled` MetaSchedule path, whose first
`TuneContext` imports every tensor intrinsic TVMScript defines (~10-20 s per process on this 2-core
machine) and then samples a design space, for functions that need no search: the design space MetaSchedule
builds for a reduction-free block is AutoInline + ParallelizeVectorizeUnroll, which is what this rule does
deterministically (as TOPI's `schedule_injective` does): inline every block that can be inlined into its
consumer, then flatten each remaining block's loops, vectorize the innermost part where a vector width divides
the extent (no tail, no predicate), and split off a parallel outer loop when the target has several cores and
the tensor is big enough to pay for the thread pool.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from edgec.backends.tvm.schedules.common import VectorShape, is_spatial, vector_lanes_for

_log = logging.getLogger(__name__)

# Elements per thread below which a parallel loop costs more (thread-pool wake-up, ~µs) than it saves.
PARALLEL_MIN_ELEMENTS = 16384


@dataclass(frozen=True)
class InjectiveMatch:
    blocks: list  # every block of the function, in order


def match(sch) -> InjectiveMatch | None:
    from tvm.s_tir.dlight.analysis import get_root_block

    blocks = sch.get_child_blocks(get_root_block(sch))
    if not blocks or not all(is_spatial(sch, b) for b in blocks):
        return None
    return InjectiveMatch(list(blocks))


def schedule(sch, m: InjectiveMatch, vs: VectorShape) -> None:
    from tvm.s_tir import ScheduleError
    from tvm.s_tir.dlight.analysis import get_root_block

    # Inline producers into consumers, last first, so a chain collapses into its output block. A block that
    # cannot be inlined (an output, one read with several access patterns) stays, and is scheduled below;
    # a failed primitive leaves the schedule unchanged.
    for b in reversed(m.blocks[:-1]):
        try:
            sch.compute_inline(b)
        except ScheduleError:
            pass
    for b in sch.get_child_blocks(get_root_block(sch)):
        loops = sch.get_loops(b)
        if not loops:  # a rank-0 result: one scalar store, nothing to schedule
            continue
        fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
        extent = int(sch.get(fused).extent)
        lanes = vector_lanes_for(extent, vs.lanes)
        threads = vs.cores if vs.cores > 1 and extent >= PARALLEL_MIN_ELEMENTS * 2 else 1
        if lanes > 1:
            outer, inner = sch.split(fused, [None, lanes])
            sch.vectorize(inner)
        else:
            outer = fused
        if threads > 1:
            sch.parallel(outer)
