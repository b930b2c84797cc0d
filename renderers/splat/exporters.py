"""gsplat's splat file writers (`gsplat.exporter.export_splats`, pure torch, runs on CPU),
imported lazily (gsplat is imported only by rasterizer/ and renderers/splat/)."""

from __future__ import annotations

from typing import Literal

from jaxtyping import Float
from torch import Tensor

GsplatFormat = Literal["ply", "splat", "ply_compressed"]


def export_splats(
    means: Float[Tensor, "N 3"],
    scales: Float[Tensor, "N 3"],
    quats: Float[Tensor, "N 4"],
    opacities: Float[Tensor, " N"],
    sh0: Float[Tensor, "N 1 3"],
    shN: Float[Tensor, "N K 3"],
    format: GsplatFormat,
) -> bytes:
    """The file bytes of raw splat params (log scales, wxyz quats, logit opacities, SH)
    in gsplat's `format`."""
    from gsplat.exporter import export_splats as gsplat_export_splats

    return gsplat_export_splats(means=means, scales=scales, quats=quats, opacities=opacities,
                                sh0=sh0, shN=shN, format=format)


__all__ = ["export_splats", "GsplatFormat"]
