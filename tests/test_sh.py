"""SH evaluation against an independent float64 real-SH built from associated Legendre
polynomials, plus orthonormality by Gauss-Legendre x uniform-phi quadrature."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from splatlab.rasterizer.sh import eval_sh, sh_bases, sh_to_color


def _legendre(l: int, m: int, x: np.ndarray) -> np.ndarray:
    """P_l^m(x), m >= 0, with the Condon-Shortley phase (-1)^m, by the standard recurrence."""
    pmm = np.ones_like(x)
    somx2 = np.sqrt(np.clip(1 - x * x, 0, None))
    fact = 1.0
    for _ in range(m):
        pmm = -pmm * fact * somx2
        fact += 2.0
    if l == m:
        return pmm
    pmmp1 = x * (2 * m + 1) * pmm
    if l == m + 1:
        return pmmp1
    for ll in range(m + 2, l + 1):
        pll = ((2 * ll - 1) * x * pmmp1 - (ll + m - 1) * pmm) / (ll - m)
        pmm, pmmp1 = pmmp1, pll
    return pmmp1


def real_sh_brute(degree: int, dirs: np.ndarray) -> np.ndarray:
    """Real SH Y_lm, order m = -l..l within each band (gsplat/INRIA order), float64."""
    d = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
    theta = np.arccos(np.clip(d[..., 2], -1, 1))
    phi = np.arctan2(d[..., 1], d[..., 0])
    out = []
    for l in range(degree + 1):
        for m in range(-l, l + 1):
            am = abs(m)
            k = math.sqrt((2 * l + 1) / (4 * math.pi) * math.factorial(l - am) / math.factorial(l + am))
            p = _legendre(l, am, np.cos(theta))
            if m == 0:
                out.append(k * p)
            elif m > 0:
                out.append(math.sqrt(2) * k * np.cos(m * phi) * p)
            else:
                out.append(math.sqrt(2) * k * np.sin(am * phi) * p)
    return np.stack(out, -1)


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_bases_match_legendre_definition(degree):
    rng = np.random.default_rng(degree)
    dirs = rng.normal(size=(500, 3)) * rng.uniform(0.1, 5, size=(500, 1))  # not unit
    ours = sh_bases(degree, torch.from_numpy(dirs)).numpy()
    np.testing.assert_allclose(ours, real_sh_brute(degree, dirs), atol=1e-12)


def test_band1_sign_convention():
    # gsplat/INRIA band 1 is (-C1 y, C1 z, -C1 x): check on the axes, not only by formula.
    c1 = math.sqrt(3 / (4 * math.pi))
    b = sh_bases(1, torch.eye(3, dtype=torch.float64))
    expected = torch.tensor([[1, 0, 0, -c1], [1, -c1, 0, 0], [1, 0, c1, 0]], dtype=torch.float64)
    expected[:, 0] = 0.28209479177387814
    torch.testing.assert_close(b, expected)


def test_orthonormal_by_quadrature():
    # Gauss-Legendre in cos(theta) x uniform phi integrates these degree <= 6 products exactly.
    x, wx = np.polynomial.legendre.leggauss(12)
    nphi = 16
    phi = (np.arange(nphi) + 0.5) * 2 * math.pi / nphi
    ct, ph = np.meshgrid(x, phi, indexing="ij")
    st = np.sqrt(1 - ct * ct)
    dirs = np.stack([st * np.cos(ph), st * np.sin(ph), ct], -1).reshape(-1, 3)
    w = (wx[:, None] * np.full(nphi, 2 * math.pi / nphi)[None, :]).reshape(-1)
    y = sh_bases(3, torch.from_numpy(dirs)).numpy()
    gram = (y * w[:, None]).T @ y
    np.testing.assert_allclose(gram, np.eye(16), atol=1e-12)


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_eval_sh_sums_coeffs_and_broadcasts(degree):
    g = torch.Generator().manual_seed(3)
    coeffs = torch.randn(7, 16, 3, generator=g, dtype=torch.float64)  # K larger than needed
    dirs = torch.randn(2, 7, 3, generator=g, dtype=torch.float64)  # C N 3 against N K 3
    out = eval_sh(degree, coeffs, dirs)
    assert out.shape == (2, 7, 3)
    k = (degree + 1) ** 2
    y = real_sh_brute(degree, dirs.numpy())  # 2 7 k
    expected = np.einsum("cnk,nkd->cnd", y, coeffs[:, :k].numpy())
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-12)
    col = sh_to_color(degree, coeffs, dirs)
    torch.testing.assert_close(col, torch.clamp_min(out + 0.5, 0.0))


def test_eval_sh_gradcheck():
    g = torch.Generator().manual_seed(4)
    coeffs = torch.randn(5, 16, 3, generator=g, dtype=torch.float64, requires_grad=True)
    dirs = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda c, d: eval_sh(3, c, d), (coeffs, dirs))


def test_too_few_coeffs_is_an_error():
    with pytest.raises(ValueError):
        eval_sh(2, torch.zeros(3, 4, 3), torch.ones(3, 3))


@pytest.mark.cuda
@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_cuda_twin_matches_torch(degree):
    from splatlab.rasterizer.sh import sh_bases as bases

    g = torch.Generator().manual_seed(5)
    coeffs = torch.randn(1000, 16, 3, generator=g)
    dirs = torch.randn(1000, 3, generator=g)
    ref = (bases(degree, dirs)[..., None] * coeffs[:, : (degree + 1) ** 2]).sum(-2)
    cu = eval_sh(degree, coeffs.cuda(), dirs.cuda()).cpu()
    torch.testing.assert_close(cu, ref, atol=1e-5, rtol=1e-5)
