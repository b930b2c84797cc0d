"""Metrics against brute force: PSNR vs its formula, SSIM vs a straightforward float64
sliding-window implementation written independently of app/metrics.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from splatlab.app import metrics
from splatlab.app.losses import photometric_loss


def _ssim_bruteforce(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. 2004, per channel, 11x11 Gaussian window (sigma 1.5), valid windows only."""
    r = np.arange(11) - 5.0
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5**2))
    g /= g.sum()
    c1, c2 = 0.01**2, 0.03**2
    h, w, c = x.shape
    vals = []
    for ch in range(c):
        for i in range(h - 10):
            for j in range(w - 10):
                a, b = x[i : i + 11, j : j + 11, ch], y[i : i + 11, j : j + 11, ch]
                ma, mb = (g * a).sum(), (g * b).sum()
                va, vb = (g * (a - ma) ** 2).sum(), (g * (b - mb) ** 2).sum()
                cov = (g * (a - ma) * (b - mb)).sum()
                vals.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_psnr_matches_formula():
    rng = np.random.default_rng(0)
    a, b = rng.random((2, 9, 13, 3)), rng.random((2, 9, 13, 3))
    got = metrics.psnr(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    want = [10 * math.log10(1.0 / np.mean((a[k] - b[k]) ** 2)) for k in range(2)]
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("noise", [0.02, 0.3])
def test_ssim_matches_bruteforce(noise):
    rng = np.random.default_rng(1)
    x = rng.random((17, 21, 3))
    y = np.clip(x + noise * rng.standard_normal(x.shape), 0, 1)
    got = float(metrics.ssim(torch.from_numpy(x)[None], torch.from_numpy(y)[None])[0])
    assert got == pytest.approx(_ssim_bruteforce(x, y), abs=1e-10)
    # float32 (what training and eval use) stays close to the float64 answer
    got32 = float(metrics.ssim(torch.from_numpy(x).float()[None], torch.from_numpy(y).float()[None])[0])
    assert got32 == pytest.approx(_ssim_bruteforce(x, y), abs=2e-5)


def test_ssim_identity_and_batch():
    x = torch.rand(3, 16, 16, 3, dtype=torch.float64)
    torch.testing.assert_close(metrics.ssim(x, x), torch.ones(3, dtype=torch.float64))
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    per = metrics.ssim(x, y)
    for k in range(3):
        torch.testing.assert_close(per[k], metrics.ssim(x[k : k + 1], y[k : k + 1])[0])


def test_loss_is_l1_plus_dssim_and_differentiable():
    x = torch.rand(1, 16, 18, 3, dtype=torch.float64, requires_grad=True)
    y = torch.rand(1, 16, 18, 3, dtype=torch.float64)
    loss, mse = photometric_loss(x, y, 0.2)
    want = 0.8 * (x - y).abs().mean() + 0.2 * (1 - metrics.ssim(x, y)[0])
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(mse, (x - y).square().mean().detach())
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # The SSIM gradient against central differences along random directions (float64).
    xs = x.detach().clone().requires_grad_()
    metrics.ssim(xs, y)[0].backward()
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        d = torch.randn(x.shape, generator=g, dtype=torch.float64)
        eps = 1e-6
        fd = (metrics.ssim(xs.detach() + eps * d, y)[0] - metrics.ssim(xs.detach() - eps * d, y)[0]) / (2 * eps)
        assert float((xs.grad * d).sum()) == pytest.approx(float(fd), rel=1e-6, abs=1e-9)


def test_lpips_is_none_without_local_weights(monkeypatch, tmp_path):
    # Never downloads: with an empty hub dir there are no AlexNet weights, so no LPIPS.
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    metrics._lpips_net.cache_clear()
    assert metrics.lpips_fn("cpu") is None
    metrics._lpips_net.cache_clear()
    assert metrics.mean_or_none([0.1, None]) is None
    assert metrics.mean_or_none([0.1, 0.3]) == pytest.approx(0.2)
