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
