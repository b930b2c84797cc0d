"""Issue 12's pieces against brute force: appearance transforms, SE(3) pose deltas, the
Mip-Splatting 3D filter, colour-corrected PSNR, the Gaussian cap and the demo variants."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from scipy.linalg import expm

from splatlab.renderers.splat.antialias import (
    FILTER_VARIANCE, apply_3d_filter, filter_variance, sampling_intervals)
from splatlab.renderers.splat.appearance import AffineAppearance, BilateralGridAppearance
from splatlab.renderers.splat.pose import PoseDeltas, pose_errors, rigid_inverse, se3_exp


# ---- appearance ----------------------------------------------------------------------
def test_affine_appearance_matches_per_pixel_matrix_and_keeps_mean_identity():
    torch.manual_seed(0)
    app = AffineAppearance(5).double()
    with torch.no_grad():
        app.deltas.normal_(0, 0.2)
    rgb = torch.rand(2, 4, 3, 3, dtype=torch.float64)
    idx = torch.tensor([3, 1])
    out = app(rgb, idx)
    d = app.deltas.detach().numpy()
    for c, i in enumerate(idx.tolist()):
        M = np.hstack([np.eye(3), np.zeros((3, 1))]) + d[i] - d.mean(0)
        for y in range(4):
            for x in range(3):
                want = M[:, :3] @ rgb[c, y, x].numpy() + M[:, 3]
                np.testing.assert_allclose(out[c, y, x].detach().numpy(), want, rtol=1e-12, atol=1e-12)
    # The average correction over the training images is exactly the identity: the scene
    # keeps the average look and cannot drift with the per-image corrections.
    all_mats = app.matrices(torch.arange(5)).detach()
    np.testing.assert_allclose(all_mats.mean(0).numpy(), np.hstack([np.eye(3), np.zeros((3, 1))]),
                               atol=1e-12)


@pytest.mark.parametrize("shape", [(8, 16, 16), (2, 3, 5), (3, 4, 2), (1, 2, 2)])
def test_atomic_free_bilateral_slice_equals_grid_sample(shape):
    """The CUDA path's slice (separable dense backward, no atomics) gives grid_sample's
    output and gradients, for the grid and for the luminance (some of it outside [0, 1],
    where border padding passes no gradient), in float64."""
    from splatlab.renderers.splat.appearance import slice_grids

    L, Y, X = shape
    g = torch.Generator().manual_seed(L * 100 + Y)
    grids = torch.randn(2, 12, L, Y, X, dtype=torch.float64, generator=g).requires_grad_(True)
    luma = (torch.rand(2, 9, 7, dtype=torch.float64, generator=g) * 1.2 - 0.1).requires_grad_(True)
    ref = slice_grids(grids, luma, atomic_free=False)
    out = slice_grids(grids, luma, atomic_free=True)
    up = torch.randn(ref.shape, dtype=torch.float64, generator=g)
    want = torch.autograd.grad(ref, [grids, luma], up)
    got = torch.autograd.grad(out, [grids, luma], up)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-14)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert (want[1].abs().sum() > 0) == (L > 1)  # one luminance node: the slice ignores luminance


def _trilinear_bruteforce(grid: np.ndarray, x: float, y: float, z: float) -> np.ndarray:
    """grid (12 L Y X), coordinates in [0, 1] over the node span (corners on nodes)."""
    _, L, Y, X = grid.shape
    gx, gy, gz = x * (X - 1), y * (Y - 1), min(max(z, 0.0), 1.0) * (L - 1)
    out = np.zeros(12)
    for dz in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                ix = min(int(math.floor(gx)) + dx, X - 1)
                iy = min(int(math.floor(gy)) + dy, Y - 1)
                iz = min(int(math.floor(gz)) + dz, L - 1)
                w = ((gx - math.floor(gx)) if dx else 1 - (gx - math.floor(gx))) \
                    * ((gy - math.floor(gy)) if dy else 1 - (gy - math.floor(gy))) \
                    * ((gz - math.floor(gz)) if dz else 1 - (gz - math.floor(gz)))
                out += w * grid[:, iz, iy, ix]
    return out


def test_bilateral_grid_slices_trilinearly_at_pixel_and_luminance():
    torch.manual_seed(1)
    app = BilateralGridAppearance(3, grid_xy=4, grid_guidance=3).double()
    with torch.no_grad():
        app.deltas.normal_(0, 0.3)
    h, w = 5, 7
    rgb = torch.rand(2, h, w, 3, dtype=torch.float64)
    idx = torch.tensor([2, 0])
    out = app(rgb, idx).detach().numpy()
    grids = app.grids(idx).detach().numpy()
    for c in range(2):
        for y in range(h):
            for x in range(w):
                col = rgb[c, y, x].numpy()
                luma = col @ np.array([0.299, 0.587, 0.114])
                # Pixel centres span the grid from the image's left/top edge to its right/bottom edge.
                m = _trilinear_bruteforce(grids[c], (x + 0.5) / w, (y + 0.5) / h, luma).reshape(3, 4)
                np.testing.assert_allclose(out[c, y, x], m[:, :3] @ col + m[:, 3], rtol=1e-10, atol=1e-10)


def test_bilateral_grid_starts_at_identity_and_tv_sees_roughness():
    app = BilateralGridAppearance(2, grid_xy=4, grid_guidance=3)
    rgb = torch.rand(1, 6, 6, 3)
    torch.testing.assert_close(app(rgb, torch.tensor([1])), rgb)
    assert float(app.regularizer().detach()) == 0.0
    with torch.no_grad():
        app.deltas[0, :, 1, 2, 2] = 1.0  # a spike: neighbours differ by 1 along 3 axes, both sides
    tv = float(app.regularizer().detach())
    # 12 channels x 2 neighbours per axis x 3 axes of squared difference 1, normalised
    # per axis by the entries of one image's difference tensor, averaged over 2 images.
    per_axis = [12 * 2 / (12 * 2 * 4 * 4), 12 * 2 / (12 * 3 * 3 * 4), 12 * 2 / (12 * 3 * 4 * 3)]
    assert tv == pytest.approx(sum(per_axis) / 2, rel=1e-6)


# ---- pose deltas ---------------------------------------------------------------------
def _twist_matrix(xi: torch.Tensor) -> torch.Tensor:
    w, v = xi[:3], xi[3:]
    m = torch.zeros(4, 4, dtype=xi.dtype)
    m[0, 1], m[0, 2], m[1, 2] = -w[2], w[1], -w[0]
    m[1, 0], m[2, 0], m[2, 1] = w[2], -w[1], w[0]
    m[:3, 3] = v
    return m


@pytest.mark.parametrize("scale", [1e-5, 1e-2, 0.05, 0.5, 2.5])
def test_se3_exp_is_the_matrix_exponential(scale):
    torch.manual_seed(2)
    xi = torch.randn(8, 6, dtype=torch.float64) * scale
    T = se3_exp(xi)
    for k in range(8):
        # scipy's expm (torch's matrix_exp is only good to ~1e-12 here)
        np.testing.assert_allclose(T[k].numpy(), expm(_twist_matrix(xi[k]).numpy()), rtol=1e-12, atol=1e-14)
    R = T[:, :3, :3]
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(8, 3, 3))
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(8, dtype=torch.float64))


def test_se3_exp_gradients_are_exact_at_and_near_identity():
    for xi0 in (torch.zeros(2, 6), torch.full((2, 6), 3e-4), torch.randn(2, 6)):
        xi = xi0.double().requires_grad_(True)
        assert torch.autograd.gradcheck(se3_exp, (xi,), eps=1e-6, atol=1e-7)


def test_pose_deltas_start_at_the_given_poses_and_compose_in_the_camera_frame():
    torch.manual_seed(3)
    c2w = se3_exp(torch.randn(4, 6, dtype=torch.float64))
    pd = PoseDeltas(4, extent=2.0).double()
    idx = torch.tensor([2, 0])
    torch.testing.assert_close(pd(c2w[idx], idx), c2w[idx])
    with torch.no_grad():
        pd.deltas[2] = torch.tensor([0.0, 0.0, 0.1, 0.5, 0.0, 0.0], dtype=torch.float64)
    out = pd(c2w[idx], idx)
    # A pure translation of 0.5 extent (= 1.0) along camera x moves the centre along the
    # camera's own x axis; the rotation about camera z keeps the viewing direction.
    want = c2w[2] @ torch.from_numpy(expm(_twist_matrix(torch.tensor([0, 0, 0.1, 1.0, 0, 0], dtype=torch.float64)).numpy()))
    torch.testing.assert_close(out[0], want)
    torch.testing.assert_close(out[0, :3, 2], c2w[2, :3, 2])
    torch.testing.assert_close(out[1], c2w[0])
    torch.testing.assert_close(rigid_inverse(out), torch.linalg.inv(out))


def test_pose_errors_measure_rotation_angle_and_centre_distance():
    a = se3_exp(torch.zeros(1, 6, dtype=torch.float64))
    b = se3_exp(torch.tensor([[0.0, math.radians(2.0), 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64))
    b[:, :3, 3] = torch.tensor([0.3, 0.0, 0.4], dtype=torch.float64)
    rot, trans = pose_errors(b, a)
    assert float(rot[0]) == pytest.approx(2.0, rel=1e-9) and float(trans[0]) == pytest.approx(0.5)


# ---- Mip-Splatting 3D filter -----------------------------------------------------------
def test_3d_filter_equals_covariance_convolution():
    """scales/opacities after the filter give exactly Sigma + s^2 I and an opacity times
    sqrt(det Sigma / det(Sigma + s^2 I)) (the integral of the Gaussian is kept)."""
    from splatlab.rasterizer.reference import covariance_3d

    torch.manual_seed(4)
    n = 16
    scales = torch.rand(n, 3, dtype=torch.float64) * 0.1 + 1e-3
    quats = torch.randn(n, 4, dtype=torch.float64)
    opac = torch.rand(n, dtype=torch.float64)
    var = torch.rand(n, dtype=torch.float64) * 0.01
    s2, o2 = apply_3d_filter(scales, opac, var)
    cov = covariance_3d(quats, scales)
    want_cov = cov + var[:, None, None] * torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(covariance_3d(quats, s2), want_cov)
    torch.testing.assert_close(o2, opac * torch.sqrt(torch.linalg.det(cov) / torch.linalg.det(want_cov)))


def test_sampling_intervals_take_the_finest_view_that_sees_each_gaussian():
    # Two cameras on the z axis looking at the origin (+z forward), at distances 2 and 5,
    # focal 100 and 50; one Gaussian in front of both, one behind the second only.
    eye = torch.eye(4, dtype=torch.float64)
    v1, v2 = eye.clone(), eye.clone()
    v1[2, 3], v2[2, 3] = 2.0, 5.0  # world->camera: z_cam = z_world + d
    K1 = torch.tensor([[100.0, 0, 32], [0, 100.0, 24], [0, 0, 1]], dtype=torch.float64)
    K2 = torch.tensor([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]], dtype=torch.float64)
    means = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, -3.0], [100.0, 0.0, 0.0]], dtype=torch.float64)
    iv = sampling_intervals(means, torch.stack([v1, v2]), torch.stack([K1, K2]), [64, 64], [48, 48])
    assert float(iv[0]) == pytest.approx(min(2 / 100, 5 / 50))
    assert float(iv[1]) == pytest.approx(2 / 50)  # z = -1 for camera 1: behind it
    assert float(iv[2]) == pytest.approx(float(iv[:2].max()))  # seen by none: the largest
    assert torch.allclose(filter_variance(iv), FILTER_VARIANCE * iv**2)


# ---- colour-corrected PSNR ---------------------------------------------------------------
def test_cc_psnr_undoes_an_affine_colour_change_and_never_lowers_psnr():
    from splatlab.app.metrics import affine_color_fit, cc_psnr, psnr

    torch.manual_seed(5)
    gt = torch.rand(2, 12, 10, 3, dtype=torch.float64) * 0.6 + 0.2
    M = torch.tensor([[0.8, 0.05, 0.0], [0.0, 1.1, 0.02], [0.03, 0.0, 0.7]], dtype=torch.float64)
    b = torch.tensor([0.05, -0.02, 0.1], dtype=torch.float64)
    # img such that M img + b = gt exactly: the fit recovers gt
    img = torch.linalg.solve(M, (gt - b).unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(affine_color_fit(img, gt), gt)
    assert float(cc_psnr(img, gt).min()) > 100
    noisy = (gt + 0.05 * torch.randn_like(gt)).clamp(0, 1)
    assert (cc_psnr(noisy, gt) >= psnr(noisy, gt) - 1e-9).all()


# ---- Gaussian cap ------------------------------------------------------------------------
def test_gaussian_cap_removes_the_least_opaque_and_keeps_optimizers_in_step():
    from splatlab.renderers.splat.budget import enforce_cap, gaussian_cap

    n = 10
    params = torch.nn.ParameterDict({
        "means": torch.nn.Parameter(torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 3)),
        "opacities": torch.nn.Parameter(torch.tensor([5, 1, 9, 0, 7, 3, 8, 2, 6, 4], dtype=torch.float32)),
    })
    opts = {k: torch.optim.Adam([{"params": [p], "lr": 0.1, "name": k}]) for k, p in params.items()}
    for p in params.values():
        p.sum().backward()
    for o in opts.values():
        o.step()
    state = {"grad2d": torch.arange(n, dtype=torch.float32)}
    assert enforce_cap(params, opts, state, 4) == 6
    kept = sorted(params["means"][:, 0].round().long().tolist())
    assert kept == [2, 4, 6, 8]  # the four most opaque: opacity logits 9, 7, 8, 6
    assert opts["means"].state[params["means"]]["exp_avg"].shape == (4, 3)
    assert sorted(state["grad2d"].long().tolist()) == [2, 4, 6, 8]
    assert enforce_cap(params, opts, state, 4) == 0
    assert gaussian_cap(123, torch.device("cpu")) == 123
    assert gaussian_cap(0, torch.device("cpu")) > 1000  # from the host's RAM: a real budget


def test_cpu_gaussian_cap_does_not_move_with_free_memory(monkeypatch):
    """The default CPU cap comes from physical RAM, not free RAM (MemFree): the page cache
    and other processes move MemFree, and below 65 MB it caps the CPU demo's 2,000 Gaussians,
    so two runs of one command could keep different counts and write different PLYs."""
    from splatlab.renderers.splat import budget

    cpu = torch.device("cpu")
    before = budget.gaussian_cap(0, cpu)
    sysconf = os.sysconf
    monkeypatch.setattr(os, "sysconf", lambda name: 1 if name == "SC_AVPHYS_PAGES" else sysconf(name))
    assert budget.gaussian_cap(0, cpu) == before


# ---- demo variants -----------------------------------------------------------------------
def test_demo_variants_load_by_name_and_record_what_they_change():
    from splatlab.scenes import SceneError, load_scene

    plain = load_scene("demo", downscale=4)
    exp = load_scene("demo:exposure", downscale=4)
    gains = np.asarray(exp.meta["exposure_gains"])
    np.testing.assert_allclose(gains[exp.train_idx].mean(0), 1.0)
    assert (gains[exp.test_idx] == 1.0).all() and gains[exp.train_idx].std() > 0.1
    t = exp.test_idx[1]
    np.testing.assert_array_equal(exp.images[t], plain.images[t])  # test views are clean
    i = exp.train_idx[0]
    want = np.clip(plain.images[i] / 255.0 * gains[i], 0, 1) * 255
    assert np.abs(exp.images[i].astype(float) - want).max() <= 1.0 + 1e-9

    noisy = load_scene("demo:noisy-poses", downscale=4)
    true = torch.tensor(noisy.meta["true_camtoworlds"])
    rot, trans = pose_errors(noisy.cameras.camtoworlds.double(), true)
    assert rot[noisy.train_idx].numpy() == pytest.approx(1.0, abs=1e-3)
    assert trans[noisy.train_idx].numpy() == pytest.approx(0.01 * plain.extent, rel=1e-3)
    # float32 poses: acos near 1 resolves ~0.03 degrees
    assert float(rot[noisy.test_idx].max()) < 0.05 and float(trans[noisy.test_idx].max()) < 1e-6
    np.testing.assert_array_equal(noisy.images[i], plain.images[i])  # pixels from the true pose

    zoom = load_scene("demo:zoom", downscale=2)
    assert zoom.images[zoom.train_idx[0]].shape == (60, 80, 3)
    assert zoom.images[zoom.test_idx[0]].shape == (15, 20, 3)
    # the quarter-resolution ground truth is the box-filtered full-resolution image
    full = load_scene("demo", downscale=2).images[zoom.test_idx[0]].astype(float)
    small = full.reshape(15, 4, 20, 4, 3).mean((1, 3))
    assert np.abs(zoom.images[zoom.test_idx[0]] - small).mean() < 1.0

    with pytest.raises(SceneError, match="demo:exposure"):
        load_scene("demo:nope")


def test_demo_distractor_masks_cover_exactly_the_transient_object():
    """A passer-by in 3 of 4 training views, hiding about a third of each at another
    place; the masks cover exactly the pixels it changes; test views never show it."""
    from splatlab.scenes import load_scene

    plain = load_scene("demo", downscale=4)
    dis = load_scene("demo:distractor", downscale=4)
    views = dis.meta["distractor_views"]
    assert dis.meta["demo_variant"]["name"] == "distractor" and dis.name == "demo-distractor"
    assert len(views) == 3 * len(dis.train_idx) // 4 and set(views) < set(dis.train_idx)
    cover, centre_x = [], []
    for i in views:
        m = dis.images.mask(i)
        assert m.shape == dis.images[i].shape[:2] and set(np.unique(m)) <= {0, 255}
        cover.append((m == 0).mean())
        centre_x.append(np.nonzero(m == 0)[1].mean() / m.shape[1])
    cover = np.array(cover)
    assert cover.min() > 0.1 and cover.max() < 0.6 and 0.28 < cover.mean() < 0.4
    assert np.std(centre_x) > 0.1  # somewhere else in each view, not always mid-frame
    for i in views[:4]:
        img, ref, m = dis.images[i], plain.images[i], dis.images.mask(i)
        # outside the mask the view is the clean scene (the passer-by casts no shadow)
        np.testing.assert_array_equal(img[m > 0], ref[m > 0])
        assert np.abs(img[m == 0].astype(int) - ref[m == 0]).mean() > 20
    for i in dis.test_idx + [i for i in dis.train_idx if i not in views][:2]:
        np.testing.assert_array_equal(dis.images[i], plain.images[i])
        assert (dis.images.mask(i) == 255).all()
    assert dis.images.has_masks and not plain.images.has_masks


def test_baked_3d_filter_renders_like_the_filtered_model():
    """The PLY-ready model (filter folded into scales and opacities) renders exactly what
    the model renders with its filter."""
    from splatlab.renderers.splat.casual import baked_model
    from splatlab.renderers.splat.model import SplatModel

    g = torch.Generator().manual_seed(6)
    pts = torch.rand(40, 3, generator=g) - 0.5
    model = SplatModel.from_points(pts, torch.rand(40, 3, generator=g), sh_degree=0, init_opacity=0.5)
    var = torch.rand(40, generator=g) * 1e-3
    view = torch.eye(4)
    view[2, 3] = 2.0
    K = torch.tensor([[40.0, 0, 16], [0, 40.0, 12], [0, 0, 1]])
    a = model.render(view[None], K[None], 32, 24, filter_variance=var).rgb
    b = baked_model(model, var).render(view[None], K[None], 32, 24).rgb
    c = model.render(view[None], K[None], 32, 24).rgb
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert (a - c).abs().max() > 1e-3  # the filter does change the image


def test_pose_opt_default_follows_where_the_poses_came_from(tmp_path):
    from types import SimpleNamespace

    from splatlab.renderers.splat.casual import rough_poses
    from splatlab.scenes import load_scene

    assert rough_poses(load_scene("demo:noisy-poses", downscale=8))[0] is True
    assert rough_poses(load_scene("demo", downscale=8))[0] is False
    assert rough_poses(SimpleNamespace(meta={}, format="nerfstudio", root=tmp_path))[0] is True
    assert rough_poses(SimpleNamespace(meta={}, format="colmap", root=tmp_path))[0] is False
    (tmp_path / "process.json").write_text('{"kind": "video"}')
    assert rough_poses(SimpleNamespace(meta={}, format="colmap", root=tmp_path))[0] is True
    (tmp_path / "process.json").write_text('{"kind": "images"}')
    assert rough_poses(SimpleNamespace(meta={}, format="colmap", root=tmp_path))[0] is False
    (tmp_path / "process.json").write_text("not json")
    assert rough_poses(SimpleNamespace(meta={}, format="colmap", root=tmp_path))[0] is False


# ---- wiring: masks in the loss and the sampler, the renderer's corrections --------------------
def test_masked_pixels_do_not_touch_the_loss():
    """Whatever the render or the ground truth shows where the mask is 0 (L1 and SSIM
    alike), the loss and its whole gradient are unchanged, and zero there."""
    from splatlab.app.losses import batch_loss
    from splatlab.renderers.base import Batch

    torch.manual_seed(7)
    gt = torch.rand(1, 24, 24, 3)
    mask = torch.ones(1, 24, 24, 1, dtype=torch.bool)
    mask[:, 6:13, 5:16] = False
    a = torch.rand(1, 24, 24, 3, requires_grad=True)
    b = torch.where(mask, a.detach(), torch.rand(1, 24, 24, 3)).requires_grad_()  # differs only where masked
    gt2 = torch.where(mask, gt, torch.rand(1, 24, 24, 3))  # a distractor in the ground truth
    for rgb_loss in ("l1", "mse"):
        for lam in (0.2, 1.0):  # 1.0: SSIM alone
            la, _ = batch_loss(a, Batch("image", None, gt, torch.tensor([0]), mask=mask), rgb_loss, lam)
            lb, _ = batch_loss(b, Batch("image", None, gt2, torch.tensor([0]), mask=mask), rgb_loss, lam)
            (ga,) = torch.autograd.grad(la, a)
            (gb,) = torch.autograd.grad(lb, b)
            assert float(la.detach()) == pytest.approx(float(lb.detach()), rel=1e-6)
            torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-9)
            assert float(ga[0, 6:13, 5:16].abs().max()) == 0.0 and float(ga.abs().max()) > 0
    plain, _ = batch_loss(b, Batch("image", None, gt2, torch.tensor([0])), "l1", 0.2)
    assert abs(float(plain.detach()) - float(lb.detach())) > 1e-3  # unmasked, the differing pixels do count


def test_masked_ssim_averages_the_windows_clear_of_the_mask():
    """masked_mean_ssim against brute force: the mean of SSIM over the 11x11 windows with
    no masked pixel; all kept is plain SSIM; no whole window is 1 (no signal)."""
    from splatlab.rasterizer.ssim import masked_mean_ssim, ssim_map

    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(2, 3, 20, 23, generator=g), torch.rand(2, 3, 20, 23, generator=g)
    keep = torch.ones(2, 1, 20, 23)
    torch.testing.assert_close(masked_mean_ssim(x, y, keep), ssim_map(x, y).mean())
    keep[0, :, 3:5, 4:9] = 0
    keep[1, :, 15, 20] = 0
    m = ssim_map(x, y)
    vals = [m[b, :, i, j] for b in range(2) for i in range(10) for j in range(13)
            if keep[b, 0, i:i + 11, j:j + 11].all()]
    assert 0 < len(vals) < 2 * 10 * 13
    torch.testing.assert_close(masked_mean_ssim(x, y, keep), torch.stack(vals).mean())
    assert float(masked_mean_ssim(x, y, torch.zeros(2, 1, 20, 23))) == 1.0


def test_sampler_hands_out_masks_only_when_asked_and_present():
    from splatlab.app.data import make_sampler
    from splatlab.app.errors import UserError
    from splatlab.scenes import load_scene

    dis = load_scene("demo:distractor", downscale=8)
    s = make_sampler("image", dis, torch.device("cpu"), seed=0)  # unset: the scene has masks
    batches = [s.next(k) for k in range(len(dis.train_idx))]
    with_mask = {int(b.image_idx) for b in batches if b.mask is not None}
    want = {k for k, i in enumerate(dis.train_idx) if i in dis.meta["distractor_views"]}
    assert with_mask == want  # the passer-by shows even in a 20x15 view
    for b in batches:
        if b.mask is not None:
            i = dis.train_idx[int(b.image_idx)]
            np.testing.assert_array_equal(b.mask[0, ..., 0].numpy(), dis.images.mask(i) > 0)
    off = make_sampler("image", dis, torch.device("cpu"), seed=0, masks=False)
    assert all(off.next(k).mask is None for k in range(len(dis.train_idx)))
    with pytest.raises(UserError, match="no masks"):
        make_sampler("image", load_scene("demo", downscale=8), torch.device("cpu"), seed=0, masks=True)


def _tiny_renderer(data: str, **cfg_fields):
    from splatlab.renderers.splat.config import PRESETS
    from splatlab.renderers.splat.renderer import SplatRenderer
    from splatlab.scenes import load_scene

    import dataclasses

    cfg = dataclasses.replace(PRESETS["cpu"][1], data=data, downscale=8, init_max_points=300, **cfg_fields)
    scene = load_scene(data, downscale=8)
    r = SplatRenderer.build(scene, cfg, torch.device("cpu"))
    r.setup_training(cfg, scene)
    return r, cfg, scene


def test_renderer_applies_pose_and_appearance_corrections_from_image_idx(tmp_path):
    from splatlab.app.data import make_sampler
    from splatlab.app.runs import with_refined_poses
    from splatlab.renderers.splat.renderer import SplatRenderer

    r, cfg, scene = _tiny_renderer("demo:noisy-poses", appearance="affine")
    names = [g.name for g in r.param_groups(cfg)]
    assert names[-2:] == ["appearance", "poses"]  # pose-opt on by default: poses marked rough
    batch = make_sampler("image", scene, torch.device("cpu"), seed=0).next(0)
    out = r.train_render(batch, 0)
    out.rgb.mean().backward()
    k = int(batch.image_idx)
    assert float(r.casual.poses.deltas.grad[k].abs().sum()) > 0
    assert float(r.casual.appearance.deltas.grad[k].abs().sum()) > 0
    assert float(r.casual.poses.deltas.grad[k + 1].abs().sum()) == 0  # other views untouched
    with torch.no_grad():
        r.casual.poses.deltas[3] = torch.tensor([0.01, 0, 0, 0, 0.02, 0])
    # Checkpoint round trip keeps the corrections; refined poses reach the run's cameras.
    r2 = SplatRenderer.from_state(r.state_dict())
    r2.setup_training(cfg, scene)
    torch.testing.assert_close(r2.casual.poses.deltas, r.casual.poses.deltas)
    r.write_outputs(tmp_path, scene.normalization)
    from splatlab.app import runs

    sj = with_refined_poses(runs.scene_to_json(scene), tmp_path)
    given, refined = np.asarray(sj["cameras"]["camtoworlds_given"]), np.asarray(sj["cameras"]["camtoworlds"])
    moved = np.abs(refined - given).max(axis=(1, 2)) > 1e-4
    assert moved.tolist() == [i == scene.train_idx[3] for i in range(len(given))]


def test_antialias_is_part_of_the_model_and_follows_densification():
    from splatlab.renderers.splat.renderer import SplatRenderer

    r, cfg, scene = _tiny_renderer("demo:zoom", antialias=True)
    assert r.filter_variance is not None and r.filter_variance.shape == (r.model.num_gaussians,)
    assert float(r.filter_variance.min()) > 0
    back = SplatRenderer.from_state(r.state_dict())
    assert back.antialias and torch.equal(back.filter_variance, r.filter_variance)
    cams = scene.cameras[scene.test_idx[:1]]
    torch.testing.assert_close(back.render(cams).rgb, r.render(cams).rgb)
    live = r.live_copy()
    torch.testing.assert_close(live.render(cams).rgb, r.render(cams).rgb)
    plain, _, _ = _tiny_renderer("demo:zoom")
    assert plain.filter_variance is None and not plain.antialias
