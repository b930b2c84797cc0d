"""Triton kernels of the hash encoding (imported only when triton is used; see hashgrid.py
for the layout and the hash). One program handles BLOCK points of one level."""

from typing import no_type_check

import triton
import triton.language as tl


@no_type_check  # keeps pytest's jaxtyping import hook from wrapping the kernel (triton reads its globals)
@triton.jit
def _scaled(x_ptr, n_off, mask, r):
    # Shared by forward and backward: the point clamped to [0, 1], in grid units.
    px = tl.minimum(tl.maximum(tl.load(x_ptr + n_off * 3 + 0, mask=mask, other=0.0), 0.0), 1.0) * r
    py = tl.minimum(tl.maximum(tl.load(x_ptr + n_off * 3 + 1, mask=mask, other=0.0), 0.0), 1.0) * r
    pz = tl.minimum(tl.maximum(tl.load(x_ptr + n_off * 3 + 2, mask=mask, other=0.0), 0.0), 1.0) * r
    return px, py, pz

@no_type_check  # keeps pytest's jaxtyping import hook from wrapping the kernel (triton reads its globals)
@triton.jit
def _fwd(x_ptr, table_ptr, res_ptr, dense_ptr, out_ptr, N,
         T: tl.constexpr, L: tl.constexpr, F: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    lvl = tl.program_id(1)
    n_off = pid * BLOCK + tl.arange(0, BLOCK)
    mask = n_off < N
    ri = tl.load(res_ptr + lvl)
    dense = tl.load(dense_ptr + lvl) != 0
    r = ri.to(tl.float32)
    side = (ri + 1).to(tl.uint32)
    px, py, pz = _scaled(x_ptr, n_off, mask, r)
    x0 = tl.minimum(tl.floor(px), r - 1.0)
    y0 = tl.minimum(tl.floor(py), r - 1.0)
    z0 = tl.minimum(tl.floor(pz), r - 1.0)
    fx, fy, fz = px - x0, py - y0, pz - z0
    # uint32 arithmetic wraps like tiny-cuda-nn's (64-bit integer multiplies are emulated on
    # GPUs); only the low bits survive `& (T - 1)`, and a dense index of a level that fits
    # the table never overflows.
    ix, iy, iz = x0.to(tl.uint32), y0.to(tl.uint32), z0.to(tl.uint32)
    f_off = tl.arange(0, F)
    acc = tl.zeros((BLOCK, F), dtype=tl.float32)
    base = lvl.to(tl.int64) * T
    for corner in tl.static_range(8):
        bx = corner & 1
        by = (corner >> 1) & 1
        bz = (corner >> 2) & 1
        cx, cy, cz = ix + bx, iy + by, iz + bz
        w = (fx if bx else 1.0 - fx) * (fy if by else 1.0 - fy) * (fz if bz else 1.0 - fz)
        hashed = (cx ^ (cy * 2654435761) ^ (cz * 805459861)) & (T - 1)
        idx = tl.where(dense, cx + cy * side + cz * side * side, hashed).to(tl.int64) + base
        vals = tl.load(table_ptr + idx[:, None] * F + f_off[None, :], mask=mask[:, None], other=0.0)
        acc += w[:, None] * vals
    tl.store(out_ptr + n_off[:, None].to(tl.int64) * (L * F) + lvl * F + f_off[None, :], acc,
             mask=mask[:, None])

@no_type_check  # keeps pytest's jaxtyping import hook from wrapping the kernel (triton reads its globals)
@triton.jit
def _bwd(x_ptr, grad_out_ptr, res_ptr, dense_ptr, grad_table_ptr, N,
         T: tl.constexpr, L: tl.constexpr, F: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    lvl = tl.program_id(1)
    n_off = pid * BLOCK + tl.arange(0, BLOCK)
    mask = n_off < N
    ri = tl.load(res_ptr + lvl)
    dense = tl.load(dense_ptr + lvl) != 0
    r = ri.to(tl.float32)
    side = (ri + 1).to(tl.uint32)
    px, py, pz = _scaled(x_ptr, n_off, mask, r)
    x0 = tl.minimum(tl.floor(px), r - 1.0)
    y0 = tl.minimum(tl.floor(py), r - 1.0)
    z0 = tl.minimum(tl.floor(pz), r - 1.0)
    fx, fy, fz = px - x0, py - y0, pz - z0
    # uint32 arithmetic wraps like tiny-cuda-nn's (64-bit integer multiplies are emulated on
    # GPUs); only the low bits survive `& (T - 1)`, and a dense index of a level that fits
    # the table never overflows.
    ix, iy, iz = x0.to(tl.uint32), y0.to(tl.uint32), z0.to(tl.uint32)
    f_off = tl.arange(0, F)
    g = tl.load(grad_out_ptr + n_off[:, None].to(tl.int64) * (L * F) + lvl * F + f_off[None, :],
                mask=mask[:, None], other=0.0)
    base = lvl.to(tl.int64) * T
    for corner in tl.static_range(8):
        bx = corner & 1
        by = (corner >> 1) & 1
        bz = (corner >> 2) & 1
        cx, cy, cz = ix + bx, iy + by, iz + bz
        w = (fx if bx else 1.0 - fx) * (fy if by else 1.0 - fy) * (fz if bz else 1.0 - fz)
        hashed = (cx ^ (cy * 2654435761) ^ (cz * 805459861)) & (T - 1)
        idx = tl.where(dense, cx + cy * side + cz * side * side, hashed).to(tl.int64) + base
        # relaxed: nothing reads the gradient until the kernel ends, and the default acq_rel
        # ordering costs a fence per atomic.
        tl.atomic_add(grad_table_ptr + idx[:, None] * F + f_off[None, :], w[:, None] * g,
                      mask=mask[:, None], sem="relaxed")
