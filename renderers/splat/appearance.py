"""Per-image appearance compensation: a learned colour correction per training image,
applied to the render before the loss, so that exposure and white-balance changes
between photos are explained by the image, not baked into the scene.

Two models, both starting at the identity:
- `AffineAppearance`: one 3x4 affine colour transform per image (rgb' = A rgb + b).
- `BilateralGridAppearance`: one bilateral grid of 3x4 affine transforms per image, sliced
  by pixel position and luminance (Wang et al., "Bilateral Guided Radiance Field
  Processing", SIGGRAPH 2024), with a total-variation loss keeping it smooth.

The scene must not absorb the lighting: the learned parameters are *deltas* whose mean
over the training images is subtracted before use, so the average correction is exactly
the identity and the scene holds the average look of the capture. Test views (and the
viewer, and exports) render the scene without any correction.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

AppearanceKind = Literal["off", "affine", "bilateral"]
LUMA = (0.299, 0.587, 0.114)  # BT.601, the guidance of the bilateral grid


def identity_affine(n: int, dtype=torch.float32, device=None) -> Float[Tensor, "n 3 4"]:
    eye = torch.zeros(3, 4, dtype=dtype, device=device)
    eye[:, :3] = torch.eye(3, dtype=dtype, device=device)
    return eye.expand(n, 3, 4)


def apply_affine(mats: Float[Tensor, "*#B 3 4"], rgb: Float[Tensor, "*#B 3"]) -> Tensor:
    """rgb' = M[:, :3] rgb + M[:, 3], batched over leading dimensions (per-pixel matrices:
    the bilateral grid's; one matrix per image is AffineAppearance's GEMM)."""
    return (mats[..., :3] @ rgb.unsqueeze(-1)).squeeze(-1) + mats[..., 3]


class AffineAppearance(torch.nn.Module):
    """One 3x4 colour transform per training image."""

    def __init__(self, num_images: int):
        super().__init__()
        self.deltas = torch.nn.Parameter(torch.zeros(num_images, 3, 4))

    def matrices(self, idx: Int[Tensor, " C"]) -> Float[Tensor, "C 3 4"]:
        d = self.deltas
        return identity_affine(len(idx), d.dtype, d.device) + d[idx] - d.mean(0, keepdim=True)

    def forward(self, rgb: Float[Tensor, "C H W 3"], idx: Int[Tensor, " C"]) -> Float[Tensor, "C H W 3"]:
        # One GEMM per image: (H W x 3) @ A^T + b. apply_affine on the image's matrix expanded
        # to every pixel is a batched GEMM of ~875k tiny matrices at beer's size, the likely
        # cause of --appearance affine training at 85 steps/s against 190 without on an H100
        # (not re-timed since; benchmarks/appearance_bench.py times both).
        m = self.matrices(idx)
        c, h, w, _ = rgb.shape
        out = torch.baddbmm(m[:, None, :, 3], rgb.reshape(c, h * w, 3), m[:, :, :3].transpose(1, 2))
        return out.reshape(c, h, w, 3)

    def regularizer(self) -> Tensor:
        return self.deltas.new_zeros(())


class BilateralGridAppearance(torch.nn.Module):
    """One bilateral grid per training image: `grid_xy` x `grid_xy` cells over the image
    by `grid_guidance` luminance bins, each holding a 3x4 affine transform; a pixel's
    transform is the trilinear interpolation at (x, y, luminance), grid corners on the
    image corners and on luminance 0 and 1."""

    def __init__(self, num_images: int, grid_xy: int = 16, grid_guidance: int = 8):
        super().__init__()
        # N 12 L Y X: the 12 affine entries (row-major 3x4) as channels, for grid_sample.
        self.deltas = torch.nn.Parameter(torch.zeros(num_images, 12, grid_guidance, grid_xy, grid_xy))

    def grids(self, idx: Int[Tensor, " C"]) -> Float[Tensor, "C 12 L Y X"]:
        d = self.deltas
        eye = identity_affine(1, d.dtype, d.device).reshape(1, 12, 1, 1, 1)
        return eye + d[idx] - d.mean(0, keepdim=True)

    def slice(self, rgb: Float[Tensor, "C H W 3"], idx: Int[Tensor, " C"]) -> Float[Tensor, "C H W 3 4"]:
        """The per-pixel affine transforms of images `idx` for the colours `rgb`."""
        c, h, w, _ = rgb.shape
        luma = rgb @ rgb.new_tensor(LUMA)  # C H W
        return slice_grids(self.grids(idx), luma).reshape(c, h, w, 3, 4)

    def forward(self, rgb: Float[Tensor, "C H W 3"], idx: Int[Tensor, " C"]) -> Float[Tensor, "C H W 3"]:
        return apply_affine(self.slice(rgb, idx), rgb)

    def regularizer(self) -> Tensor:
        """Total variation of the grids: mean squared difference of neighbouring cells
        along each of the three grid axes, summed over the axes, averaged over images."""
        d = self.deltas
        tv = d.new_zeros(())
        for axis in (2, 3, 4):
            diff = d.diff(dim=axis)
            tv = tv + diff.square().sum() / max(diff[0].numel(), 1)
        return tv / d.shape[0]


def _slice_coords(luma: Float[Tensor, "C H W"]) -> Float[Tensor, "C 1 H W 3"]:
    """grid_sample's coordinates of every pixel: x, y, z in [-1, 1] (align_corners: -1 and 1
    are the first and last grid nodes), z the luminance (the grid's depth axis)."""
    c, h, w = luma.shape
    ys = (torch.arange(h, device=luma.device, dtype=luma.dtype) + 0.5) / h
    xs = (torch.arange(w, device=luma.device, dtype=luma.dtype) + 0.5) / w
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return (torch.stack([gx.expand(c, h, w), gy.expand(c, h, w), luma], -1) * 2 - 1)[:, None]


def _axis_weights(n: int, nodes: int, dtype, device) -> Float[Tensor, "n nodes"]:
    """The linear interpolation weights of n pixel centres (i + 0.5) / n on `nodes` grid
    nodes spanning [0, 1] (align_corners), as a dense matrix: two non-zeros per row."""
    wts = torch.zeros(n, nodes, dtype=dtype, device=device)
    if nodes == 1:
        return wts + 1
    u = (torch.arange(n, dtype=dtype, device=device) + 0.5) / n * (nodes - 1)
    i0 = u.floor().clamp(max=nodes - 2)
    f = u - i0
    rows = torch.arange(n, device=device)
    wts[rows, i0.long()] = 1 - f
    wts[rows, i0.long() + 1] += f
    return wts


def _sample_grids(grids: Float[Tensor, "C 12 L Y X"], luma: Float[Tensor, "C H W"]) -> Float[Tensor, "C H W 12"]:
    """The slice itself: grid_sample (bilinear, border padding, align_corners) at every pixel."""
    mats = F.grid_sample(grids, _slice_coords(luma), mode="bilinear", padding_mode="border", align_corners=True)
    return mats[:, :, 0].permute(0, 2, 3, 1)


def slice_grids(grids: Float[Tensor, "C 12 L Y X"], luma: Float[Tensor, "C H W"],
                atomic_free: Optional[bool] = None) -> Float[Tensor, "C H W 12"]:
    """Every pixel's 12 affine entries, trilinear in the grid at (x, y, luminance).
    `atomic_free` (default: on CUDA) takes `_BilateralSlice`'s backward instead of
    grid_sample's; on a CPU grid_sample's scatter is the faster of the two."""
    if luma.is_cuda if atomic_free is None else atomic_free:
        return _BilateralSlice.apply(grids, luma)
    return _sample_grids(grids, luma)


class _BilateralSlice(torch.autograd.Function):
    """Slice bilateral grids (C 12 L Y X) at every pixel's (x, y, luminance): grid_sample's
    forward (bilinear, border padding, align_corners), with a backward that needs no
    atomics. grid_sample's backward scatters every pixel into the few hundred grid cells
    with atomic adds, millions of them on the same addresses; here the grid gradient is
    separable: sum_pixels wy(y) wx(x) wz(l) g = Wy^T (g wz) Wx, two dense products per
    image, and the luminance gradient is the grid's step between luminance nodes sampled
    at the pixel. Equal to grid_sample's gradients (tests/test_casual.py, float64). On a
    CPU it is slower than grid_sample's scatter (190 against 97 ms backward at 624 x 350 on
    2 cores), so `slice_grids` takes it on CUDA only; its GPU time: benchmarks/appearance_bench.py."""

    @staticmethod
    def forward(ctx, grids: Tensor, luma: Tensor) -> Tensor:
        ctx.save_for_backward(grids, luma)
        return _sample_grids(grids, luma)

    @staticmethod
    def backward(ctx, g: Tensor):
        grids, luma = ctx.saved_tensors
        c, k, L, Y, X = grids.shape
        _, h, w = luma.shape
        g = g.contiguous()
        zi = luma.clamp(0, 1) * (L - 1)
        l0 = zi.floor().clamp(max=max(L - 2, 0))  # the luminance cell's lower node
        grad_grids = grad_luma = None
        if ctx.needs_input_grad[0]:
            wy = _axis_weights(h, Y, g.dtype, g.device)
            wx = _axis_weights(w, X, g.dtype, g.device)
            if L == 1:
                gz = g[..., None, :]  # C H W 1 12
            else:
                fz = zi - l0
                wz = torch.zeros(c, h, w, L, dtype=g.dtype, device=g.device)
                wz.scatter_(-1, l0.long()[..., None], (1 - fz)[..., None])
                wz.scatter_add_(-1, l0.long()[..., None] + 1, fz[..., None])
                gz = g[..., None, :] * wz[..., None]  # C H W L 12
            grad = torch.einsum("hy,chwq,wx->cyxq", wy, gz.reshape(c, h, w, -1), wx)
            grad_grids = grad.reshape(c, Y, X, L, k).permute(0, 4, 3, 1, 2).contiguous()
        if ctx.needs_input_grad[1] and L > 1:
            # d mats / d zi = the step between luminance nodes l0 and l0 + 1 at (x, y).
            steps = grids[:, :, 1:] - grids[:, :, :-1]  # C 12 L-1 Y X
            # Sampled exactly at node l0 of the L-1 steps (any depth with one step node).
            d = F.grid_sample(steps, _slice_coords(l0 / max(L - 2, 1)), mode="bilinear", padding_mode="border",
                              align_corners=True)
            dzi = (d[:, :, 0].permute(0, 2, 3, 1) * g).sum(-1)  # C H W
            inside = (luma > 0) & (luma < 1)  # border padding clamps: no gradient outside
            grad_luma = torch.where(inside, dzi * (L - 1), torch.zeros_like(dzi))
        elif ctx.needs_input_grad[1]:
            grad_luma = torch.zeros_like(luma)
        return grad_grids, grad_luma


def make_appearance(kind: AppearanceKind, num_images: int, grid_xy: int = 16,
                    grid_guidance: int = 8) -> "torch.nn.Module | None":
    if kind == "off":
        return None
    if kind == "affine":
        return AffineAppearance(num_images)
    if kind == "bilateral":
        return BilateralGridAppearance(num_images, grid_xy, grid_guidance)
    raise ValueError(f"unknown appearance model {kind!r}")


__all__ = ["AffineAppearance", "AppearanceKind", "BilateralGridAppearance", "apply_affine",
           "identity_affine", "make_appearance", "slice_grids"]
