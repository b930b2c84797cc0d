"""gsplat's CUDA rasterizer behind splatlab's `rasterize()` signature.

gsplat is imported lazily, only when this backend renders, so importing splatlab never
needs CUDA. `packed=False` keeps `info` in the C N layout our strategies and the reference
backend use.
"""

from __future__ import annotations

from typing import Optional

from jaxtyping import Float
from torch import Tensor

from .types import RenderMode, RenderOutput

FIX = ("gsplat's CUDA build is unavailable: render on a CUDA device with gsplat's CUDA "
       "extension built (pip install gsplat==1.5.3 on a CUDA machine), or pass backend='reference'")


def _load():
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError(FIX)
    try:
        from gsplat.cuda._backend import _C
        from gsplat.rendering import rasterization
    except Exception as err:  # gsplat raises ImportError/OSError/RuntimeError when unbuilt
        raise RuntimeError(f"{FIX} ({type(err).__name__}: {err})") from None
    if _C is None:
        raise RuntimeError(FIX)
    return rasterization


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
) -> RenderOutput:
    """See `splatlab.rasterizer.rasterize` (`distributed`: gsplat's multi-GPU mode, whose
    `info` holds this rank's Gaussians projected into every rank's cameras)."""
    if not means.is_cuda:
        raise RuntimeError(FIX)
    rasterization = _load()
    img, alphas, info = rasterization(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height,
        near_plane=near_plane, far_plane=far_plane, sh_degree=sh_degree,
        packed=False, backgrounds=backgrounds, render_mode=render_mode,
        absgrad=absgrad, rasterize_mode="antialiased" if antialiased else "classic",
        distributed=distributed,
    )
    depths = img[..., -1:] if render_mode != "RGB" else None
    return RenderOutput(colors=img, alphas=alphas, depths=depths, means2d=info["means2d"],
                        radii=info["radii"], info=info)


__all__ = ["rasterize"]
