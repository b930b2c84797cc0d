"""gsplat's CUDA rasterizer behind splatlab's `rasterize()` signature.

gsplat is imported lazily, only when this backend renders, so importing splatlab never
needs CUDA. `packed=False` keeps `info` in the C N layout our strategies and the reference
backend use.

The common case (one model, SH colours, RGB or RGB+ED, not distributed) calls gsplat's
stages directly (`_direct`: projection, SH, tile intersection, rasterization), the same
kernels in the same order as `gsplat.rendering.rasterization`, minus one host sync per
render: that function takes the camera centres from `torch.inverse(viewmats)`, whose error
check reads a flag back from the GPU; `_direct` uses `inv_ex`, the same factorisation
without the check. The tile intersection's own read-back (the number of intersections)
stays. `SPLATLAB_GSPLAT_DIRECT=0` renders through `rasterization` instead (A/B timing);
`SPLATLAB_TILE_CULL=1` culls the intersections by the exact tile test (A/B timing).
"""

from __future__ import annotations

import math
import os
from typing import Optional

from jaxtyping import Float
from torch import Tensor

from .types import RenderMode, RenderOutput

DIRECT_ENV = "SPLATLAB_GSPLAT_DIRECT"
# 1: drop the tile pairs whose tile the alpha >= 1/255 ellipse misses (isect.cull_pairs; the
# reference rasterizer always does). Opt-in on CUDA until timed side by side on the device.
CULL_ENV = "SPLATLAB_TILE_CULL"
TILE_SIZE = 16  # gsplat's default
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
    isect_capacity=None,
) -> RenderOutput:
    """See `splatlab.rasterizer.rasterize` (`distributed`: gsplat's multi-GPU mode, whose
    `info` holds this rank's Gaussians projected into every rank's cameras)."""
    if not means.is_cuda:
        raise RuntimeError(FIX)
    rasterization = _load()
    if (not distributed and sh_degree is not None and colors.dim() == 3 and render_mode in ("RGB", "RGB+ED")
            and os.environ.get(DIRECT_ENV, "1") != "0"):
        img, alphas, info = _direct(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                                    near_plane=near_plane, far_plane=far_plane, sh_degree=sh_degree,
                                    backgrounds=backgrounds, with_depth=render_mode == "RGB+ED",
                                    antialiased=antialiased, absgrad=absgrad, isect_capacity=isect_capacity)
    else:
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


def _direct(means, quats, scales, opacities, colors, viewmats, Ks, width: int, height: int, *,
            near_plane: float, far_plane: float, sh_degree: int, backgrounds, with_depth: bool,
            antialiased: bool, absgrad: bool, isect_capacity=None):
    """gsplat's `rasterization` for N Gaussians with N K 3 SH colours into C cameras,
    packed=False, stage by stage (gsplat 1.5.3's rendering.py, the branches taken here).
    With `isect_capacity` the tile intersection is isect.py's (no host read)."""
    import torch
    from gsplat.cuda._wrapper import (fully_fused_projection, isect_offset_encode, isect_tiles,
                                      rasterize_to_pixels, spherical_harmonics)

    C, N = viewmats.shape[0], means.shape[0]
    radii, means2d, depths, conics, compensations = fully_fused_projection(
        means, None, quats, scales, viewmats, Ks, width, height, eps2d=0.3, near_plane=near_plane,
        far_plane=far_plane, radius_clip=0.0, packed=False, sparse_grad=False,
        calc_compensations=antialiased, camera_model="pinhole", opacities=opacities)
    opac = torch.broadcast_to(opacities[None, :], (C, N))
    if compensations is not None:
        opac = opac * compensations
    campos = torch.linalg.inv_ex(viewmats).inverse[:, :3, 3]  # C 3, no host sync
    dirs = means[None, :, :] - campos[:, None, :]
    visible = (radii > 0).all(dim=-1)
    shs = torch.broadcast_to(colors[None], (C,) + tuple(colors.shape))
    rgb = torch.clamp_min(spherical_harmonics(sh_degree, dirs, shs, masks=visible) + 0.5, 0.0)
    if with_depth:
        rgb = torch.cat((rgb, depths[..., None]), dim=-1)
        if backgrounds is not None:
            backgrounds = torch.cat([backgrounds, torch.zeros(C, 1, device=backgrounds.device)], dim=-1)
    tw, th = math.ceil(width / TILE_SIZE), math.ceil(height / TILE_SIZE)
    tile_masks = None
    if isect_capacity is None:
        tiles_per_gauss, isect_ids, flatten_ids = isect_tiles(means2d, radii, depths, TILE_SIZE, tw, th,
                                                              packed=False, n_images=C)
        if os.environ.get(CULL_ENV, "0") == "1":
            from .isect import cull_pairs

            isect_ids, flatten_ids = cull_pairs(isect_ids, flatten_ids, means2d, conics, opac, TILE_SIZE, tw, th)
        offsets = isect_offset_encode(isect_ids, C, tw, th).reshape(C, th, tw)
    else:
        from .isect import intersect

        ix = intersect(means2d.detach(), radii, depths.detach(), TILE_SIZE, tw, th, isect_capacity)
        tiles_per_gauss, isect_ids, flatten_ids = ix.tiles_per_gauss, None, ix.flatten_ids
        offsets, tile_masks = ix.offsets, ix.masks
    img, alphas = rasterize_to_pixels(means2d, conics, rgb, opac, width, height, TILE_SIZE, offsets, flatten_ids,
                                      backgrounds=backgrounds, masks=tile_masks, packed=False, absgrad=absgrad)
    if with_depth:
        img = torch.cat([img[..., :-1], img[..., -1:] / alphas.clamp(min=1e-10)], dim=-1)
    info = {"batch_ids": None, "camera_ids": None, "gaussian_ids": None, "radii": radii, "means2d": means2d,
            "depths": depths, "conics": conics, "opacities": opac, "tile_width": tw, "tile_height": th,
            "tiles_per_gauss": tiles_per_gauss, "isect_ids": isect_ids, "flatten_ids": flatten_ids,
            "isect_offsets": offsets, "width": width, "height": height, "tile_size": TILE_SIZE,
            "n_batches": 1, "n_cameras": C}
    return img, alphas, info


__all__ = ["rasterize"]
