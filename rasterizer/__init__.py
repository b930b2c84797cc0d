"""Differentiable Gaussian rasterization over raw tensors.

`rasterize()` mirrors gsplat's `rasterization()` argument order and conventions
(see CONVENTIONS.md) and exposes only the options splatlab uses. Two backends share
the signature: "gsplat" (CUDA, the default for CUDA tensors) and "reference" (pure
PyTorch, the CPU backend and the test oracle). This package is the only importer of
gsplat, and importing it never needs CUDA.
"""

from __future__ import annotations

from typing import Optional

import torch
from jaxtyping import Float
from torch import Tensor

from .types import Backend, RenderMode, RenderOutput


def cuda_available() -> bool:
    return torch.cuda.is_available()


def rasterize(
    means: Float[Tensor, "N 3"],
    quats: Float[Tensor, "N 4"],
    scales: Float[Tensor, "N 3"],
    opacities: Float[Tensor, " N"],
    colors: Tensor,
    viewmats: Float[Tensor, "C 4 4"],
    Ks: Float[Tensor, "C 3 3"],
    width: int,
    height: int,
    *,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    sh_degree: Optional[int] = None,
    backgrounds: Optional[Float[Tensor, "C 3"]] = None,
    render_mode: RenderMode = "RGB",
    antialiased: bool = False,
    absgrad: bool = False,
    distributed: bool = False,
    backend: Backend = "auto",
    isect_capacity=None,
) -> RenderOutput:
    """Render N Gaussians into C cameras.

    means, quats (wxyz, need not be unit), scales (activated, not log), opacities
    (activated, in [0,1]). `colors` is N 3 (plain RGB, `sh_degree=None`) or N K 3 SH
    coefficients with K >= (sh_degree+1)^2. viewmats are world-to-camera (OpenCV axes),
    Ks pinhole intrinsics. Returns a `RenderOutput`.

    `distributed`: the Gaussians are this process's shard of a model split across
    torch.distributed ranks, and every rank renders its own C cameras of the whole model
    (a collective; gsplat's distributed mode on CUDA, its torch twin in distributed.py).

    `isect_capacity` (an `isect.IsectCapacity`, gsplat backend): sort the tile
    intersections into buffers of a capacity chosen from earlier renders, without the
    per-render host read (isect.py); ignored by the reference backend.
    """
    if backend == "auto":
        backend = "gsplat" if means.is_cuda else "reference"
    kw = dict(near_plane=near_plane, far_plane=far_plane, sh_degree=sh_degree,
              backgrounds=backgrounds, render_mode=render_mode, antialiased=antialiased, absgrad=absgrad)
    if distributed and backend == "reference":
        from .distributed import rasterize_sharded

        return rasterize_sharded(means, quats, scales, opacities, colors, viewmats, Ks, width, height, **kw)
    if backend == "gsplat":
        from . import gsplat_backend

        return gsplat_backend.rasterize(means, quats, scales, opacities, colors, viewmats, Ks,
                                        width, height, distributed=distributed, isect_capacity=isect_capacity, **kw)
    if backend != "reference":
        raise ValueError(f"unknown rasterizer backend {backend!r}")
    from . import reference

    return reference.rasterize(means, quats, scales, opacities, colors, viewmats, Ks, width, height, **kw)


__all__ = ["RenderOutput", "rasterize", "cuda_available", "RenderMode", "Backend"]
