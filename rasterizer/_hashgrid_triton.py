"""Triton kernels of the hash encoding (imported only when triton is used; see hashgrid.py
for the layout, the hash and the kernel variants). A program handles BLOCK points of LPP
consecutive levels; the grid is (points / BLOCK, L / LPP), points fastest, so the programs
running at one time touch LPP levels' tables (4 MB each at nerfacto size), which stay in L2.

Constexpr switches (hashgrid.HashKernelConfig chooses them):
- PACK (F == 2 only): a table entry, an output pair and a gradient pair move as one 64-bit
  access; without it a [BLOCK, F] tile is split over two lanes per point (scalar accesses).
- V2 (with PACK, sm_90+): the backward adds a pair with one `red.global.add.v2.f32`
  instead of two scalar atomics (inline PTX: never used under TRITON_INTERPRET).
- XPAIR (with PACK): the two x-neighbouring corners are read (forward, ASM) or added
  (backward, V2) with one 16-byte access when they share an aligned pair of entries (about
  half the time), else two.
- ASM: the forward may use inline PTX (compiled kernels; never under TRITON_INTERPRET).
- REPS > 1: the backward scatters the first NREP (coarse, densely indexed, hence tiny and
  hotly contended) levels into REPS copies, program i into copy i % REPS; the caller sums them.
- TAB_EV / STREAM_EV: eviction hints for the table gathers and for the streamed points,
  outputs and incoming gradients ("" = none).
"""

from typing import no_type_check

import triton
import triton.language as tl


@no_type_check  # keeps pytest's jaxtyping import hook from wrapping the kernel (triton reads its globals)
@triton.jit
def _points(x_ptr, n_off, mask, EV: tl.constexpr):
    # The points clamped to [0, 1] (read once per program, whatever LPP is).
    px = tl.load(x_ptr + n_off * 3 + 0, mask=mask, other=0.0, eviction_policy=EV)
    py = tl.load(x_ptr + n_off * 3 + 1, mask=mask, other=0.0, eviction_policy=EV)
    pz = tl.load(x_ptr + n_off * 3 + 2, mask=mask, other=0.0, eviction_policy=EV)
    return (tl.minimum(tl.maximum(px, 0.0), 1.0), tl.minimum(tl.maximum(py, 0.0), 1.0),
            tl.minimum(tl.maximum(pz, 0.0), 1.0))


@no_type_check
@triton.jit
def _block(x_ptr, rows_ptr, N, BLOCK: tl.constexpr, ROW: tl.constexpr, EV: tl.constexpr):
    """This program's points: (pid, row in block, mask, clamped x y z, the start of its
    block of ROW-float rows (64-bit once; in-block offsets stay int32))."""
    pid = tl.program_id(0)
    rows = tl.arange(0, BLOCK)
    n_off = pid * BLOCK + rows
    mask = n_off < N
    px, py, pz = _points(x_ptr, n_off, mask, EV)
    return pid, rows, mask, px, py, pz, rows_ptr + (pid * BLOCK).to(tl.int64) * ROW


@no_type_check
@triton.jit
def _cell(px, py, pz, res_ptr, dense_ptr, lvl):
    """The cell of each point at level `lvl`: its lower vertex and the fractions inside."""
    ri = tl.load(res_ptr + lvl)
    dense = tl.load(dense_ptr + lvl) != 0
    r = ri.to(tl.float32)
    sx, sy, sz = px * r, py * r, pz * r
    x0 = tl.minimum(tl.floor(sx), r - 1.0)
    y0 = tl.minimum(tl.floor(sy), r - 1.0)
    z0 = tl.minimum(tl.floor(sz), r - 1.0)
    # uint32 arithmetic wraps like tiny-cuda-nn's (64-bit integer multiplies are emulated on
    # GPUs); only the low bits survive `& (T - 1)`, and a dense index of a level that fits
    # the table never overflows.
    return (x0.to(tl.uint32), y0.to(tl.uint32), z0.to(tl.uint32), sx - x0, sy - y0, sz - z0,
            (ri + 1).to(tl.uint32), dense)


@no_type_check
@triton.jit
def _corner(ix, iy, iz, fx, fy, fz, side, dense, corner: tl.constexpr, T: tl.constexpr):
    """Entry index (int32, within the level) and trilinear weight of corner
    c = bx + 2 by + 4 bz: the one place forward and backward index the table."""
    bx: tl.constexpr = corner & 1
    by: tl.constexpr = (corner >> 1) & 1
    bz: tl.constexpr = (corner >> 2) & 1
    cx, cy, cz = ix + bx, iy + by, iz + bz
    w = (fx if bx else 1.0 - fx) * (fy if by else 1.0 - fy) * (fz if bz else 1.0 - fz)
    hashed = (cx ^ (cy * 2654435761) ^ (cz * 805459861)) & (T - 1)
    return tl.where(dense, cx + cy * side + cz * side * side, hashed).to(tl.int32), w


@no_type_check
@triton.jit
def _unpack(v):
    """A 64-bit word -> its two float32 halves (little-endian: feature 0 is the low half)."""
    lo = v.to(tl.uint32).to(tl.float32, bitcast=True)
    hi = (v >> 32).to(tl.uint32).to(tl.float32, bitcast=True)
    return lo, hi


@no_type_check
@triton.jit
def _pack(lo, hi):
    return (hi.to(tl.uint32, bitcast=True).to(tl.uint64) << 32) | lo.to(tl.uint32, bitcast=True).to(tl.uint64)


@no_type_check
@triton.jit
def _red_add_v2(ptr, a, b):
    # One 8-byte reduction instead of two 4-byte ones (PTX ISA 8.1, sm_90). The dummy output
    # is there because inline asm must return something; is_pure=False keeps it alive. The
    # address goes in as an integer (inline asm arguments are type-checked like arithmetic).
    tl.inline_asm_elementwise("red.global.add.v2.f32 [$1], {$2, $3};\n\tmov.b32 $0, 0;", "=r,l,f,f",
                              [ptr.to(tl.int64), a, b], dtype=tl.int32, is_pure=False, pack=1)


@no_type_check
@triton.jit
def _red_add_pair(paired, pa, pb, a0, a1, b0, b1):
    # Entries A (at pa) and B (at pb): one 16-byte reduction when they are the two halves of
    # an aligned pair (pb = pa + 2 floats), else two 8-byte ones.
    tl.inline_asm_elementwise(
        "{\n\t.reg .pred p;\n\tsetp.ne.b32 p, $1, 0;\n\t@p red.global.add.v4.f32 [$2], {$4, $5, $6, $7};"
        "\n\t@!p red.global.add.v2.f32 [$2], {$4, $5};\n\t@!p red.global.add.v2.f32 [$3], {$6, $7};"
        "\n\tmov.b32 $0, 0;\n\t}",
        "=r,r,l,l,f,f,f,f", [paired.to(tl.int32), pa.to(tl.int64), pb.to(tl.int64), a0, a1, b0, b1],
        dtype=tl.int32, is_pure=False, pack=1)


@no_type_check
@triton.jit
def _ld_pair(paired, pa, pb):
    # Entries A (at pa) and B (at pb): one 16-byte load when they are the two halves of an
    # aligned pair, else two 8-byte ones.
    return tl.inline_asm_elementwise(
        "{\n\t.reg .pred p;\n\tsetp.ne.b32 p, $4, 0;\n\t@p ld.global.v4.f32 {$0, $1, $2, $3}, [$5];"
        "\n\t@!p ld.global.v2.f32 {$0, $1}, [$5];\n\t@!p ld.global.v2.f32 {$2, $3}, [$6];\n\t}",
        "=f,=f,=f,=f,r,l,l", [paired.to(tl.int32), pa.to(tl.int64), pb.to(tl.int64)],
        dtype=(tl.float32, tl.float32, tl.float32, tl.float32), is_pure=True, pack=1)


@no_type_check
@triton.jit
def _x_pair(tab, ix, iy, iz, fx, fy, fz, side, dense, yz: tl.constexpr, T: tl.constexpr):
    """Corners 2 yz and 2 yz + 1, x-neighbours i0, i1 (F == 2), as entries A, B (pointers into
    `tab`) with weights wa, wb; `paired` when they share an aligned 16-byte pair. About
    half the time they are the two halves of a 16-byte-aligned pair (hashed: i1 = i0 ^ 1
    when x is even, the first prime being 1; dense: i1 = i0 + 1 with i0 even): then A is the
    lower one and B = A + 2 floats, so one 16-byte access serves both."""
    i0, w0 = _corner(ix, iy, iz, fx, fy, fz, side, dense, 2 * yz, T)
    i1, w1 = _corner(ix, iy, iz, fx, fy, fz, side, dense, 2 * yz + 1, T)
    paired = i1 == (i0 ^ 1)
    swap = paired & ((i0 & 1) != 0)
    pa = tab + tl.where(swap, i1, i0) * 2
    pb = tl.where(paired, pa + 2, tab + i1 * 2)
    return paired, pa, pb, tl.where(swap, w1, w0), tl.where(swap, w0, w1)


@no_type_check
@triton.jit
def _fwd(x_ptr, table_ptr, res_ptr, dense_ptr, out_ptr, N,
         T: tl.constexpr, L: tl.constexpr, F: tl.constexpr, BLOCK: tl.constexpr, LPP: tl.constexpr,
         PACK: tl.constexpr, XPAIR: tl.constexpr, ASM: tl.constexpr, TAB_EV: tl.constexpr,
         STREAM_EV: tl.constexpr):
    pid, rows, mask, px, py, pz, out_blk = _block(x_ptr, out_ptr, N, BLOCK, L * F, STREAM_EV)
    for j in tl.static_range(LPP):
        lvl = tl.program_id(1) * LPP + j
        ix, iy, iz, fx, fy, fz, side, dense = _cell(px, py, pz, res_ptr, dense_ptr, lvl)
        tab = table_ptr + lvl.to(tl.int64) * (T * F)
        if PACK:
            tab2 = tab.to(tl.pointer_type(tl.uint64))
            a0 = tl.zeros((BLOCK,), dtype=tl.float32)
            a1 = tl.zeros((BLOCK,), dtype=tl.float32)
            if XPAIR:
                for yz in tl.static_range(4):
                    paired, pa, pb, wa, wb = _x_pair(tab, ix, iy, iz, fx, fy, fz, side, dense, yz, T)
                    if ASM:
                        va0, va1, vb0, vb1 = _ld_pair(paired, pa, pb)
                    else:  # the same addresses, so the interpreter checks the pairing
                        va0, va1 = _unpack(tl.load(pa.to(tl.pointer_type(tl.uint64)), mask=mask, other=0))
                        vb0, vb1 = _unpack(tl.load(pb.to(tl.pointer_type(tl.uint64)), mask=mask, other=0))
                    a0 += wa * va0 + wb * vb0
                    a1 += wa * va1 + wb * vb1
            for corner in tl.static_range(0 if XPAIR else 8):
                idx, w = _corner(ix, iy, iz, fx, fy, fz, side, dense, corner, T)
                v0, v1 = _unpack(tl.load(tab2 + idx, mask=mask, other=0, eviction_policy=TAB_EV))
                a0 += w * v0
                a1 += w * v1
            tl.store(out_blk.to(tl.pointer_type(tl.uint64)) + rows * L + lvl, _pack(a0, a1), mask=mask,
                     eviction_policy=STREAM_EV)
        else:
            f_off = tl.arange(0, F)
            acc = tl.zeros((BLOCK, F), dtype=tl.float32)
            for corner in tl.static_range(8):
                idx, w = _corner(ix, iy, iz, fx, fy, fz, side, dense, corner, T)
                vals = tl.load(tab + idx[:, None] * F + f_off[None, :], mask=mask[:, None], other=0.0,
                               eviction_policy=TAB_EV)
                acc += w[:, None] * vals
            tl.store(out_blk + rows[:, None] * (L * F) + lvl * F + f_off[None, :], acc, mask=mask[:, None],
                     eviction_policy=STREAM_EV)


@no_type_check
@triton.jit
def _bwd(x_ptr, grad_out_ptr, res_ptr, dense_ptr, grad_ptr, N, NREP,
         T: tl.constexpr, L: tl.constexpr, F: tl.constexpr, BLOCK: tl.constexpr, LPP: tl.constexpr,
         PACK: tl.constexpr, V2: tl.constexpr, XPAIR: tl.constexpr, REPS: tl.constexpr, S: tl.constexpr,
         STREAM_EV: tl.constexpr):
    # grad_ptr: the L x T x F table gradient, then (REPS > 1) REPS x NREP x S x F copies.
    pid, rows, mask, px, py, pz, go_blk = _block(x_ptr, grad_out_ptr, N, BLOCK, L * F, STREAM_EV)
    for j in tl.static_range(LPP):
        lvl = tl.program_id(1) * LPP + j
        ix, iy, iz, fx, fy, fz, side, dense = _cell(px, py, pz, res_ptr, dense_ptr, lvl)
        base = lvl.to(tl.int64) * (T * F)
        if REPS > 1:
            copy = ((pid % REPS) * NREP + lvl).to(tl.int64) * (S * F) + L * T * F
            base = tl.where(lvl < NREP, copy, base)
        gtab = grad_ptr + base
        # Masked-out lanes read x = 0 and a zero gradient: their indices are valid and they add
        # zeros, so the atomics need no mask (the inline-asm one has none).
        if PACK:
            g0, g1 = _unpack(tl.load(go_blk.to(tl.pointer_type(tl.uint64)) + rows * L + lvl, mask=mask, other=0,
                                     eviction_policy=STREAM_EV))
            if XPAIR:
                for yz in tl.static_range(4):
                    paired, pa, pb, wa, wb = _x_pair(gtab, ix, iy, iz, fx, fy, fz, side, dense, yz, T)
                    if V2:
                        _red_add_pair(paired, pa, pb, wa * g0, wa * g1, wb * g0, wb * g1)
                    else:  # the same addresses, so the interpreter checks the pairing
                        tl.atomic_add(pa, wa * g0, mask=mask, sem="relaxed")
                        tl.atomic_add(pa + 1, wa * g1, mask=mask, sem="relaxed")
                        tl.atomic_add(pb, wb * g0, mask=mask, sem="relaxed")
                        tl.atomic_add(pb + 1, wb * g1, mask=mask, sem="relaxed")
            for corner in tl.static_range(0 if XPAIR else 8):
                idx, w = _corner(ix, iy, iz, fx, fy, fz, side, dense, corner, T)
                p = gtab + idx * 2
                if V2:
                    _red_add_v2(p, w * g0, w * g1)
                else:
                    # relaxed: nothing reads the gradient until the kernel ends, and the
                    # default acq_rel ordering costs a fence per atomic.
                    tl.atomic_add(p, w * g0, mask=mask, sem="relaxed")
                    tl.atomic_add(p + 1, w * g1, mask=mask, sem="relaxed")
        else:
            f_off = tl.arange(0, F)
            g = tl.load(go_blk + rows[:, None] * (L * F) + lvl * F + f_off[None, :], mask=mask[:, None],
                        other=0.0, eviction_policy=STREAM_EV)
            for corner in tl.static_range(8):
                idx, w = _corner(ix, iy, iz, fx, fy, fz, side, dense, corner, T)
                tl.atomic_add(gtab + idx[:, None] * F + f_off[None, :], w[:, None] * g, mask=mask[:, None],
                              sem="relaxed")
