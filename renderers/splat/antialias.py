"""Mip-Splatting's 3D smoothing filter (Yu et al., CVPR 2024).

A Gaussian cannot hold detail finer than the finest sampling of the training views that
saw it: at depth z a camera of focal length f samples the scene every z / f. Each
Gaussian's covariance is convolved with an isotropic 3D Gaussian of variance
`FILTER_VARIANCE * (z_min / f)^2` (z_min / f: its finest sampling interval over the
training views) and its opacity scaled to keep its integral, so that zooming out or
rendering at a lower resolution does not show the sub-pixel structure training could
not see. Together with gsplat's antialiased 2D mode (the screen-space counterpart) this
is the `--antialias` option.

Since R S^2 R^T + s^2 I = R (S^2 + s^2 I) R^T, the filter is exact on the scales:
scales' = sqrt(scales^2 + s^2), opacity' = opacity * sqrt(prod scales^2 / prod scales'^2).
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

FILTER_VARIANCE = 0.2  # Mip-Splatting's 3D filter scale, in squared sampling intervals
NEAR = 0.2  # Gaussians closer to a camera than this do not count for its sampling rate
MARGIN = 0.15  # Gaussians projecting up to this fraction outside the image still count


@torch.no_grad()
def sampling_intervals(
    means: Float[Tensor, "N 3"],
    viewmats: Float[Tensor, "C 4 4"],
    Ks: Float[Tensor, "C 3 3"],
    widths: list[int],
    heights: list[int],
) -> Float[Tensor, " N"]:
    """Each Gaussian's finest world-space sampling interval z / f over the cameras whose
    view it is in; Gaussians no camera sees get the largest interval of the others."""
    best = torch.full((means.shape[0],), float("inf"), dtype=means.dtype, device=means.device)
    for c in range(viewmats.shape[0]):  # one camera at a time: memory stays O(N)
        p = means @ viewmats[c, :3, :3].T + viewmats[c, :3, 3]
        z = p[:, 2]
        zs = z.clamp_min(1e-6)
        fx, fy, cx, cy = Ks[c, 0, 0], Ks[c, 1, 1], Ks[c, 0, 2], Ks[c, 1, 2]
        u, v = fx * p[:, 0] / zs + cx, fy * p[:, 1] / zs + cy
        w, h = widths[c], heights[c]
        seen = ((z > NEAR) & (u >= -MARGIN * w) & (u <= (1 + MARGIN) * w)
                & (v >= -MARGIN * h) & (v <= (1 + MARGIN) * h))
        interval = z / torch.maximum(fx, fy)
        best = torch.where(seen, torch.minimum(best, interval), best)
    finite = torch.isfinite(best)
    fallback = best[finite].max() if finite.any() else best.new_tensor(0.0)
    return torch.where(finite, best, fallback)


def filter_variance(intervals: Float[Tensor, " N"]) -> Float[Tensor, " N"]:
    return FILTER_VARIANCE * intervals.square()


def apply_3d_filter(
    scales: Float[Tensor, "N 3"], opacities: Float[Tensor, " N"], variance: Float[Tensor, " N"]
) -> tuple[Float[Tensor, "N 3"], Float[Tensor, " N"]]:
    """(scales, opacities) of the Gaussians convolved with isotropic 3D Gaussians of
    `variance`, integral kept (the opacity factor is the ratio of the determinants)."""
    s2 = scales.square()
    f2 = s2 + variance[:, None]
    ratio = (s2 / f2).prod(-1)
    return f2.sqrt(), opacities * ratio.sqrt()


__all__ = ["FILTER_VARIANCE", "apply_3d_filter", "filter_variance", "sampling_intervals"]
