"""Real spherical harmonics colour evaluation (degrees 0-3), gsplat/INRIA basis order.

`eval_sh` is pure torch and differentiable in both coefficients and directions. On CUDA
tensors it dispatches to gsplat's fused kernel (same constants, same order), so the two
paths are interchangeable. See CONVENTIONS.md for the layout.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

# The normalisation constants of the real SH basis, in gsplat/INRIA order and sign
# (Condon-Shortley phase folded in, as in Sloan's "Efficient SH evaluation").
SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005,
         -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658,
         0.3731763325901154, -0.4570457994644658, 1.445305721320277,
         -0.5900435899266435)

MAX_DEGREE = 3


def num_bases(degree: int) -> int:
    return (degree + 1) ** 2


def sh_bases(degree: int, dirs: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch K"]:
    """The (degree+1)^2 basis functions at `dirs` (normalised here, need not be unit)."""
    if not 0 <= degree <= MAX_DEGREE:
        raise ValueError(f"SH degree must be in 0..{MAX_DEGREE}, got {degree}")
    out = [torch.full_like(dirs[..., 0], SH_C0)]
    if degree >= 1:
        d = torch.nn.functional.normalize(dirs, dim=-1)
        x, y, z = d.unbind(-1)
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
        if degree >= 2:
            xx, yy, zz = x * x, y * y, z * z
            xy, yz, xz = x * y, y * z, x * z
            out += [
                SH_C2[0] * xy,
                SH_C2[1] * yz,
                SH_C2[2] * (2.0 * zz - xx - yy),
                SH_C2[3] * xz,
                SH_C2[4] * (xx - yy),
            ]
            if degree >= 3:
                out += [
                    SH_C3[0] * y * (3 * xx - yy),
                    SH_C3[1] * xy * z,
                    SH_C3[2] * y * (4 * zz - xx - yy),
                    SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
                    SH_C3[4] * x * (4 * zz - xx - yy),
                    SH_C3[5] * z * (xx - yy),
                    SH_C3[6] * x * (xx - 3 * yy),
                ]
    return torch.stack(out, dim=-1)


def eval_sh(
    degree: int,
    coeffs: Float[Tensor, "*#batch K 3"],
    dirs: Float[Tensor, "*#batch 3"],
    backend: str = "auto",
) -> Float[Tensor, "*batch 3"]:
    """SH colour: sum_k coeffs[..., k, :] * basis_k(dirs). Uses the first (degree+1)^2
    of the K >= (degree+1)^2 coefficients; batch dims broadcast (e.g. N K 3 with C N 3).
    Raw value, before gsplat's +0.5 and clamp (see `sh_to_color`). backend "auto" uses
    gsplat's CUDA kernel for float32 CUDA tensors (its kernels are float32 only) and torch
    otherwise; "torch" always uses torch (the reference rasterizer is an oracle and must not
    call the code it is checked against)."""
    k = num_bases(degree)
    if coeffs.shape[-2] < k:
        raise ValueError(f"SH degree {degree} needs {k} coefficients, got {coeffs.shape[-2]}")
    if (backend == "auto" and dirs.is_cuda and coeffs.is_cuda
            and dirs.dtype == coeffs.dtype == torch.float32):
        return _eval_sh_cuda(degree, coeffs, dirs)
    bases = sh_bases(degree, dirs)  # [..., k]
    if degree == 0:
        return bases[..., :1] * coeffs[..., 0, :]
    return (bases.unsqueeze(-1) * coeffs[..., :k, :]).sum(dim=-2)


def sh_to_color(
    degree: int,
    coeffs: Float[Tensor, "*#batch K 3"],
    dirs: Float[Tensor, "*#batch 3"],
    backend: str = "auto",
) -> Float[Tensor, "*batch 3"]:
    """gsplat's colour from SH: eval_sh(...) + 0.5, clamped at 0 (no upper clamp)."""
    return torch.clamp_min(eval_sh(degree, coeffs, dirs, backend) + 0.5, 0.0)


def _eval_sh_cuda(degree: int, coeffs: Tensor, dirs: Tensor) -> Tensor:
    # gsplat's kernel wants identical batch dims; broadcasting here keeps eval_sh's contract.
    from gsplat.cuda._wrapper import spherical_harmonics

    batch = torch.broadcast_shapes(coeffs.shape[:-2], dirs.shape[:-1])
    coeffs = coeffs.expand(*batch, *coeffs.shape[-2:])
    dirs = dirs.expand(*batch, 3)
    return spherical_harmonics(degree, dirs, coeffs)


__all__ = ["eval_sh", "sh_bases", "sh_to_color", "num_bases", "SH_C0", "MAX_DEGREE"]
