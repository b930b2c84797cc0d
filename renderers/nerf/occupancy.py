"""Instant-NGP's occupancy-grid sampler for bounded scenes, in pure torch.

A grid of `resolution`^3 cells over the box holds, per cell, an exponential moving maximum
of the field's density x marching step (`ema`) and whether it is worth sampling
(`binary`). Rays march through the box at a fixed step and keep the samples whose cell is
occupied; a no-gradient density pass then drops the samples behind what is already opaque
(early termination), so the field with gradients runs only where light still arrives.

Samples come packed (M of them, sorted by ray, then by t) for `rasterizer.volume.composite_packed`.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from jaxtyping import Float, Int
from torch import Tensor

from splatlab.rasterizer.volume import render_weights_packed

from .sampler import Rays


class OccupancyGrid(torch.nn.Module):
    """The grid over the box [lo, hi]; its `ema` and `binary` buffers go into `state_dict`.
    Every cell starts occupied."""

    def __init__(self, lo: Tensor, hi: Tensor, resolution: int, threshold: float = 0.01,
                 decay: float = 0.95, warmup_steps: int = 256):
        super().__init__()
        self.resolution = int(resolution)
        self.threshold, self.decay, self.warmup_steps = float(threshold), float(decay), int(warmup_steps)
        self.register_buffer("lo", lo.float().clone(), persistent=False)
        self.register_buffer("hi", hi.float().clone(), persistent=False)
        n = self.resolution ** 3
        # ema 0 with binary all set: the first update (which evaluates every occupied cell)
        # writes every cell's value.
        self.register_buffer("ema", torch.zeros(n))
        self.register_buffer("binary", torch.ones(n, dtype=torch.bool))

    def cell_index(self, x: Float[Tensor, "*B 3"]) -> Int[Tensor, "*B"]:
        """Flat index (x slowest, z fastest) of the cell holding each point (clamped to the box)."""
        res = self.resolution
        ijk = ((x - self.lo) / (self.hi - self.lo) * res).floor().long().clamp(0, res - 1)
        return (ijk[..., 0] * res + ijk[..., 1]) * res + ijk[..., 2]

    def cell_points(self, index: Int[Tensor, " N"], offset: Float[Tensor, "N 3"]) -> Float[Tensor, "N 3"]:
        """Points in cells `index` at `offset` in [0, 1)^3 of each cell (0.5: the centre)."""
        res = self.resolution
        ijk = torch.stack([index // (res * res), (index // res) % res, index % res], -1)
        return self.lo + (ijk.float() + offset) / res * (self.hi - self.lo)

    @torch.no_grad()
    def update(self, step: int, density_fn: Callable[[Tensor], Tensor], step_size: float,
               chunk: int = 1 << 20) -> None:
        """Re-evaluate cells at a uniformly jittered point of each: `ema = max(ema * decay,
        density x step_size)`, occupied where ema > min(mean ema, threshold). During warm-up
        every cell; after it a random quarter of the cells plus the occupied ones (nerfacc's
        scheme), whose list costs one host sync per update. The randomness is seeded by the
        step: the update draws nothing from the training's random stream, and a resumed run
        repeats it."""
        dev = self.ema.device
        gen = torch.Generator(device=dev).manual_seed(int(step))
        n = self.ema.numel()
        if step < self.warmup_steps:
            index = torch.arange(n, device=dev)
        else:
            pick = self.binary | (torch.rand(n, generator=gen, device=dev) < 0.25)
            index = pick.nonzero()[:, 0]
        offset = torch.rand(index.shape[0], 3, generator=gen, device=dev)
        value = torch.empty(index.shape[0], device=dev)
        for s in range(0, index.shape[0], chunk):
            value[s : s + chunk] = density_fn(self.cell_points(index[s : s + chunk], offset[s : s + chunk])).float()
        self.ema[index] = torch.maximum(self.ema[index] * self.decay, value * step_size)
        self.binary.copy_(self.ema > self.ema.mean().clamp(max=self.threshold))

    def occupied_fraction(self) -> float:
        """Share of occupied cells (reads back from the device)."""
        return float(self.binary.float().mean())


def march(rays: Rays, near: Float[Tensor, " R"], far: Float[Tensor, " R"], hit: Tensor, grid: OccupancyGrid,
          step_size: float, num_steps: int, jitter: bool) -> tuple[Int[Tensor, " M"], Float[Tensor, " M"]]:
    """Samples t_k = near + (k + u) step_size, k < num_steps, with u uniform per ray (jitter)
    or 0.5, kept where t_k < far on a ray that hits the box and the cell of t_k is occupied.
    Returns (ray index M, t M), sorted by ray, then by t: each sample stands for the interval
    t +- step_size / 2. Two host syncs: the longest chord (the number of steps) and the
    packing `nonzero`."""
    R, dev = near.shape[0], near.device
    u = torch.rand(R, 1, device=dev) if jitter else torch.full((R, 1), 0.5, device=dev)
    # Only as many steps as the longest chord of this batch needs (k < (far - near) / step):
    # a batch rarely crosses the box along its diagonal, and every step is a gather per ray.
    longest = float(((far - near) * hit).clamp_min(0).max()) if R else 0.0  # a host read
    num_steps = max(min(num_steps, int(math.ceil(longest / step_size)) + 1), 1)
    t = near[:, None] + (torch.arange(num_steps, device=dev, dtype=near.dtype) + u) * step_size  # R K
    keep = (t < far[:, None]) & hit[:, None]
    pts = rays.origins[:, None] + rays.dirs[:, None] * t[..., None]
    keep &= grid.binary[grid.cell_index(pts)]
    ray_indices, k = keep.nonzero(as_tuple=True)
    return ray_indices, t[ray_indices, k]


@torch.no_grad()
def early_stop(ray_indices: Int[Tensor, " M"], pts: Float[Tensor, "M 3"], num_rays: int,
               density_fn: Callable[[Tensor], Tensor], step_size: float, eps: float) -> Tensor:
    """M bool: the samples (at `pts`, packed as `march` returns them) where the light left
    before them (transmittance, from the field's density without gradients) is at least `eps`.
    The weights dropped sum to less than eps per ray, as each dropped sample lies behind the
    first one with transmittance below eps."""
    sigma = density_fn(pts).float()
    _, trans = render_weights_packed(sigma, torch.full_like(sigma, step_size), ray_indices, num_rays)
    return trans >= eps


def march_step(lo: Tensor, hi: Tensor, march_samples: int) -> tuple[float, int]:
    """(step size, steps per ray) for a box: the diagonal / `march_samples`, and enough steps
    (ceil(diagonal / step) + 1) to cross it from any entry point, jitter included."""
    diag = float((hi - lo).norm())
    step = diag / max(int(march_samples), 1)
    return step, int(math.ceil(diag / step)) + 1


__all__ = ["OccupancyGrid", "early_stop", "march", "march_step"]
