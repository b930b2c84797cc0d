"""Real spherical harmonics colour evaluation (degrees 0-3), gsplat/INRIA basis order.

`eval_sh` is pure torch and differentiable in both coefficients and directions. On CUDA
tensors it dispatches to gsplat's fused kernel (same constants, same order), so the two
paths are interchangeable. See CONVENTIONS.md for the layout.
"""

from __future__ import annotations

import functools

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


# Each basis as a polynomial in the unit direction (x, y, z), {monomial: coefficient}, a
# monomial written as its letters ("" is 1, "xxy" is x^2 y): bands 2 and 3 are the products
# of Sloan's formulas multiplied out, e.g. C3[0] y (3 x^2 - y^2) = 3 C3[0] xxy - C3[0] yyy.
_POLYS = (
    {"": SH_C0},
    {"y": -SH_C1}, {"z": SH_C1}, {"x": -SH_C1},
    {"xy": SH_C2[0]}, {"yz": SH_C2[1]}, {"zz": 2 * SH_C2[2], "xx": -SH_C2[2], "yy": -SH_C2[2]},
    {"xz": SH_C2[3]}, {"xx": SH_C2[4], "yy": -SH_C2[4]},
    {"xxy": 3 * SH_C3[0], "yyy": -SH_C3[0]}, {"xyz": SH_C3[1]},
    {"yzz": 4 * SH_C3[2], "xxy": -SH_C3[2], "yyy": -SH_C3[2]},
    {"zzz": 2 * SH_C3[3], "xxz": -3 * SH_C3[3], "yyz": -3 * SH_C3[3]},
    {"xzz": 4 * SH_C3[4], "xxx": -SH_C3[4], "xyy": -SH_C3[4]},
    {"xxz": SH_C3[5], "yyz": -SH_C3[5]}, {"xxx": SH_C3[6], "xyy": -3 * SH_C3[6]},
)


def _monomial_index(m: str) -> int:
    """Row of monomial `m` in `_coefficients`: 1, then `_monomials`' layout: d (3 columns),
    d d^T (9), d d d (27), each flattened row-major."""
    axes = ["xyz".index(c) for c in m]
    return sum(3**n for n in range(len(m))) + sum(a * 3 ** (len(m) - 1 - i) for i, a in enumerate(axes))


@functools.lru_cache(maxsize=8)
def _coefficients(degree: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """[1 + monomials, bases]: the constant row, then the matrix taking `_monomials` to the
    bases (made once per device: a host->GPU copy every step would synchronise)."""
    k = num_bases(degree)
    c = torch.zeros(sum(3**n for n in range(degree + 1)), k, dtype=torch.float64)
    for b, poly in enumerate(_POLYS[:k]):
        for m, v in poly.items():
            c[_monomial_index(m), b] += v
    return c.to(dtype=dtype, device=device)


def _monomials(degree: int, d: Tensor) -> Tensor:
    """d, d d^T, d d d, ... up to `degree` (with repeats), flattened: one broadcast
    multiply per degree, so the bases cost a handful of kernels, not dozens."""
    parts = [d]
    for _ in range(degree - 1):
        parts.append((parts[-1][..., :, None] * d[..., None, :]).flatten(-2))
    return torch.cat(parts, -1)


def sh_bases(degree: int, dirs: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch K"]:
    """The (degree+1)^2 basis functions at `dirs` (normalised here, need not be unit): a
    constant plus the monomials of the unit direction times a constant matrix."""
    if not 0 <= degree <= MAX_DEGREE:
        raise ValueError(f"SH degree must be in 0..{MAX_DEGREE}, got {degree}")
    if degree == 0:
        return torch.full_like(dirs[..., :1], SH_C0)
    d = torch.nn.functional.normalize(dirs, dim=-1)
    c = _coefficients(degree, d.dtype, d.device)
    mono = _monomials(degree, d)
    return torch.addmm(c[0], mono.reshape(-1, mono.shape[-1]), c[1:]).reshape(*d.shape[:-1], c.shape[1])


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
