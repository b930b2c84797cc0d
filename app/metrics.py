"""Image metrics: PSNR, colour-corrected PSNR, SSIM (rasterizer/ssim.py: the one SSIM, the training loss uses it too), LPIPS.

Images are float in [0, 1], `B H W 3` (channels last, as the rasterizer returns them).
SSIM follows Wang et al. 2004 as 3DGS/gsplat/torchmetrics evaluate it: an 11x11
Gaussian window (sigma 1.5), C1 = 0.01^2, C2 = 0.03^2, averaged over the valid
(unpadded) windows and the colour channels.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from collections.abc import Callable
from typing import Optional

import torch
from jaxtyping import Float
from torch import Tensor

# SSIM lives with the loss kernel in the rasterizer (one implementation, the fused
# kernel's twin); these names stay importable from here.
from splatlab.rasterizer.ssim import SSIM_C1, SSIM_C2, SSIM_SIGMA, SSIM_WINDOW, ssim, ssim_map


def psnr(img: Float[Tensor, "B H W 3"], gt: Float[Tensor, "B H W 3"]) -> Float[Tensor, " B"]:
    """Per-image PSNR in dB for data range 1."""
    mse = (img - gt).square().flatten(1).mean(1)
    return -10.0 * torch.log10(mse)


def affine_color_fit(img: Float[Tensor, "B H W 3"], gt: Float[Tensor, "B H W 3"]) -> Float[Tensor, "B H W 3"]:
    """Per image, `img` under the affine colour transform (3x4, least squares in float64)
    that best maps it to `gt`, clipped to [0, 1]."""
    b = img.shape[0]
    x = img.reshape(b, -1, 3).double()
    a = torch.cat([x, torch.ones_like(x[..., :1])], -1)  # B P 4
    y = gt.reshape(b, -1, 3).double()
    m = torch.linalg.lstsq(a, y).solution  # B 4 3
    return (a @ m).clamp(0, 1).to(img.dtype).reshape(img.shape)


def cc_psnr(img: Float[Tensor, "B H W 3"], gt: Float[Tensor, "B H W 3"]) -> Float[Tensor, " B"]:
    """Colour-corrected PSNR: the PSNR of each image after its best affine colour fit to
    the ground truth (as gsplat's cc_psnr, with an affine instead of a quadratic fit), so
    a global exposure / white-balance difference does not count, structure does."""
    return psnr(affine_color_fit(img, gt), gt)


# ---- LPIPS: only with weights already on disk -----------------------------------------
def _alexnet_weights() -> Optional[Path]:
    # torchvision's pretrained AlexNet, which lpips(net="alex") loads; never downloaded here.
    path = Path(torch.hub.get_dir()) / "checkpoints" / "alexnet-owt-7be5be79.pth"
    return path if path.exists() else None


@functools.lru_cache(maxsize=2)
def _lpips_net(device: str):
    try:
        import lpips  # type: ignore
    except ImportError:
        return None
    if _alexnet_weights() is None:
        return None
    try:
        net = lpips.LPIPS(net="alex", verbose=False).to(device).eval()
    except Exception:  # weights unreadable, torchvision missing, ...
        return None
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def lpips_fn(device: torch.device | str) -> Optional[Callable[[Tensor, Tensor], Tensor]]:
    """A function (img, gt) -> per-image LPIPS (AlexNet), or None when the `lpips`
    package or its weights are not installed locally. Nothing is downloaded."""
    net = _lpips_net(str(device))
    if net is None:
        return None

    def fn(img: Tensor, gt: Tensor) -> Tensor:
        with torch.no_grad():
            a, b = img.permute(0, 3, 1, 2) * 2 - 1, gt.permute(0, 3, 1, 2) * 2 - 1
            return net(a, b).flatten()

    return fn


def mean_or_none(values: list[Optional[float]]) -> Optional[float]:
    vals = [v for v in values if v is not None]
    return None if not vals or len(vals) != len(values) else float(sum(vals) / len(vals))


def psnr_from_mse(mse: float) -> float:
    return float("inf") if mse <= 0 else -10.0 * math.log10(mse)
