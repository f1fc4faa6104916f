"""What the schedule rules share: the target's vector shape and small block/loop helpers.

Rules read the vector width and register count from the target (not from the host), so an aarch64
module cross-compiled here gets NEON-shaped tiles.
"""
from __future__ import annotations

from dataclasses import dataclass


def is_scheduled(func) -> bool:
    """A PrimFunc that already has its schedule (tuned record, rule or sample): MetaSchedule and the rules
    leave it alone."""
    return func.attrs is not None and bool(func.attrs.get("tirx.is_scheduled", False))


@dataclass(frozen=True)
class VectorShape:
    lanes: int  # fp32 lanes in one vector register
    registers: int  # architectural vector registers
    cores: int  # threads the artifact will run on (parallel loops only when > 1)

    @property
    def accumulators(self) -> int:
        """Vector registers a micro-kernel may keep as accumulators: the rest hold the broadcast input,
        the weight vectors and addresses, as in MLAS's and TOPI's x86 kernels."""
        return max(4, self.registers - 8)


def vector_shape(target) -> VectorShape:
    """fp32 lanes and vector registers of an LLVM CPU target, from its triple and features."""
    attrs = target.attrs
    triple = str(attrs.get("mtriple", "") or "")
    cores = int(attrs.get("num-cores", 1) or 1)
    if triple.startswith(("aarch64", "arm64")):
        return VectorShape(4, 32, cores)  # NEON/ASIMD: 128-bit, v0-v31 (SVE's length is not static)
    if triple.startswith("arm"):
        return VectorShape(4, 16, cores)
    if triple.startswith(("riscv",)):
        return VectorShape(4, 32, cores)
    has = _llvm_features(target)
    if has("avx512f"):
        return VectorShape(16, 32, cores)
    if has("avx2") or has("avx"):
        return VectorShape(8, 16, cores)
    return VectorShape(4, 16, cores)


def _llvm_features(target):
    from tvm.target import codegen

    def has(feature: str) -> bool:
        try:
            return bool(codegen.llvm_cpu_has_features(feature, target))
        except Exception:  # noqa: BLE001 - a target LLVM cannot describe: assume the feature is absent
            return False

    return has


def largest_divisor(n: int, at_most: int) -> int:
    for d in range(max(1, min(n, at_most)), 0, -1):
        if n % d == 0:
            return d
    return 1


def vector_lanes_for(extent: int, lanes: int) -> int:
    """The widest vector (the target's, or a half or quarter of it) that divides `extent` without a tail;
    1 when none of at least 4 lanes does."""
    v = lanes
    while v >= 4:
        if extent % v == 0:
            return v
        v //= 2
    return 1


def inline_neighbours(sch, epilogue, producers, vs: VectorShape) -> None:
    """Inline every epilogue block but the last (scheduled on the tile) and each producer that is a plain
    copy (a padding-free "pad": reading the input directly costs nothing); a real pad becomes a
    vectorized copy of its own."""
    for b in epilogue[:-1]:
        sch.compute_inline(b)
    for p in producers:
        if is_plain_copy(sch.get(p)):
            sch.compute_inline(p)
        else:
            schedule_copy(sch, p, vs)


def split_channel_vectors(sch, loop, vs: VectorShape):
    """Split an output-channel loop into (outer, nf register vectors, fv lanes); returns the loops and
    nf, fv. nf is capped at 8 accumulators: GEMV-like blocks (dense, pooling) reuse no input across
    pixels, so more accumulators only lengthen the epilogue."""
    ext = int(sch.get(loop).extent)
    fv = vector_lanes_for(ext, vs.lanes)
    nf = largest_divisor(ext // fv, min(8, vs.accumulators))
    outer, vo, vi = sch.split(loop, [None, nf, fv])
    return (outer, vo, vi), nf, fv


def epilogue_on_tile(sch, blk, epilogue, at, nf: int, fv: int) -> None:
    """Compute the fused epilogue (bias, ReLU6, residual add) per register tile at loop `at`, vectorized
    like the tile, with the reduction's accumulators in a local (register) buffer."""
    if not epilogue:
        return
    sch.set_scope(blk, 0, "local")
    sch.reverse_compute_at(epilogue[-1], at, preserve_unit_loops=True)
    el = sch.get_loops(epilogue[-1])
    evo, evi = sch.split(el[-1], [nf, fv])
    sch.vectorize(evi)
    sch.unroll(evo)


def extents(sch, loops) -> list[int]:
    return [int(sch.get(lp).extent) for lp in loops]


def iter_kinds(block) -> str:
    """'S'/'R' per block iterator (data-parallel / reduction), e.g. 'SSSSRRR' for a convolution."""
    from tvm.tirx import IterVar

    return "".join("S" if iv.iter_type == IterVar.DataPar else "R" if iv.iter_type == IterVar.CommReduce else "?"
                   for iv in block.iter_vars)


def is_spatial(sch, block_rv) -> bool:
    return set(iter_kinds(sch.get(block_rv))) <= {"S"}


def register_tile(sch, block, depth: int) -> None:
    """Vectorize the innermost loop and unroll the `depth - 1` above it (skipping those already so)."""
    from tvm.tirx import ForKind

    loops = sch.get_loops(block)[-depth:]
    for i, lp in enumerate(reversed(loops)):
        kind = sch.get(lp).kind
        if i == 0 and kind != ForKind.VECTORIZED:
            sch.vectorize(lp)
        elif i > 0 and kind != ForKind.UNROLLED:
            sch.unroll(lp)


def is_plain_copy(block) -> bool:
    from tvm import tirx

    load = type(block.body.value) if isinstance(block.body, tirx.BufferStore) else None
    return load is not None and load.__name__ in ("BufferLoad", "TensorLoad")  # TVM 0.27 renamed the class


def schedule_copy(sch, block, vs: VectorShape) -> None:
    """A padding copy left at the root: vectorized along channels (the innermost axis), parallel over rows."""
    loops = sch.get_loops(block)
    c = loops[-1]
    v = vector_lanes_for(int(sch.get(c).extent), vs.lanes)
    if v > 1:
        _, ci = sch.split(c, [None, v])
        sch.vectorize(ci)
    if vs.cores > 1 and len(loops) >= 2:
        sch.parallel(sch.fuse(loops[0], loops[1]))
