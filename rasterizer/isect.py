"""Tile intersection without a host read: gsplat's `isect_tiles` + `isect_offset_encode`
for `packed=False`, sized by a capacity instead of the exact count.

gsplat counts each projected Gaussian's tiles, reads the total back to the host to size
its buffers and sort, and so makes the host wait for the GPU once per render. Here the
buffers have a capacity chosen on the host from the counts of earlier renders (read back
later, without waiting: `IsectCapacity`), the unused tail holds padding entries, and the
padding is kept out of every image by one extra, empty tile row:

- the tile grid is `C x (TH + 1) x TW`; real intersections use rows 0..TH-1, whose tiles
  are gsplat's, and padding entries use the last tile of the last image's extra row.
  Keys are `(global tile << 32) | depth bits` (gsplat's layout with the extra row's
  tiles in the numbering), so one sort orders tiles, then depth front to back, as gsplat.
- gsplat's rasterizer takes its tile grid from the offsets' shape and the end of the last
  tile from the number of entries: the padding therefore lands in that extra tile, whose
  pixels lie below the image (the forward stops there at once) and which a tile mask
  switches off (the backward skips it).

If a render has more intersections than the capacity, the entries past it are dropped
(the image loses the last Gaussians' tiles for that render); the capacity manager sees
the true count a step later, counts the overflow and grows. `exact=True` sizes the
capacity from a host read instead (gsplat's behaviour: one sync, nothing dropped).

Two implementations: triton kernels (`_isect_triton.py`) for CUDA tensors, and a torch
twin (the CPU path and the oracle of tests/test_isect.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .hashgrid import triton_available

PAD_DEPTH = 0xFFFFFFFF


def tile_rect(means2d: Float[Tensor, "... 2"], radii: Int[Tensor, "... 2"], tile_size: int, tile_width: int,
              tile_height: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(x0, y0, x1, y1) int64: the tiles a projected Gaussian touches, x0 inclusive and
    x1 exclusive, as gsplat's intersect kernel (floor/ceil of mean/tile -+ radius/tile,
    clamped to the grid); empty for a Gaussian with a zero radius."""
    r = radii.to(means2d.dtype) / tile_size
    t = means2d / tile_size
    lo = torch.floor(t - r)
    hi = torch.ceil(t + r)
    lim = torch.tensor([tile_width, tile_height], dtype=means2d.dtype, device=means2d.device)
    lo = torch.minimum(torch.clamp_min(lo, 0), lim).long()
    hi = torch.minimum(torch.clamp_min(hi, 0), lim).long()
    live = (radii > 0).all(-1, keepdim=True)
    hi = torch.where(live, hi, lo)
    return lo[..., 0], lo[..., 1], hi[..., 0], hi[..., 1]


def isect_counts(means2d: Float[Tensor, "C N 2"], radii: Int[Tensor, "C N 2"], tile_size: int,
                 tile_width: int, tile_height: int) -> Int[Tensor, "C N"]:
    """Tiles per projected Gaussian (int32), as gsplat's `tiles_per_gauss`."""
    if means2d.is_cuda and triton_available():
        from ._isect_triton import counts

        return counts(means2d, radii, tile_size, tile_width, tile_height)
    x0, y0, x1, y1 = tile_rect(means2d, radii, tile_size, tile_width, tile_height)
    return ((x1 - x0) * (y1 - y0)).int()


def pad_key(n_images: int, tile_width: int, tile_height: int) -> int:
    """The padding entries' key: the last tile of the last image's extra row, deepest."""
    return ((n_images * (tile_height + 1) * tile_width - 1) << 32) | PAD_DEPTH


def write_isects_torch(means2d, radii, depths, counts, cum, capacity: int, tile_size: int, tile_width: int,
                       tile_height: int) -> tuple[Tensor, Tensor]:
    """Torch twin of the key/id writer: (keys int64, flat ids int32), `capacity` long,
    entries of Gaussian i at [cum[i] - counts[i], cum[i]) in row-major tile order, the
    ones past `capacity` dropped, the rest padding."""
    C, N = counts.shape
    flat_counts = counts.reshape(-1).long()
    n = int(flat_counts.sum())
    owner = torch.repeat_interleave(torch.arange(C * N, device=counts.device), flat_counts)
    start = (cum.reshape(-1) - flat_counts)[owner]
    k = torch.arange(n, device=counts.device) - start
    x0, y0, x1, _ = (v.reshape(-1)[owner] for v in tile_rect(means2d, radii, tile_size, tile_width, tile_height))
    w = (x1 - x0).clamp_min(1)
    tx, ty = x0 + k % w, y0 + k // w
    image = owner // N
    tile = image * (tile_height + 1) * tile_width + ty * tile_width + tx
    bits = depths.reshape(-1)[owner].float().contiguous().view(torch.int32).long() & PAD_DEPTH
    keys = torch.full((capacity,), pad_key(C, tile_width, tile_height), dtype=torch.int64, device=counts.device)
    ids = torch.zeros(capacity, dtype=torch.int32, device=counts.device)
    m = min(n, capacity)
    keys[:m] = ((tile << 32) | bits)[:m]
    ids[:m] = owner[:m].int()
    return keys, ids


@dataclass
class Intersections:
    """What gsplat's rasterizer takes: offsets `C x (TH + 1) x TW` (int32), flatten ids
    (int32, `capacity` long), the tile mask (False on the extra row), and the count
    (a device scalar: the true number, which may exceed the capacity)."""

    offsets: Tensor
    flatten_ids: Tensor
    masks: Tensor
    count: Tensor
    tiles_per_gauss: Tensor


_BOUNDARIES: dict = {}
_MASKS: dict = {}


def intersect(means2d: Float[Tensor, "C N 2"], radii: Int[Tensor, "C N 2"], depths: Float[Tensor, "C N"],
              tile_size: int, tile_width: int, tile_height: int, capacity: "int | IsectCapacity") -> Intersections:
    """Sort the intersections into `capacity` slots (a number, or an `IsectCapacity`
    that chooses it and is told the true count) and encode per-tile offsets, with no
    host read (see the module docstring)."""
    C = means2d.shape[0]
    counts = isect_counts(means2d, radii, tile_size, tile_width, tile_height)
    cum = torch.cumsum(counts.reshape(-1), 0)
    manager = capacity if isinstance(capacity, IsectCapacity) else None
    if manager is not None:
        capacity = manager.capacity(lambda: cum[-1].item())
    if means2d.is_cuda and triton_available():
        from ._isect_triton import write

        keys, ids = write(means2d, radii, depths, cum, capacity, tile_size, tile_width, tile_height,
                          pad_key(C, tile_width, tile_height))
    else:
        keys, ids = write_isects_torch(means2d, radii, depths, counts, cum.reshape(counts.shape), capacity,
                                       tile_size, tile_width, tile_height)
    sorted_keys, order = torch.sort(keys)
    flatten_ids = ids[order]
    n_tiles = C * (tile_height + 1) * tile_width
    key = (n_tiles, str(means2d.device))
    bounds = _BOUNDARIES.get(key)
    if bounds is None:
        bounds = _BOUNDARIES[key] = torch.arange(n_tiles, dtype=torch.int64, device=means2d.device)
    offsets = torch.searchsorted(sorted_keys >> 32, bounds, out_int32=True).reshape(C, tile_height + 1, tile_width)
    mkey = (C, tile_height, tile_width, str(means2d.device))
    masks = _MASKS.get(mkey)
    if masks is None:
        masks = torch.ones(C, tile_height + 1, tile_width, dtype=torch.bool, device=means2d.device)
        masks[:, -1] = False
        _MASKS[mkey] = masks
    if manager is not None:
        manager.record(cum[-1], capacity)
    return Intersections(offsets, flatten_ids, masks, cum[-1], counts)


def cull_pairs(isect_ids: Int[Tensor, " M"], flatten_ids: Int[Tensor, " M"], means2d: Float[Tensor, "C N 2"],
               conics: Float[Tensor, "C N 3"], opacities: Float[Tensor, "C N"], tile_size: int, tile_width: int,
               tile_height: int) -> tuple[Tensor, Tensor]:
    """gsplat's sorted intersections (`isect_tiles`, packed=False) without the pairs whose tile
    the Gaussian's alpha >= 1/255 ellipse misses (`reference.tile_touches`): the same pixels and
    gradients from fewer pairs. The order is kept, so `isect_offset_encode` applies as before.
    Compacting reads the kept count back to the host (one more sync a render)."""
    from .reference import ALPHA_THRESHOLD, TILE_TEST_MARGIN, tile_touches

    tile_bits = (tile_width * tile_height).bit_length()  # gsplat's floor(log2(n_tiles)) + 1
    if isect_ids.is_cuda and triton_available():
        from ._isect_triton import touches

        keep = touches(isect_ids, flatten_ids, means2d.detach(), conics.detach(), opacities.detach(), tile_size,
                       tile_width, tile_bits, math.log(ALPHA_THRESHOLD) - TILE_TEST_MARGIN)
    else:
        tile = (isect_ids >> 32) & ((1 << tile_bits) - 1)
        g = flatten_ids.long()
        keep = tile_touches(means2d.reshape(-1, 2)[g], conics.reshape(-1, 3)[g], opacities.reshape(-1)[g],
                            tile % tile_width, torch.div(tile, tile_width, rounding_mode="floor"), tile_size)
    idx = keep.nonzero().squeeze(1)
    return isect_ids[idx], flatten_ids[idx]


@dataclass
class IsectCapacity:
    """Host-side capacity of the intersection buffers across renders (one per training run).

    `capacity()` is `margin` x the largest count seen in the last `window` renders whose
    counts have arrived (rounded up to 2^16), never less than before; the first render
    (nothing seen yet) reads its count synchronously. `record(count)` copies a render's
    device count into pinned memory without waiting; `poll()` collects the arrived ones and
    counts overflows (a render whose count exceeded the capacity it had)."""

    margin: float = 1.5
    window: int = 500
    overflows: int = 0
    _cap: int = 0
    _seen: list = field(default_factory=list)
    _pending: list = field(default_factory=list)

    def capacity(self, exact_count=None) -> int:
        self.poll()
        if not self._cap:
            if exact_count is None:
                raise ValueError("the first render needs its exact count")
            n = int(exact_count())  # one host read, once
            self._seen.append(n)
            self._cap = self._round(n * self.margin)
        return self._cap

    def record(self, count: Tensor, used_capacity: int) -> None:
        if count.is_cuda:
            host = torch.empty((), dtype=count.dtype, pin_memory=True)
            host.copy_(count, non_blocking=True)
            ev = torch.cuda.Event()
            ev.record()
            self._pending.append((ev, host, used_capacity))
        else:
            self._pending.append((None, count.clone(), used_capacity))
        self.poll()

    def poll(self) -> None:
        while self._pending:
            ev, host, used = self._pending[0]
            if ev is not None and not ev.query():
                break
            self._pending.pop(0)
            n = int(host)
            if n > used:
                self.overflows += 1
            self._seen.append(n)
            if len(self._seen) > self.window:
                del self._seen[: len(self._seen) - self.window]
            self._cap = max(self._cap, self._round(max(self._seen) * self.margin))

    @staticmethod
    def _round(n: float) -> int:
        step = 1 << 16
        return max(step, int(math.ceil(n / step)) * step)


__all__ = ["Intersections", "IsectCapacity", "cull_pairs", "intersect", "isect_counts", "pad_key", "tile_rect",
           "write_isects_torch"]
