"""Volume compositing and the proposal sampler's math against brute-force loops (float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from splatlab.rasterizer.volume import composite, composite_packed
from splatlab.renderers.nerf.sampler import _outer, distortion_loss, interlevel_loss, sample_pdf, uniform_bins


def loop_composite(sig, rgb, t0, t1, bg):
    """NeRF's quadrature, one sample at a time: T *= (1 - alpha)."""
    out_rgb, out_a, out_d = [], [], []
    for r in range(len(sig)):
        T, c, a, d = 1.0, np.zeros(3), 0.0, 0.0
        for i in range(len(sig[r])):
            alpha = 1.0 - math.exp(-sig[r][i] * (t1[r][i] - t0[r][i]))
            w = T * alpha
            c += w * np.asarray(rgb[r][i])
            a += w
            d += w * 0.5 * (t0[r][i] + t1[r][i])
            T *= 1.0 - alpha
        out_rgb.append(c + (1 - a) * np.asarray(bg[r]))
        out_a.append(a)
        out_d.append(d / max(a, 1e-10))
    return np.array(out_rgb), np.array(out_a), np.array(out_d)


def _rays(seed, R=6, S=9):
    g = torch.Generator().manual_seed(seed)
    t = torch.sort(torch.rand(R, S + 1, generator=g, dtype=torch.float64) * 4 + 0.5, -1).values
    sig = torch.rand(R, S, generator=g, dtype=torch.float64) * 3
    sig[0] = 0.0  # an empty ray: all background
    sig[1, 3] = 1e4  # an opaque wall
    rgb = torch.rand(R, S, 3, generator=g, dtype=torch.float64)
    bg = torch.rand(R, 3, generator=g, dtype=torch.float64)
    return sig, rgb, t[:, :-1], t[:, 1:], bg


@pytest.mark.parametrize("seed", [0, 1])
def test_composite_matches_loop(seed):
    sig, rgb, t0, t1, bg = _rays(seed)
    out = composite(sig, rgb, t0, t1, bg)
    c, a, d = loop_composite(sig.tolist(), rgb.tolist(), t0.tolist(), t1.tolist(), bg.tolist())
    np.testing.assert_allclose(out.rgb.numpy(), c, atol=1e-12)
    np.testing.assert_allclose(out.alpha[:, 0].numpy(), a, atol=1e-12)
    np.testing.assert_allclose(out.depth[:, 0].numpy(), d, atol=1e-9)
    assert out.alpha[0, 0] == 0 and torch.allclose(out.rgb[0], bg[0])
    assert out.alpha[1, 0] > 0.999999  # the wall hides what lies behind it


def test_packed_matches_padded_with_ragged_rays():
    sig, rgb, t0, t1, bg = _rays(2, R=5, S=7)
    counts = [7, 0, 3, 7, 1]  # ray 1 has no samples at all
    keep = torch.tensor([[i < c for i in range(7)] for c in counts])
    ray_idx = torch.arange(5)[:, None].expand(5, 7)[keep]
    packed = composite_packed(sig[keep], rgb[keep], t0[keep], t1[keep], ray_idx, 5, bg)
    padded = composite(sig * keep, rgb, t0, t1, bg)  # dropped samples: zero density
    torch.testing.assert_close(packed.rgb, padded.rgb)
    torch.testing.assert_close(packed.alpha, padded.alpha)
    torch.testing.assert_close(packed.weights, padded.weights[keep])
    torch.testing.assert_close(packed.rgb[1], bg[1])


def test_composite_gradcheck():
    _, rgb, t0, t1, bg = _rays(3, R=3, S=4)
    sig = torch.rand(3, 4, dtype=torch.float64) + 0.2  # no empty ray: depth is / alpha
    sig.requires_grad_(True), rgb.requires_grad_(True)

    def f(s, c):
        o = composite(s, c, t0, t1, bg)
        return o.rgb, o.alpha, o.depth

    assert torch.autograd.gradcheck(f, (sig, rgb))


def test_distortion_loss_matches_double_sum():
    g = torch.Generator().manual_seed(0)
    bins = torch.sort(torch.rand(4, 12, generator=g, dtype=torch.float64), -1).values
    w = torch.rand(4, 11, generator=g, dtype=torch.float64)
    w = w / w.sum(-1, keepdim=True)
    mid = 0.5 * (bins[:, 1:] + bins[:, :-1])
    brute = 0.0
    for r in range(4):
        s = sum(w[r, i] * w[r, j] * abs(mid[r, i] - mid[r, j]) for i in range(11) for j in range(11))
        s += sum(w[r, i] ** 2 * (bins[r, i + 1] - bins[r, i]) for i in range(11)) / 3
        brute += float(s) / 4
    assert distortion_loss(bins, w).item() == pytest.approx(brute, rel=1e-12)


def test_outer_sums_overlapping_bins():
    g = torch.Generator().manual_seed(1)
    t0 = torch.sort(torch.rand(3, 8, generator=g, dtype=torch.float64), -1).values
    t1 = torch.sort(torch.rand(3, 15, generator=g, dtype=torch.float64), -1).values
    t1[:, 0], t1[:, -1] = 0.0, 1.0  # the envelope spans the whole ray, as the sampler's bins do
    y1 = torch.rand(3, 14, generator=g, dtype=torch.float64)
    ours = _outer(t0, t1, y1)
    for r in range(3):
        for i in range(7):
            a, b = t0[r, i], t0[r, i + 1]
            want = sum(float(y1[r, k]) for k in range(14) if t1[r, k] < b and t1[r, k + 1] > a)
            assert ours[r, i].item() == pytest.approx(want, abs=1e-12)


def test_interlevel_loss_zero_when_proposal_bounds_and_positive_otherwise():
    bins = torch.linspace(0, 1, 9, dtype=torch.float64).expand(2, -1)
    w = torch.zeros(2, 8, dtype=torch.float64)
    w[:, 3] = 1.0
    assert interlevel_loss(bins, w, bins, w).item() == 0.0
    shifted = torch.roll(w, 2, -1)
    assert interlevel_loss(bins, w, bins, shifted).item() > 0.5


def test_sample_pdf_follows_the_weights():
    """Inverse-CDF sampling puts the samples where the weights are, plus the padding's share."""
    torch.manual_seed(0)
    bins = uniform_bins(64, 10, jitter=False, device="cpu")
    w = torch.zeros(64, 10)
    w[:, 6] = 1.0  # all mass in [0.6, 0.7)
    for jitter in (False, True):
        new = sample_pdf(bins, w, 256, jitter=jitter)
        assert new.shape == (64, 257)
        assert (new[:, 1:] >= new[:, :-1]).all() and new[:, 0].eq(0).all() and new[:, -1].eq(1).all()
        inner = new[:, 1:-1]
        frac_in = float(((inner >= 0.6) & (inner <= 0.7)).float().mean())
        # nerfacto's histogram padding, 0.01 added to each of the 10 bins: the bin's share of
        # the density is 1.01 / 1.1, and the rest stays spread over the ray
        assert abs(frac_in - 1.01 / 1.1) < 0.01, frac_in


def test_packed_matches_dense_values_and_gradients_on_ragged_rays():
    """Random ragged rays (some empty) packed end to end: colour, opacity, depth and the
    gradients w.r.t. density and colour equal the padded reference (float64), opaque walls
    (capped in the packed cumsum) included."""
    g = torch.Generator().manual_seed(4)
    R, S = 9, 12
    counts = torch.randint(0, S + 1, (R,), generator=g)
    counts[2] = counts[5] = 0  # empty rays, one in the middle
    counts[0] = S
    keep = torch.arange(S)[None] < counts[:, None]
    t = torch.sort(torch.rand(R, S + 1, generator=g, dtype=torch.float64) * 3 + 0.2, -1).values
    t0, t1 = t[:, :-1], t[:, 1:]
    sig = torch.rand(R, S, generator=g, dtype=torch.float64) * 4
    sig[0, 4] = 5e4  # far past the cap: everything behind it is hidden
    rgb = torch.rand(R, S, 3, generator=g, dtype=torch.float64)
    bg = torch.rand(R, 3, generator=g, dtype=torch.float64)
    ray_idx = torch.arange(R)[:, None].expand(R, S)[keep]

    sp, cp = sig[keep].clone().requires_grad_(True), rgb[keep].clone().requires_grad_(True)
    packed = composite_packed(sp, cp, t0[keep], t1[keep], ray_idx, R, bg)
    sd, cd = sig.clone().requires_grad_(True), rgb.clone().requires_grad_(True)
    dense = composite(sd * keep, cd, t0, t1, bg)  # dropped samples: zero density
    for a, b in ((packed.rgb, dense.rgb), (packed.alpha, dense.alpha), (packed.depth, dense.depth)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert torch.equal(packed.rgb[2], bg[2]) and packed.alpha[5, 0] == 0 and packed.depth[5, 0] == 0
    probe = torch.rand(R, 5, generator=g, dtype=torch.float64)  # a random linear loss of all outputs
    loss = lambda o: (torch.cat([o.rgb, o.alpha, o.depth], -1) * probe).sum()  # noqa: E731
    gp = torch.autograd.grad(loss(packed), (sp, cp))
    gd = torch.autograd.grad(loss(dense), (sd, cd))
    torch.testing.assert_close(gp[0], gd[0][keep], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(gp[1], gd[1][keep], rtol=0, atol=1e-12)
    assert gp[0].abs().sum() > 0.1 and gp[1].abs().sum() > 0.1  # the comparison is not of zeros


def test_packed_transmittance_stays_exact_after_many_opaque_rays():
    """The packed cumsum runs over every ray: a million opaque samples before a ray must not
    cost it its precision (float64 sum, capped sigma * delta)."""
    from splatlab.rasterizer.volume import render_weights_packed

    n_wall = 1_000_000
    sig = torch.cat([torch.full((n_wall,), 1e6), torch.tensor([0.3, 0.2, 0.1])])
    ray_idx = torch.cat([torch.arange(n_wall) // 1000, torch.full((3,), n_wall // 1000)])
    w, trans = render_weights_packed(sig, torch.full_like(sig, 0.01), ray_idx, n_wall // 1000 + 1)
    want = torch.exp(-0.01 * torch.tensor([0.0, 0.3, 0.5]))
    torch.testing.assert_close(trans[-3:], want, rtol=0, atol=1e-6)
    assert torch.isfinite(w).all()
