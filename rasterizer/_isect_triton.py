"""Triton kernels of the tile intersection (isect.py holds the layout and the torch twin).
One lane per projected Gaussian (C x N of them); the tile rectangle is computed the same
way in both kernels (`_rect`), as gsplat's intersect kernel does."""

from __future__ import annotations

from typing import no_type_check

import torch
import triton
import triton.language as tl

BLOCK = 256


@no_type_check
@triton.jit
def _rect(means_ptr, radii_ptr, offs, mask, TS: tl.constexpr, TW: tl.constexpr, TH: tl.constexpr):
    mx = tl.load(means_ptr + offs * 2, mask=mask, other=0.0)
    my = tl.load(means_ptr + offs * 2 + 1, mask=mask, other=0.0)
    rx = tl.load(radii_ptr + offs * 2, mask=mask, other=0)
    ry = tl.load(radii_ptr + offs * 2 + 1, mask=mask, other=0)
    tx, ty = mx / TS, my / TS
    fx, fy = rx.to(tl.float32) / TS, ry.to(tl.float32) / TS
    wf: tl.constexpr = TW * 1.0
    hf: tl.constexpr = TH * 1.0
    x0 = tl.minimum(tl.maximum(tl.floor(tx - fx), 0.0), wf).to(tl.int32)
    y0 = tl.minimum(tl.maximum(tl.floor(ty - fy), 0.0), hf).to(tl.int32)
    x1 = tl.minimum(tl.maximum(tl.ceil(tx + fx), 0.0), wf).to(tl.int32)
    y1 = tl.minimum(tl.maximum(tl.ceil(ty + fy), 0.0), hf).to(tl.int32)
    live = mask & (rx > 0) & (ry > 0)
    x1 = tl.where(live, x1, x0)
    y1 = tl.where(live, y1, y0)
    return x0, y0, x1, y1


@no_type_check
@triton.jit
def _counts_kernel(means_ptr, radii_ptr, out_ptr, M, TS: tl.constexpr, TW: tl.constexpr, TH: tl.constexpr,
                   BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    x0, y0, x1, y1 = _rect(means_ptr, radii_ptr, offs, mask, TS, TW, TH)
    tl.store(out_ptr + offs, (x1 - x0) * (y1 - y0), mask=mask)


@no_type_check
@triton.jit
def _write_kernel(means_ptr, radii_ptr, depth_ptr, cum_ptr, keys_ptr, ids_ptr, M, N, CAP, TS: tl.constexpr,
                  TW: tl.constexpr, TH: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    x0, y0, x1, y1 = _rect(means_ptr, radii_ptr, offs, mask, TS, TW, TH)
    w = tl.maximum(x1 - x0, 1)
    count = (x1 - x0) * (y1 - y0)
    end = tl.load(cum_ptr + offs, mask=mask, other=0)
    start = end - count.to(tl.int64)
    bits = tl.load(depth_ptr + offs, mask=mask, other=0.0).to(tl.int32, bitcast=True).to(tl.int64) & 0xFFFFFFFF
    image = (offs // N).to(tl.int64)
    row = image * ((TH + 1) * TW)
    for k in range(0, tl.max(count, 0)):
        tx = x0 + k % w
        ty = y0 + k // w
        slot = start + k
        ok = (k < count) & (slot < CAP)
        tile = row + (ty * TW + tx).to(tl.int64)
        tl.store(keys_ptr + slot, (tile << 32) | bits, mask=ok)
        tl.store(ids_ptr + slot, offs.to(tl.int32), mask=ok)


def counts(means2d, radii, tile_size: int, tile_width: int, tile_height: int):
    C, N = means2d.shape[:2]
    out = torch.empty(C, N, dtype=torch.int32, device=means2d.device)
    M = C * N
    if M:
        _counts_kernel[(triton.cdiv(M, BLOCK),)](means2d.contiguous(), radii.contiguous(), out, M, TS=tile_size,
                                                 TW=tile_width, TH=tile_height, BLOCK=BLOCK)
    return out


def write(means2d, radii, depths, cum, capacity: int, tile_size: int, tile_width: int, tile_height: int, pad: int):
    C, N = means2d.shape[:2]
    keys = torch.full((capacity,), pad, dtype=torch.int64, device=means2d.device)
    ids = torch.zeros(capacity, dtype=torch.int32, device=means2d.device)
    M = C * N
    if M:
        _write_kernel[(triton.cdiv(M, BLOCK),)](means2d.contiguous(), radii.contiguous(), depths.contiguous(), cum,
                                                keys, ids, M, N, capacity, TS=tile_size, TW=tile_width,
                                                TH=tile_height, BLOCK=BLOCK)
    return keys, ids


@no_type_check
@triton.jit
def _touch_kernel(keys_ptr, ids_ptr, means_ptr, conics_ptr, opac_ptr, out_ptr, M, LOG_THR, TILE_MASK,
                  TS: tl.constexpr, TW: tl.constexpr, BLOCK: tl.constexpr):
    # reference.tile_touches, one lane per (tile, Gaussian) pair of gsplat's sorted lists;
    # LOG_THR: log of the alpha threshold minus the tile test's margin.
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    key = tl.load(keys_ptr + offs, mask=mask, other=0)
    tile = ((key >> 32) & TILE_MASK).to(tl.int32)
    g = tl.load(ids_ptr + offs, mask=mask, other=0).to(tl.int64)
    mx = tl.load(means_ptr + g * 2, mask=mask, other=0.0)
    my = tl.load(means_ptr + g * 2 + 1, mask=mask, other=0.0)
    a = tl.load(conics_ptr + g * 3, mask=mask, other=1.0)
    b = tl.load(conics_ptr + g * 3 + 1, mask=mask, other=0.0)
    c = tl.load(conics_ptr + g * 3 + 2, mask=mask, other=1.0)
    op = tl.load(opac_ptr + g, mask=mask, other=1.0)
    x0 = (tile % TW).to(tl.float32) * TS + 0.5 - mx
    y0 = (tile // TW).to(tl.float32) * TS + 0.5 - my
    x1 = x0 + (TS - 1)
    y1 = y0 + (TS - 1)
    inside = (x0 <= 0) & (x1 >= 0) & (y0 <= 0) & (y1 >= 0)
    best = tl.where(inside, 0.0, float("inf"))
    dy = tl.minimum(tl.maximum(-b * x0 / c, y0), y1)
    best = tl.minimum(best, 0.5 * (a * x0 * x0 + c * dy * dy) + b * x0 * dy)
    dy = tl.minimum(tl.maximum(-b * x1 / c, y0), y1)
    best = tl.minimum(best, 0.5 * (a * x1 * x1 + c * dy * dy) + b * x1 * dy)
    dx = tl.minimum(tl.maximum(-b * y0 / a, x0), x1)
    best = tl.minimum(best, 0.5 * (a * dx * dx + c * y0 * y0) + b * dx * y0)
    dx = tl.minimum(tl.maximum(-b * y1 / a, x0), x1)
    best = tl.minimum(best, 0.5 * (a * dx * dx + c * y1 * y1) + b * dx * y1)
    keep = best <= tl.log(tl.maximum(op, 1e-30)) - LOG_THR
    tl.store(out_ptr + offs, keep.to(tl.int8), mask=mask)


def touches(keys, ids, means2d, conics, opacities, tile_size: int, tile_width: int, tile_bits: int, log_thr: float):
    M = keys.numel()
    out = torch.empty(M, dtype=torch.int8, device=keys.device)
    if M:
        _touch_kernel[(triton.cdiv(M, BLOCK),)](keys, ids, means2d.contiguous(), conics.contiguous(),
                                                opacities.contiguous(), out, M, log_thr, (1 << tile_bits) - 1,
                                                TS=tile_size, TW=tile_width, BLOCK=BLOCK)
    return out.view(torch.bool)
