"""Channel-last convolutions (NHWC data, HWIO weights): pointwise, depthwise and dense kxk, any stride.

One micro-kernel shape serves all three, the way TOPI's x86 NHWC schedules and MLAS's kernels do it:
an output tile of `nx` pixels of one row x `nf` vectors of output channels is kept in registers while
the reduction (kernel rows, kernel columns, input channels) runs outside it; each step broadcasts one
input value (pointwise, dense) or loads one input vector (depthwise: channels are contiguous in NHWC
for every stride) and issues `nx * nf` FMAs. The fused epilogue (bias, ReLU6, residual add) is
computed on the tile while it is still in registers. Padding stays a separate, vectorized copy: folding
it into the kernel would put a bounds check on every load.
"""
from __future__ import annotations

from dataclasses import dataclass

from edgec.backends.tvm.schedules.common import (
    VectorShape,
    extents,
    inline_neighbours,
    is_spatial,
    iter_kinds,
    largest_divisor,
    register_tile,
    vector_lanes_for,
)

# Output pixels per register tile: up to 8 (MLAS's SGEMM kernels use 6-12 rows), the largest divisor of
# the row width so no tile needs a bounds check (7 for 7-, 14- and 28-wide maps); when that leaves
# fewer than 4, the largest divisor that still fits the accumulator registers (13 for 13-wide maps).
MAX_TILE_PIXELS = 8


@dataclass(frozen=True)
class ConvMatch:
    kind: str  # "pointwise" | "depthwise" | "conv"
    block: object  # SBlockRV of the reduction
    producers: list  # SBlockRVs computed before it (padding copies)
    epilogue: list  # SBlockRVs after it, in order (bias, activation, residual add)


def match(sch) -> ConvMatch | None:
    """A function that is one NHWC/HWIO convolution plus elementwise blocks around it, found by block
    structure (iterators and access patterns), never by name."""
    from tvm import tirx
    from tvm.s_tir.dlight.analysis import collect_vars_used_in_prim_expr, get_root_block

    blocks = sch.get_child_blocks(get_root_block(sch))
    reductions = [b for b in blocks if not is_spatial(sch, b)]
    if len(reductions) != 1:
        return None
    conv_rv = reductions[0]
    conv = sch.get(conv_rv)
    if iter_kinds(conv) != "SSSSRRR" or len(conv.writes) != 1 or len(conv.reads) < 2:
        return None
    n, y, x, f, ry, rx, rc = (iv.var for iv in conv.iter_vars)
    out = conv.writes[0]
    if str(out.source.dtype) != "float32" or not _indices_are(out, [n, y, x, f]):
        return None
    body = conv.body
    if not (isinstance(body, tirx.BufferStore) and isinstance(body.value, tirx.Add)
            and isinstance(body.value.b, tirx.Mul)):
        return None
    weight = data = None
    for r in conv.reads:
        if r.source.same_as(out.source):
            continue
        idx = [rg.min for rg in r.region]
        if len(idx) != 4 or any(int(rg.extent) != 1 for rg in r.region):
            return None
        if _same(idx, [ry, rx, rc, f]):
            weight = r
        else:
            data = r
    if weight is None or data is None:
        return None
    d = [collect_vars_used_in_prim_expr(e) for e in (rg.min for rg in data.region)]
    if not (d[0] == {n} and d[1] == {y, ry} and d[2] == {x, rx}):
        return None
    krc = int(conv.iter_vars[6].dom.extent)
    if d[3] == {rc}:
        kind = "pointwise" if int(conv.iter_vars[4].dom.extent) == int(conv.iter_vars[5].dom.extent) == 1 \
            and _unit_stride(data.region[1].min, y) and _unit_stride(data.region[2].min, x) else "conv"
    elif d[3] <= {f, rc} and f in d[3] and krc == 1:
        kind = "depthwise"
    else:
        return None
    i = [b.same_as(conv_rv) for b in blocks].index(True)
    before, after = blocks[:i], blocks[i + 1:]
    if not after or not all(is_spatial(sch, b) for b in before + after):
        return None
    return ConvMatch(kind, conv_rv, list(before), list(after))


def _same(exprs, variables) -> bool:
    from tvm import tirx

    return len(exprs) == len(variables) and all(isinstance(e, tirx.Var) and e.same_as(v) for e, v in zip(exprs, variables))


def _indices_are(region, variables) -> bool:
    return all(int(rg.extent) == 1 for rg in region.region) and _same([rg.min for rg in region.region], variables)


def _unit_stride(expr, var) -> bool:
    from tvm import tirx

    return (isinstance(expr, tirx.Var) and expr.same_as(var)) or (
        isinstance(expr, tirx.Add) and any(isinstance(o, tirx.Var) and o.same_as(var) for o in (expr.a, expr.b)))


def schedule(sch, m: ConvMatch, vs: VectorShape) -> None:
    """Register-tiled, vectorized, epilogue-fused schedule for a matched convolution (in place)."""
    conv = m.block
    # The epilogue becomes one block (each elementwise step inlined into the next) computed per tile.
    inline_neighbours(sch, m.epilogue, m.producers, vs)
    epi = m.epilogue[-1]

    loops = sch.get_loops(conv)
    if len(loops) != 7:
        raise ValueError("convolution loops were expected to be one per iterator")
    n, y, x, f, ry, rx, rc = loops
    ext_x, ext_f = extents(sch, [x, f])
    ext_ry, ext_rx, ext_rc = extents(sch, [ry, rx, rc])
    fv = vector_lanes_for(ext_f, vs.lanes)
    nx = largest_divisor(ext_x, MAX_TILE_PIXELS)
    if nx < 4:  # a prime-ish width (13 in SqueezeNet): one whole row per tile rather than 1 pixel
        nx = largest_divisor(ext_x, vs.accumulators)
    nf = largest_divisor(ext_f // fv, max(1, vs.accumulators // nx))
    xo, xi = sch.split(x, [None, nx])
    fo, fvo, fvi = sch.split(f, [None, nf, fv])
    ext_y = extents(sch, [y])[0]
    # Which operand stays in cache across the outer loops: a pointwise layer whose weights outweigh its
    # input (late, narrow-spatial layers) walks output channels outermost so each weight slab is reused
    # by every pixel tile; otherwise pixels go outermost and each input row is reused by every channel tile.
    weights_first = m.kind != "depthwise" and ext_f > ext_y * ext_x  # (K x F weights vs. Y*X x K inputs)
    outer = [fo, n, y, xo] if weights_first else [n, y, xo, fo]
    sch.reorder(*outer, ry, rx, rc, xi, fvo, fvi)
    sch.set_scope(conv, 0, "local")  # the tile's accumulators: a stack array LLVM keeps in registers
    sch.reverse_compute_at(epi, outer[-1], preserve_unit_loops=True)
    _schedule_epilogue(sch, epi, fv, nf)
    # Loop annotations go on before the init is split off: the update block alone is no longer a
    # reduction the schedule checker accepts under a parallel loop.
    _parallel(sch, outer, vs)
    if ext_ry * ext_rx <= 25 and ext_rc <= 4:
        sch.unroll(rx)  # small kernels (3x3, 5x5, the stem's 3 channels): no loop overhead per tap
        if ext_rc > 1:
            sch.unroll(rc)
    # Register tile: unrolled pixels x unrolled vectors x vector lanes, for the update and the init.
    register_tile(sch, conv, 3)
    register_tile(sch, sch.decompose_reduction(conv, ry), 3)


def _schedule_epilogue(sch, epi, fv: int, nf: int) -> None:
    """The tile's epilogue loops are (n, y, x, f) over (1, 1, nx, nf * fv): same register tile shape."""
    loops = sch.get_loops(epi)
    f = loops[-1]
    fvo, fvi = sch.split(f, [nf, fv])
    sch.vectorize(fvi)
    sch.unroll(fvo)
    sch.unroll(loops[-2])


def _parallel(sch, outer, vs: VectorShape) -> None:
    if vs.cores <= 1:
        return
    sch.parallel(sch.fuse(outer[0], outer[1]))
