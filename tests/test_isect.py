"""The host-read-free tile intersection (rasterizer/isect.py) against a brute-force loop
with gsplat's rules, its triton kernels against the torch twin (interpreter), overflow
and the capacity manager. CUDA: tests/test_rasterizer_cuda.py renders through it."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch

from splatlab.rasterizer.isect import IsectCapacity, cull_pairs, intersect, pad_key, triton_available
from test_rasterizer import thin_ellipses

TS = 16


def scene(seed: int, C: int = 2, N: int = 60, W: int = 75, H: int = 50):
    g = torch.Generator().manual_seed(seed)
    means2d = torch.rand(C, N, 2, generator=g) * torch.tensor([W * 1.4, H * 1.4]) - torch.tensor([W * 0.2, H * 0.2])
    radii = torch.randint(0, 30, (C, N, 2), generator=g, dtype=torch.int32)
    radii[:, ::7] = 0  # culled
    radii[0, 3] = torch.tensor([5, 0], dtype=torch.int32)  # one axis zero: culled too
    depths = torch.rand(C, N, generator=g) * 5 + 0.1
    depths[1, 5] = depths[1, 6]  # a tie
    return means2d, radii, depths, math.ceil(W / TS), math.ceil(H / TS)


def brute(means2d, radii, depths, tw, th):
    """Per tile of the padded grid: the sorted list of (depth, flat id), gsplat's rules
    (x0 = clamp(floor(mx/ts - rx/ts)), x1 = clamp(ceil(mx/ts + rx/ts)), exclusive)."""
    C, N = depths.shape
    tiles: dict[int, list] = {}
    for c in range(C):
        for i in range(N):
            rx, ry = int(radii[c, i, 0]), int(radii[c, i, 1])
            if rx <= 0 or ry <= 0:
                continue
            mx, my = float(means2d[c, i, 0]), float(means2d[c, i, 1])
            f32 = lambda v: float(torch.tensor(v, dtype=torch.float32))  # noqa: E731 - the kernel's float32
            x0 = min(max(0, math.floor(f32(f32(mx / TS) - f32(rx / TS)))), tw)
            x1 = min(max(0, math.ceil(f32(f32(mx / TS) + f32(rx / TS)))), tw)
            y0 = min(max(0, math.floor(f32(f32(my / TS) - f32(ry / TS)))), th)
            y1 = min(max(0, math.ceil(f32(f32(my / TS) + f32(ry / TS)))), th)
            for ty in range(y0, y1):
                for tx in range(x0, x1):
                    t = c * (th + 1) * tw + ty * tw + tx
                    tiles.setdefault(t, []).append((float(depths[c, i]), c * N + i))
    return {t: sorted(v) for t, v in tiles.items()}


def per_tile(res, depths, n_tiles: int) -> dict[int, list]:
    offs = res.offsets.reshape(-1).tolist() + [None]
    n = int(res.count)
    out = {}
    flat_depths = depths.reshape(-1)
    for t in range(n_tiles):
        end = offs[t + 1] if offs[t + 1] is not None else min(n, res.flatten_ids.numel())
        ids = res.flatten_ids[offs[t]:end].tolist()
        if ids:
            out[t] = sorted((float(flat_depths[i]), i) for i in ids)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_intersections_match_brute_force(seed):
    means2d, radii, depths, tw, th = scene(seed)
    res = intersect(means2d, radii, depths, TS, tw, th, capacity=1 << 14)
    C = depths.shape[0]
    expect = brute(means2d, radii, depths, tw, th)
    assert int(res.count) == sum(len(v) for v in expect.values())
    assert res.offsets.shape == (C, th + 1, tw) and res.offsets.dtype == torch.int32
    # The padding sits after every real entry, in the last tile (the last image's extra row).
    assert int(res.offsets.reshape(-1)[-1]) == int(res.count)
    assert per_tile(res, depths, C * (th + 1) * tw) == expect
    # Within a tile, front to back (depth ascending), as gsplat sorts.
    offs = res.offsets.reshape(-1)
    for t in range(C * (th + 1) * tw - 1):
        d = depths.reshape(-1)[res.flatten_ids[offs[t]:offs[t + 1]].long()]
        assert torch.all(d[1:] >= d[:-1])
    assert res.masks[:, :-1].all() and not res.masks[:, -1].any()
    assert torch.equal(res.tiles_per_gauss.long().sum(), res.count)


def test_overflow_keeps_the_first_entries_and_pads_the_rest():
    means2d, radii, depths, tw, th = scene(3)
    full = intersect(means2d, radii, depths, TS, tw, th, capacity=1 << 14)
    n = int(full.count)
    cap = n // 2
    part = intersect(means2d, radii, depths, TS, tw, th, capacity=cap)
    assert int(part.count) == n and part.flatten_ids.numel() == cap
    assert int(part.offsets.reshape(-1)[-1]) == cap  # no padding left
    # The kept entries are those of the lowest flat ids (written in order), a subset of the full set.
    kept = sorted(part.flatten_ids.tolist())
    every = sorted(full.flatten_ids[:n].tolist())
    assert kept == every[:cap]


def test_capacity_manager():
    mgr = IsectCapacity(margin=1.5, window=3)
    with pytest.raises(ValueError):
        mgr.capacity()
    reads = []
    assert mgr.capacity(lambda: reads.append(1) or 100_000) == 3 << 16  # 150k rounded up to 2^16
    assert mgr.capacity(lambda: reads.append(1) or 0) == 3 << 16 and reads == [1]  # read once
    mgr.record(torch.tensor(180_000), 3 << 16)  # fits
    assert mgr.overflows == 0 and mgr.capacity() == 5 << 16  # 270k -> 327,680
    mgr.record(torch.tensor(400_000), mgr.capacity())  # more than the capacity it was given
    assert mgr.overflows == 1 and mgr.capacity() == 10 << 16  # 600k -> 655,360
    for _ in range(4):
        mgr.record(torch.tensor(10), mgr.capacity())
    assert mgr.capacity() == 10 << 16  # never shrinks


def test_manager_drives_intersect():
    means2d, radii, depths, tw, th = scene(4)
    mgr = IsectCapacity()
    res = intersect(means2d, radii, depths, TS, tw, th, capacity=mgr)
    n = int(res.count)
    assert res.flatten_ids.numel() == mgr.capacity() >= n and mgr.overflows == 0


def test_pad_key_is_the_last_tile():
    assert pad_key(2, 5, 4) >> 32 == 2 * 5 * 5 - 1 and pad_key(2, 5, 4) & 0xFFFFFFFF == 0xFFFFFFFF


def ellipses(seed: int, C: int = 2, N: int = 150, W: int = 100, H: int = 70):
    """Thin, tilted projected Gaussians (conics with gsplat's 0.3 blur, opacities, gsplat's
    opacity-aware radii) and gsplat's sorted intersections of them, built by a loop:
    keys (image << (32 + tile bits)) | (tile << 32) | depth bits, flat ids c * N + i."""
    g = torch.Generator().manual_seed(seed)
    means2d = torch.rand(C, N, 2, generator=g) * torch.tensor([W, H])
    conics, opac, radii = thin_ellipses(g, (C, N), 3.0, torch.float32)
    radii = radii.int()
    depths = torch.rand(C, N, generator=g) + 0.5
    tw, th = math.ceil(W / TS), math.ceil(H / TS)
    bits = (tw * th).bit_length()
    entries = []
    for c in range(C):
        for i in range(N):
            mx, my = means2d[c, i].tolist()
            rx, ry = radii[c, i].tolist()
            d = int(depths[c, i].view(torch.int32))
            for ty in range(max(0, math.floor((my - ry) / TS)), min(th, math.ceil((my + ry) / TS))):
                for tx in range(max(0, math.floor((mx - rx) / TS)), min(tw, math.ceil((mx + rx) / TS))):
                    entries.append(((c << (32 + bits)) | ((ty * tw + tx) << 32) | d, c * N + i))
    entries.sort()
    keys = torch.tensor([e[0] for e in entries], dtype=torch.int64)
    ids = torch.tensor([e[1] for e in entries], dtype=torch.int32)
    return keys, ids, means2d, conics, opac, tw, th


@pytest.mark.parametrize("seed", [0, 1])
def test_cull_pairs_keeps_every_pair_that_reaches_a_pixel(seed):
    """gsplat-layout culling (the torch twin): kept pairs stay in order, every pair whose alpha
    reaches 1/255 at a pixel centre of its tile is kept, none that stays below it (minus the
    1% margin) anywhere in the tile's rectangle is."""
    keys, ids, means2d, conics, opac, tw, th = ellipses(seed)
    k2, i2 = cull_pairs(keys, ids, means2d, conics, opac, TS, tw, th)
    assert torch.all(k2[1:] >= k2[:-1]) and 0.5 * len(keys) < len(k2) < 0.95 * len(keys)
    kept = set(zip(k2.tolist(), i2.tolist()))
    assert kept <= set(zip(keys.tolist(), ids.tolist()))
    bits = (tw * th).bit_length()
    fine = torch.linspace(0.5, TS - 0.5, 8 * (TS - 1) + 1, dtype=torch.float64)
    for key, gid in zip(keys.tolist(), ids.tolist()):
        tile = (key >> 32) & ((1 << bits) - 1)
        x0, y0 = (tile % tw) * TS, (tile // tw) * TS
        mx, my = means2d.reshape(-1, 2)[gid].double()
        a, b, c = conics.reshape(-1, 3)[gid].double()
        dx, dy = x0 + fine[None, :] - mx, y0 + fine[:, None] - my
        alpha = opac.reshape(-1)[gid].double() * torch.exp(-(0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy))
        at_pixels = alpha[::8, ::8].max()
        if at_pixels >= 1 / 255:
            assert (key, gid) in kept
        if alpha.max() < 0.98 / 255:
            assert (key, gid) not in kept


_INTERPRETER_CHECK = """
import math, torch, sys
sys.path.insert(0, sys.argv[1])
from test_isect import ellipses, scene, TS
from splatlab.rasterizer import _isect_triton as k
from splatlab.rasterizer.isect import cull_pairs, isect_counts, pad_key, write_isects_torch
from splatlab.rasterizer.reference import TILE_TEST_MARGIN
for seed in (0, 1):
    means2d, radii, depths, tw, th = scene(seed)
    ref = isect_counts(means2d, radii, TS, tw, th)
    got = k.counts(means2d, radii, TS, tw, th)
    assert torch.equal(ref, got), (ref - got).abs().max()
    cum = torch.cumsum(ref.reshape(-1), 0)
    for cap in (1 << 12, int(cum[-1]) // 3):
        kt, it = write_isects_torch(means2d, radii, depths, ref, cum.reshape(ref.shape), cap, TS, tw, th)
        kk, ik = k.write(means2d, radii, depths, cum, cap, TS, tw, th, pad_key(2, tw, th))
        assert torch.equal(kt, kk) and torch.equal(it, ik), seed
    keys, ids, m2, con, op, tw, th = ellipses(seed)
    kt, it = cull_pairs(keys, ids, m2, con, op, TS, tw, th)  # the torch twin (CPU tensors)
    keep = k.touches(keys, ids, m2, con, op, TS, tw, (tw * th).bit_length(), math.log(1 / 255) - TILE_TEST_MARGIN)
    assert torch.equal(keys[keep], kt) and torch.equal(ids[keep], it), seed
print("isect-interpreter-ok")
"""


def test_triton_kernels_match_twin_in_interpreter():
    if not triton_available():
        pytest.skip("triton is not installed: `pip install triton` to check the intersection kernels on CPU")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    r = subprocess.run([sys.executable, "-c", _INTERPRETER_CHECK, os.path.dirname(__file__)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "isect-interpreter-ok" in r.stdout, r.stderr[-3000:]
