"""Training losses (they live here once; SSIM and the fused loss kernel live in
rasterizer/ssim.py).

`SPLATLAB_LOSS_BACKEND=torch|triton|auto` (default auto) picks the photometric loss's
implementation for A/B runs: auto is the fused triton kernel for CUDA float32 images
when triton is installed, the torch twin otherwise (same math, same numbers).
"""

from __future__ import annotations

import os

import torch
from jaxtyping import Float
from torch import Tensor

from splatlab.rasterizer import ssim as _ssim

from .errors import UserError

LOSS_BACKEND_ENV = "SPLATLAB_LOSS_BACKEND"


def loss_backend() -> str:
    """The backend asked for in the environment (auto when unset)."""
    name = os.environ.get(LOSS_BACKEND_ENV, "auto").strip().lower() or "auto"
    if name not in ("auto", "torch", "triton"):
        raise UserError(f"{LOSS_BACKEND_ENV}={name!r}: use auto, torch or triton")
    return name


def warm_up(sizes: set[tuple[int, int]], device, ssim_lambda: float, rgb_loss: str = "l1") -> int:
    """Compile the fused loss for each training image size (width, height) before the
    stopwatch starts; returns how many sizes it compiled (0 on the torch twin)."""
    if loss_backend() == "torch":
        return 0
    return sum(_ssim.warm_up(h, w, device, ssim_lambda, rgb_loss) for w, h in sizes)


def photometric_loss(
    render: Float[Tensor, "B H W 3"], gt: Float[Tensor, "B H W 3"], ssim_lambda: float,
    rgb_loss: _ssim.RgbLoss = "l1",
) -> tuple[Tensor, Tensor]:
    """(1 - lambda) * L1 (or MSE) + lambda * (1 - SSIM), as 3DGS. Returns (loss, mse); the
    MSE (detached) is for the train PSNR, computed here so the image is read once."""
    backend = loss_backend()
    if backend == "triton" and not _ssim.fused_supported(render, gt, ssim_lambda):
        raise UserError(f"{LOSS_BACKEND_ENV}=triton needs triton and CUDA float32 images "
                        "of at least 11x11 with ssim_lambda > 0")
    return _ssim.photometric_loss(render, gt, ssim_lambda, rgb_loss, backend=backend)


def batch_loss(out_rgb: Tensor, batch, rgb_loss: str, ssim_lambda: float) -> tuple[Tensor, Tensor]:
    """The loop's photometric loss for a `Batch`: `rgb_loss` (l1 | mse) over the pixels
    where `batch.mask` is 1, plus SSIM for image batches (over the windows that see no
    masked pixel). Rays come back as C=1, H=1, W=R. Returns (loss, detached mse for the train PSNR)."""
    gt = batch.gt
    rgb = out_rgb.reshape(gt.shape)
    if batch.kind == "image" and batch.mask is None:
        return photometric_loss(rgb, gt, ssim_lambda, rgb_loss)  # the fused kernel on CUDA
    diff = rgb - gt
    per_px = diff.abs() if rgb_loss == "l1" else diff.square()
    sq = diff.detach().square()
    if batch.mask is None:
        loss, mse = per_px.mean(), sq.mean()
    else:
        w = batch.mask.to(per_px.dtype).expand_as(per_px)
        denom = w.sum().clamp_min(1.0)
        loss, mse = (per_px * w).sum() / denom, (sq * w).sum() / denom
    if batch.kind == "image" and ssim_lambda > 0:
        # Here the image batch has a mask (unmasked ones took the fused path above).
        s = _ssim.masked_mean_ssim(rgb.permute(0, 3, 1, 2).contiguous(), gt.permute(0, 3, 1, 2).contiguous(),
                                   batch.mask.permute(0, 3, 1, 2))
        loss = (1 - ssim_lambda) * loss + ssim_lambda * (1 - s)
    return loss, mse
