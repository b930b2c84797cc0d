"""Rays and where to sample them: camera rays, near/far, the proposal sampler's spacing,
inverse-CDF resampling, and its two losses (mip-NeRF 360's interlevel and distortion).

Samples are described by bin edges in *normalised spacing* s in [0, 1] (R S+1), mapped to
ray distance t by the spacing function of the mode: linear between near and far inside a
box (bounded), and for unbounded captures linear up to the contraction radius, then linear
in disparity beyond it (nerfacto's piecewise sampler), so far space gets few samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor


@dataclass
class Rays:
    origins: Float[Tensor, "R 3"]
    dirs: Float[Tensor, "R 3"]  # unit length
    z_per_t: Float[Tensor, " R"]  # camera z gained per unit of t (depth = t * z_per_t)


def camera_rays(c2w: Float[Tensor, "R 4 4"], fx: Tensor, fy: Tensor, cx: Tensor, cy: Tensor,
                pixels: Float[Tensor, "R 2"]) -> Rays:
    """Rays through pixel positions (x y, pixel centres at +0.5), OpenCV axes; the camera
    parameters are per ray (R)."""
    d_cam = torch.stack([(pixels[:, 0] - cx) / fx, (pixels[:, 1] - cy) / fy, torch.ones_like(fx)], -1)
    norm = d_cam.norm(dim=-1)
    dirs = (c2w[:, :3, :3] @ d_cam[..., None])[..., 0] / norm[:, None]
    return Rays(c2w[:, :3, 3].contiguous(), dirs, 1.0 / norm)


def box_near_far(rays: Rays, lo: Tensor, hi: Tensor, near_plane: float) -> tuple[Tensor, Tensor, Tensor]:
    """(near R, far R, hit R bool): slab intersection with [lo, hi]; misses get near = far."""
    inv = 1.0 / torch.where(rays.dirs.abs() < 1e-9, torch.full_like(rays.dirs, 1e-9), rays.dirs)
    t0, t1 = (lo - rays.origins) * inv, (hi - rays.origins) * inv
    near = torch.minimum(t0, t1).amax(-1).clamp_min(near_plane)
    far = torch.maximum(t0, t1).amin(-1)
    hit = far > near
    far = torch.where(hit, far, near)
    return near, far, hit


class Spacing:
    """Bijection between ray distance t and spacing s in [0, 1] for a batch of rays."""

    def __init__(self, near: Float[Tensor, " R"], far: Float[Tensor, " R"], radius: float | None):
        # radius None: linear in t (bounded). Else piecewise: g(t) = t / r up to r, 2 - r / t beyond.
        self.radius = radius
        self.g_near, self.g_far = self._g(near[:, None]), self._g(far[:, None])

    def _g(self, t: Tensor) -> Tensor:
        if self.radius is None:
            return t
        x = t / self.radius
        return torch.where(x < 1, x, 2 - 1 / x.clamp_min(1e-9))

    def _g_inv(self, g: Tensor) -> Tensor:
        if self.radius is None:
            return g
        return self.radius * torch.where(g < 1, g, 1 / (2 - g).clamp_min(1e-9))

    def to_t(self, s: Float[Tensor, "R K"]) -> Float[Tensor, "R K"]:
        return self._g_inv(self.g_near + s * (self.g_far - self.g_near))


def uniform_bins(num_rays: int, num_samples: int, jitter: bool, device) -> Float[Tensor, "R S1"]:
    """Evenly spaced bin edges in [0, 1] (S+1 of them), stratified-jittered in training."""
    s = torch.linspace(0, 1, num_samples + 1, device=device).expand(num_rays, -1)
    if jitter:
        width = 1.0 / num_samples
        u = (torch.rand(num_rays, num_samples + 1, device=device) - 0.5) * width
        s = (s + u).clamp(0, 1)
        s = torch.cat([s[:, :1].clamp(max=0), s[:, 1:-1], s[:, -1:].clamp(min=1)], -1)
    return s.contiguous()


def sample_pdf(bins: Float[Tensor, "R S1"], weights: Float[Tensor, "R S"], num_samples: int,
               jitter: bool, padding: float = 0.01) -> Float[Tensor, "R N1"]:
    """New bin edges (num_samples+1) drawn from the piecewise-constant density `weights` over
    `bins` by inverse CDF. `padding` is added to every bin's weight, as nerfacto's histogram
    padding: with S bins and weights summing to ~1, about S x padding / (1 + S x padding) of the
    samples stay spread over the whole ray, so the field keeps seeing where its surfaces are even
    when the proposals have drifted off them (with 1% of the samples spread, proposals that
    drifted to the near plane took every sample with them: benchmarks/RESULTS.md, "NeRF
    stability")."""
    w = weights.detach() + padding
    pdf = w / w.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1).clamp(max=1)], -1)
    R, n = bins.shape[0], num_samples + 1
    if jitter:
        u = (torch.arange(n, device=bins.device) + torch.rand(R, n, device=bins.device)) / n
    else:
        u = ((torch.arange(n, device=bins.device) + 0.5) / n).expand(R, -1)
    u = u.clamp(0, 1 - 1e-6).contiguous()
    hi = torch.searchsorted(cdf.contiguous(), u, right=True).clamp(1, cdf.shape[-1] - 1)
    lo = hi - 1
    c0, c1 = cdf.gather(-1, lo), cdf.gather(-1, hi)
    b0, b1 = bins.gather(-1, lo), bins.gather(-1, hi)
    frac = ((u - c0) / (c1 - c0).clamp_min(1e-12)).clamp(0, 1)
    s = b0 + frac * (b1 - b0)
    s = torch.sort(s, -1).values
    # The first and last edges span the whole ray so nothing between near and far is skipped.
    return torch.cat([bins[:, :1], s[:, 1:-1], bins[:, -1:]], -1).detach()


def _outer(t0: Float[Tensor, "R S1"], t1: Float[Tensor, "R P1"], y1: Float[Tensor, "R P"]) -> Float[Tensor, "R S"]:
    """For each bin of t0, the sum of y1 over the bins of t1 that overlap it (mip-NeRF 360)."""
    cy1 = torch.cat([torch.zeros_like(y1[:, :1]), torch.cumsum(y1, -1)], -1)
    lo = (torch.searchsorted(t1.contiguous(), t0[:, :-1].contiguous(), right=True) - 1).clamp(0, y1.shape[-1] - 1)
    hi = torch.searchsorted(t1.contiguous(), t0[:, 1:].contiguous(), right=False).clamp(1, y1.shape[-1])
    return cy1.gather(-1, hi) - cy1.gather(-1, lo)


def interlevel_loss(bins: Float[Tensor, "R S1"], weights: Float[Tensor, "R S"],
                    prop_bins: Float[Tensor, "R P1"], prop_weights: Float[Tensor, "R P"]) -> Tensor:
    """mip-NeRF 360's proposal loss: the proposal's weights must bound (from above) the final
    weights over every final bin. The final field is the teacher, so it is detached."""
    w = weights.detach()
    bound = _outer(bins.detach(), prop_bins, prop_weights)
    return ((w - bound).clamp_min(0).square() / (w + 1e-7)).sum(-1).mean()


def distortion_loss(bins: Float[Tensor, "R S1"], weights: Float[Tensor, "R S"]) -> Tensor:
    """mip-NeRF 360's distortion loss in normalised spacing, in O(S):
    sum_ij w_i w_j |m_i - m_j| + 1/3 sum_i w_i^2 (s_i+1 - s_i), with m the bin midpoints."""
    mid = 0.5 * (bins[:, 1:] + bins[:, :-1])
    width = bins[:, 1:] - bins[:, :-1]
    wm = weights * mid
    w_before = torch.cumsum(weights, -1) - weights
    wm_before = torch.cumsum(wm, -1) - wm
    pairs = 2 * (weights * (mid * w_before - wm_before)).sum(-1)
    self_term = (weights.square() * width).sum(-1) / 3
    return (pairs + self_term).mean()


def pixel_grid(width: int, height: int, device) -> Float[Tensor, "HW 2"]:
    """Pixel centres (x + 0.5, y + 0.5) in row-major order."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=torch.float32) + 0.5,
                            torch.arange(width, device=device, dtype=torch.float32) + 0.5, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)


__all__ = ["Rays", "Spacing", "box_near_far", "camera_rays", "distortion_loss", "interlevel_loss",
           "pixel_grid", "sample_pdf", "uniform_bins"]
