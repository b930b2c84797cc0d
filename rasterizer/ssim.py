"""SSIM and the photometric training loss (L1 or MSE + D-SSIM), over raw tensors.

Two implementations of one loss:
    "torch"   the torch twin below: the CPU path and the oracle of the kernel
    "triton"  `ssim_triton.py`: one fused forward and one fused backward kernel (CUDA)

SSIM follows Wang et al. 2004 as 3DGS/gsplat/torchmetrics evaluate it: an 11x11
Gaussian window (sigma 1.5), C1 = 0.01^2, C2 = 0.03^2, averaged over the valid
(unpadded) window positions, H-10 x W-10 per channel, and over the channels.
Triton is optional (the GPU image has it; it is not a splatlab dependency): it is
imported only when the fused kernel is asked for.
"""

from __future__ import annotations

import functools
from typing import Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float, Shaped
from torch import Tensor

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2

RgbLoss = Literal["l1", "mse"]
LossBackend = Literal["auto", "torch", "triton"]


@functools.lru_cache(maxsize=8)
def gauss_1d(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The normalised 1D Gaussian window (computed in float64, then cast)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def ssim_map(x: Float[Tensor, "B C H W"], y: Float[Tensor, "B C H W"]) -> Tensor:
    """SSIM per valid window position, B C H-10 W-10 (channels first). One separable
    depthwise convolution pass over the 5 stacked statistics, so it is cheap enough for
    every training step and differentiable."""
    b, c, h, w = x.shape
    g = gauss_1d(SSIM_WINDOW, SSIM_SIGMA, x.dtype, x.device)
    stats = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # B 5C H W
    n = stats.shape[1]
    stats = F.conv2d(stats, g.view(1, 1, 1, -1).expand(n, 1, 1, SSIM_WINDOW), groups=n)
    stats = F.conv2d(stats, g.view(1, 1, -1, 1).expand(n, 1, SSIM_WINDOW, 1), groups=n)
    mx, my, exx, eyy, exy = stats.split(c, dim=1)
    mx2, my2, mxy = mx * mx, my * my, mx * my
    vx, vy, cxy = exx - mx2, eyy - my2, exy - mxy
    num = (2 * mxy + SSIM_C1) * (2 * cxy + SSIM_C2)
    den = (mx2 + my2 + SSIM_C1) * (vx + vy + SSIM_C2)
    return num / den


def ssim(img: Float[Tensor, "B H W C"], gt: Float[Tensor, "B H W C"]) -> Float[Tensor, " B"]:
    """Per-image mean SSIM of channels-last images."""
    m = ssim_map(img.permute(0, 3, 1, 2), gt.permute(0, 3, 1, 2))
    return m.flatten(1).mean(1)


def masked_mean_ssim(
    x: Float[Tensor, "B C H W"], y: Float[Tensor, "B C H W"], keep: Shaped[Tensor, "B 1 H W"],
) -> Tensor:
    """Mean SSIM over the valid window positions whose whole 11x11 window holds kept
    pixels (`keep` > 0) only; 1 where no window is whole. A window that reaches a masked
    pixel is left out, not patched: the masked pixels of either image then change neither
    the value nor the gradient (compositing one image into the other there still lets
    them shift the windows' means and variances at the mask's border)."""
    m = ssim_map(x, y)
    # min-pool = erosion of the kept region by the window, at the valid positions only
    whole = -F.max_pool2d(-(keep > 0).to(m.dtype), SSIM_WINDOW, stride=1)
    n = whole.sum() * m.shape[1]
    return torch.where(n > 0, (m * whole).sum() / n.clamp_min(1), torch.ones_like(n))


def photometric_loss_torch(
    render: Float[Tensor, "B H W C"], gt: Float[Tensor, "B H W C"], ssim_lambda: float,
    rgb_loss: RgbLoss = "l1",
) -> tuple[Tensor, Tensor]:
    """The twin: (1 - lambda) * rgb_loss + lambda * (1 - SSIM). Returns (loss, mse), the
    MSE detached (for the train PSNR)."""
    diff = render - gt
    loss = diff.abs().mean() if rgb_loss == "l1" else diff.square().mean()
    if ssim_lambda > 0:
        # Contiguous NCHW: from the channels-last view cuDNN picks a slow NHWC grouped
        # kernel (profiled on an H100: ~2.4 ms/step vs ~1.1 ms for the same blur).
        s = ssim_map(render.permute(0, 3, 1, 2).contiguous(),
                     gt.permute(0, 3, 1, 2).contiguous()).mean()
        loss = (1 - ssim_lambda) * loss + ssim_lambda * (1 - s)
    return loss, diff.detach().square().mean()


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """Whether the fused kernel can run: triton importable and a GPU it can target (or
    TRITON_INTERPRET=1, triton's CPU interpreter, used by the tests)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def fused_supported(render: Tensor, gt: Tensor, ssim_lambda: float) -> bool:
    """Whether `photometric_loss(..., backend="auto")` takes the fused kernel: CUDA float32
    images large enough for one SSIM window, and triton installed."""
    return (render.is_cuda and render.dtype == torch.float32 and gt.dtype == torch.float32
            and render.dim() == 4 and render.shape[1] >= SSIM_WINDOW
            and render.shape[2] >= SSIM_WINDOW and ssim_lambda > 0 and triton_available())


def photometric_loss(
    render: Float[Tensor, "B H W C"], gt: Float[Tensor, "B H W C"], ssim_lambda: float,
    rgb_loss: RgbLoss = "l1", backend: LossBackend = "auto",
) -> tuple[Tensor, Tensor]:
    """(1 - lambda) * rgb_loss + lambda * (1 - SSIM) of channels-last images; returns
    (loss, detached mse). "auto" takes the fused triton kernel where `fused_supported`,
    else the torch twin; the gradient flows to `render` only."""
    if backend == "auto":
        backend = "triton" if fused_supported(render, gt, ssim_lambda) else "torch"
    if backend == "torch":
        return photometric_loss_torch(render, gt, ssim_lambda, rgb_loss)
    if backend != "triton":
        raise ValueError(f"unknown loss backend {backend!r}")
    from .ssim_triton import fused_photometric_loss

    window = gauss_1d(SSIM_WINDOW, SSIM_SIGMA, torch.float32, render.device)
    return fused_photometric_loss(render, gt, ssim_lambda, rgb_loss, window, SSIM_C1, SSIM_C2)


def warm_up(height: int, width: int, device: torch.device | str, ssim_lambda: float = 0.2,
            rgb_loss: RgbLoss = "l1", channels: int = 3) -> bool:
    """Compile the fused kernels for `height` x `width` images (one forward and backward
    on blank images laid out as in training), so a timed run does not pay triton's JIT;
    triton's disk cache keeps them for later processes. False when the kernel does not apply."""
    render = torch.zeros(1, height, width, channels, device=device, requires_grad=True)
    gt = torch.zeros(1, height, width, channels, device=device)
    if not fused_supported(render, gt, ssim_lambda):
        return False
    loss, _ = photometric_loss(render, gt, ssim_lambda, rgb_loss, backend="triton")
    loss.backward()
    return True


__all__ = ["warm_up", "SSIM_WINDOW", "SSIM_SIGMA", "SSIM_C1", "SSIM_C2", "gauss_1d", "ssim_map", "masked_mean_ssim", "ssim",
           "photometric_loss", "photometric_loss_torch", "fused_supported", "triton_available",
           "RgbLoss", "LossBackend"]
