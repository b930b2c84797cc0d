"""Training losses (they live here once; SSIM and the fused loss kernel live in
rasterizer/ssim.py).

`SPLATLAB_LOSS_BACKEND=torch|triton|auto` (default auto) picks the photometric loss's
implementation for A/B runs: auto is the fused triton kernel for CUDA float32 images
when triton is installed, the torch twin otherwise (same math, same numbers).
"""

from __future__ import annotations

import os

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
