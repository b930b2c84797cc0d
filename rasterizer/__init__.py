"""Differentiable Gaussian rasterization over raw tensors.

`rasterize()` mirrors gsplat's `rasterization()` argument order and conventions
(see CONVENTIONS.md) and exposes only the options splatlab uses. Two backends share
the signature: "gsplat" (CUDA, the default for CUDA tensors) and "reference" (pure
PyTorch, the CPU backend and the test oracle). This package is the only importer of
gsplat, and importing it never needs CUDA.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import torch
from jaxtyping import Float
from torch import Tensor

RenderMode = Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"]
Backend = Literal["auto", "gsplat", "reference"]


@dataclass
class RenderOutput:
    """What a render returns. `colors` holds RGB (and/or depth as its last channel, as
    gsplat does) composited over `backgrounds`; `depths` is split out for convenience."""

    colors: Float[Tensor, "C H W D"]  # RGB, or depth, or RGB+depth, per render_mode
    alphas: Float[Tensor, "C H W 1"]
    depths: Optional[Float[Tensor, "C H W 1"]]  # expected ("ED") or accumulated ("D") depth
    # For densification strategies: projected 2D means (their .grad is read after
    # backward), per-camera radii in pixels (C N 2, int; 0 = not visible).
    means2d: Tensor
    radii: Tensor
    # The dict gsplat's strategies read (means2d, radii, width, height, n_cameras, ...).
    info: dict = field(default_factory=dict)

    @property
    def rgb(self) -> Float[Tensor, "C H W 3"]:
        return self.colors[..., :3]

    @property
    def visible(self) -> Tensor:
        """C N bool: Gaussians that touched each camera's image."""
        return (self.radii > 0).all(dim=-1) if self.radii.dim() == 3 else self.radii > 0


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
    backend: Backend = "auto",
) -> RenderOutput:
    """Render N Gaussians into C cameras.

    means, quats (wxyz, need not be unit), scales (activated, not log), opacities
    (activated, in [0,1]). `colors` is N 3 (plain RGB, `sh_degree=None`) or N K 3 SH
    coefficients with K >= (sh_degree+1)^2. viewmats are world-to-camera (OpenCV axes),
    Ks pinhole intrinsics. Returns a `RenderOutput`.
    """
    if backend == "auto":
        backend = "gsplat" if means.is_cuda else "reference"
    if backend == "gsplat":
        from . import gsplat_backend as impl
    elif backend == "reference":
        from . import reference as impl
    else:
        raise ValueError(f"unknown rasterizer backend {backend!r}")
    return impl.rasterize(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height,
        near_plane=near_plane, far_plane=far_plane, sh_degree=sh_degree,
        backgrounds=backgrounds, render_mode=render_mode, antialiased=antialiased,
        absgrad=absgrad,
    )


__all__ = ["RenderOutput", "rasterize", "cuda_available", "RenderMode", "Backend"]
