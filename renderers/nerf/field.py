"""The NeRF's fields: where a point lies in the hash grid's unit cube (box or contraction),
the main radiance field and the small proposal density fields.

Main field (nerfacto's): hash encoding -> density MLP -> (density, geometry features);
colour MLP on (geometry features, SH-encoded view direction, per-image appearance
embedding). Densities use a truncated exp (exp forward, gradient clamped) as Instant-NGP.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from jaxtyping import Float, Int
from torch import Tensor

from splatlab.rasterizer.hashgrid import HashBackend, hash_encode, init_table, level_resolutions
from splatlab.rasterizer.sh import num_bases, sh_bases

VIEW_SH_DEGREE = 3  # 16 bases, nerfacto's view-direction encoding


class _TruncExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        # Capped below float32's overflow: an inf density times a zero-length interval is
        # NaN; e^30 is opaque over any interval a render uses.
        return torch.exp(x.clamp(max=30.0))

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.exp(x.clamp(max=15.0))


def trunc_exp(x: Tensor) -> Tensor:
    """exp with its gradient clamped at exp(15): a density spike cannot blow up Adam."""
    return _TruncExp.apply(x)


class SceneBox:
    """Maps normalized-frame points to the hash grid's [0, 1]^3.

    bounded: the axis-aligned box [lo, hi] scaled to the unit cube (outside: no density).
    unbounded: mip-NeRF 360's contraction around `center` with radius `radius`, using the
    L-inf norm as nerfacto (the contracted cube fills the grid; the L2 ball would leave its
    corners unused): x' = x inside the unit cube, (2 - 1/|x|) x/|x| outside, then [-2, 2] -> [0, 1].
    """

    def __init__(self, bounded: bool, lo: Tensor, hi: Tensor):
        self.bounded = bool(bounded)
        self.lo, self.hi = lo.float(), hi.float()

    @property
    def center(self) -> Tensor:
        return 0.5 * (self.lo + self.hi)

    @property
    def radius(self) -> Tensor:
        """Half the box's largest side: the contraction's unit (unbounded)."""
        return 0.5 * (self.hi - self.lo).max()

    def to_unit(self, x: Float[Tensor, "N 3"]) -> tuple[Float[Tensor, "N 3"], Tensor]:
        """(points in [0, 1]^3, N bool: inside the modelled volume)."""
        if self.bounded:
            u = (x - self.lo) / (self.hi - self.lo)
            inside = ((u >= 0) & (u <= 1)).all(-1)
            return u.clamp(0, 1), inside
        y = (x - self.center) / self.radius
        n = y.abs().amax(-1, keepdim=True).clamp_min(1e-9)
        c = torch.where(n <= 1, y, (2 - 1 / n) * y / n)
        return (c + 2) / 4, torch.ones_like(n[..., 0], dtype=torch.bool)

    def to(self, device) -> "SceneBox":
        return SceneBox(self.bounded, self.lo.to(device), self.hi.to(device))


def mlp(n_in: int, width: int, n_out: int, layers: int) -> torch.nn.Sequential:
    """`layers` hidden layers of `width` with ReLU (no bias on the last: densities and
    colours get their offsets from the activations)."""
    mods: list[torch.nn.Module] = []
    d = n_in
    for _ in range(layers):
        mods += [torch.nn.Linear(d, width), torch.nn.ReLU()]
        d = width
    mods.append(torch.nn.Linear(d, n_out))
    return torch.nn.Sequential(*mods)


class HashGrid(torch.nn.Module):
    """A table of L levels x 2^log2_table_size entries x F features (a parameter)."""

    def __init__(self, levels: int, features: int, log2_table_size: int, base_resolution: int,
                 max_resolution: int, backend: HashBackend = "auto",
                 generator: Optional[torch.Generator] = None):
        super().__init__()
        self.resolutions = level_resolutions(levels, base_resolution, max(max_resolution, base_resolution))
        self.table = torch.nn.Parameter(init_table(levels, log2_table_size, features, generator))
        self.backend: HashBackend = backend

    @property
    def out_dim(self) -> int:
        return self.table.shape[0] * self.table.shape[2]

    def forward(self, u: Float[Tensor, "N 3"]) -> Float[Tensor, "N LF"]:
        with torch.autocast(u.device.type, enabled=False):
            return hash_encode(u.float(), self.table, self.resolutions, self.backend)

    def describe(self) -> str:
        L, T, F = self.table.shape
        return f"{L} x {F} x 2^{int(round(math.log2(T)))} (res {self.resolutions[0]}..{self.resolutions[-1]})"


class DensityField(torch.nn.Module):
    """A proposal network: a small hash grid and a one-hidden-layer MLP -> density."""

    def __init__(self, box: SceneBox, levels: int, log2_table_size: int, max_resolution: int,
                 width: int = 16, backend: HashBackend = "auto", generator: Optional[torch.Generator] = None):
        super().__init__()
        self.box = box
        self.grid = HashGrid(levels, 2, log2_table_size, 16, max_resolution, backend, generator)
        self.mlp = mlp(self.grid.out_dim, width, 1, 1)

    def density(self, x: Float[Tensor, "N 3"]) -> Float[Tensor, " N"]:
        u, inside = self.box.to_unit(x)
        sigma = trunc_exp(self.mlp(self.grid(u)).float()[..., 0] - 1.0)
        return torch.where(inside, sigma, torch.zeros_like(sigma))


class RadianceField(torch.nn.Module):
    """The main field: density and view-dependent colour."""

    def __init__(self, box: SceneBox, *, levels: int, features: int, log2_table_size: int,
                 base_resolution: int, max_resolution: int, hidden: int, geo_features: int,
                 color_hidden: int, num_images: int, appearance_dim: int,
                 backend: HashBackend = "auto", generator: Optional[torch.Generator] = None):
        super().__init__()
        self.box = box
        self.grid = HashGrid(levels, features, log2_table_size, base_resolution, max_resolution,
                             backend, generator)
        self.density_mlp = mlp(self.grid.out_dim, hidden, 1 + geo_features, 1)
        self.appearance_dim = appearance_dim
        self.appearance = torch.nn.Embedding(max(num_images, 1), appearance_dim) if appearance_dim > 0 else None
        if self.appearance is not None:
            torch.nn.init.normal_(self.appearance.weight, std=0.01, generator=generator)
        self.color_mlp = mlp(geo_features + num_bases(VIEW_SH_DEGREE) + appearance_dim, color_hidden, 3, 2)

    def density(self, x: Float[Tensor, "N 3"]) -> Float[Tensor, " N"]:
        return self._density(x)[0]

    def _density(self, x: Tensor) -> tuple[Tensor, Tensor]:
        u, inside = self.box.to_unit(x)
        h = self.density_mlp(self.grid(u))
        sigma = trunc_exp(h[..., 0].float() - 1.0)
        return torch.where(inside, sigma, torch.zeros_like(sigma)), h[..., 1:]

    def appearance_code(self, image_idx: Optional[Int[Tensor, " N"]], n: int, device) -> Optional[Tensor]:
        """Per-image codes in training; for any other view (test views, the viewer, exports)
        the mean of the training codes: a fixed, typical appearance."""
        if self.appearance is None:
            return None
        if image_idx is None:
            return self.appearance.weight.mean(0, keepdim=True).expand(n, -1)
        return self.appearance(image_idx)

    def forward(self, x: Float[Tensor, "N 3"], dirs: Float[Tensor, "N 3"],
                image_idx: Optional[Int[Tensor, " N"]] = None) -> tuple[Float[Tensor, " N"], Float[Tensor, "N 3"]]:
        """(density, rgb in [0, 1])."""
        sigma, geo = self._density(x)
        parts = [geo, sh_bases(VIEW_SH_DEGREE, dirs).to(geo.dtype)]
        code = self.appearance_code(image_idx, x.shape[0], x.device)
        if code is not None:
            parts.append(code.to(geo.dtype))
        rgb = torch.sigmoid(self.color_mlp(torch.cat(parts, -1)).float())
        return sigma, rgb


__all__ = ["DensityField", "HashGrid", "RadianceField", "SceneBox", "mlp", "trunc_exp"]
