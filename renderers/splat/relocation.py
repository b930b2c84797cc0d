"""Torch twins of the two gsplat CUDA kernels that 3DGS-MCMC calls, so `MCMCStrategy`
also runs on CPU (see `strategies.py`).

`compute_relocation` follows gsplat 1.5.3's `relocation_kernel` (csrc/RelocationCUDA.cu),
eq. (9) of "3D Gaussian Splatting as Markov Chain Monte Carlo" (Kheradmand et al. 2024):
a Gaussian of opacity o and scale s that is split into n copies gets

    o' = 1 - (1 - o)^(1/n)
    s' = o / (sum_{i=1..n} sum_{k=0..i-1} C(i-1, k) (-1)^k o'^(k+1) / sqrt(k+1)) * s

with n = ratios clamped to [1, n_max] and C read from the `binoms` table, as the kernel
does. The double sum is evaluated as one sum over k with weights sum_{i<=n} C(i-1, k)
(a cumulative sum over the table's rows), which vectorises over Gaussians.

Precision: the twin evaluates in float64 and rounds to the input dtype. The kernel works
in float32, where 1 - powf(1 - o, 1/n) cancels: its o' carries an absolute error of a
few float32 ulps of 1 (~1e-7), i.e. a relative error of ~1e-7/o' in o' and in s' (about
1e-5 for o' ~ 0.01, as for a faint Gaussian split 50 ways); the twin agrees with it to
within that, and with exact arithmetic to float32 rounding.

`quat_scale_to_covar` is the covariance half of gsplat's `quat_scale_to_covar_preci`
(R S S^T R^T with R from the normalised wxyz quaternion); it is the reference
rasterizer's `covariance_3d`, so that math lives once.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from splatlab.rasterizer.reference import covariance_3d


def compute_relocation(
    opacities: Float[Tensor, " N"],
    scales: Float[Tensor, "N 3"],
    ratios: Int[Tensor, " N"],
    binoms: Float[Tensor, "M M"],
) -> tuple[Float[Tensor, " N"], Float[Tensor, "N 3"]]:
    """gsplat.relocation.compute_relocation in torch: (new opacities N, new scales N 3)
    for Gaussians each split into `ratios` copies. Unlike gsplat's wrapper, `ratios`
    is not clamped in place."""
    n_max = binoms.shape[0]
    dtype = opacities.dtype
    if opacities.shape[0] == 0:
        return torch.empty_like(opacities), torch.empty_like(scales)
    # float64 on the CPU (some devices have no float64); these are small subsets
    n = ratios.cpu().clamp(min=1, max=n_max).long()
    o = opacities.to("cpu", torch.float64)
    # 1 - (1-o)^(1/n) without the cancellation; rounded to dtype, as the kernel stores it
    new_opacities = (-torch.expm1(torch.log1p(-o) / n.to(torch.float64))).to(dtype)
    o_new = new_opacities.to(torch.float64)
    # weights[j, k] = sum_{i=1..j+1} C(i-1, k) over the entries the kernel reads (k <= i-1)
    weights = torch.cumsum(torch.tril(binoms.to("cpu", torch.float64)), dim=0)
    kmax = int(n.max())  # terms with k >= n have zero weight
    k = torch.arange(kmax, dtype=torch.float64)
    sign = 1.0 - 2.0 * torch.remainder(k, 2.0)  # (-1)^k
    terms = (sign / torch.sqrt(k + 1.0)) * o_new[:, None] ** (k + 1.0)  # N kmax
    denom = (weights[n - 1, :kmax] * terms).sum(dim=-1)
    new_scales = (o / denom)[:, None] * scales.to("cpu", torch.float64)
    device = opacities.device
    return new_opacities.to(device), new_scales.to(device, scales.dtype)


def quat_scale_to_covar(
    quats: Float[Tensor, "N 4"], scales: Float[Tensor, "N 3"]
) -> Float[Tensor, "N 3 3"]:
    """Covariances R S S^T R^T from wxyz quaternions (need not be unit) and scales."""
    return covariance_3d(quats, scales)


__all__ = ["compute_relocation", "quat_scale_to_covar"]
