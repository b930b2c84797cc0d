"""The reference rasterizer against brute force: an independent per-pixel, depth-sorted
float64 compositor (numpy, no tiles), independent covariance and pinhole projection,
gradcheck, tiling invariance, absgrad and the densification-strategy contract."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from splatlab.rasterizer import rasterize
from splatlab.rasterizer import reference as ref
from test_sh import real_sh_brute

F64 = torch.float64


# ---------------------------------------------------------------------------------------
# Scenes
# ---------------------------------------------------------------------------------------
def look_at(eye, target=(0.0, 0.0, 0.0)) -> torch.Tensor:
    """World-to-camera, OpenCV axes (+x right, +y down, +z forward), world +y up."""
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    f = target - eye
    f /= np.linalg.norm(f)
    r = np.cross(f, [0.0, 1.0, 0.0])
    r /= np.linalg.norm(r)
    d = np.cross(f, r)
    v = np.eye(4)
    v[:3, :3] = np.stack([r, d, f])
    v[:3, 3] = -v[:3, :3] @ eye
    return torch.from_numpy(v)


def make_scene(seed=0, n=40, n_cams=2, width=23, height=17, sh_degree=None, dtype=F64,
               extras=True, focal=25.0):
    """Gaussians in a box around the origin seen from cameras 4 units away, with
    off-centre principal points; `extras` adds Gaussians behind the first camera, far
    off-screen, and an opaque stack along its axis (0.999 clamp and early stop)."""
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g, dtype=F64) * 2 - 1) * torch.tensor([1.2, 0.9, 0.8], dtype=F64)
    quats = torch.randn(n, 4, generator=g, dtype=F64)
    scales = torch.exp(torch.rand(n, 3, generator=g, dtype=F64) * 1.5 - 3.2)
    opac = torch.rand(n, generator=g, dtype=F64) * 0.85 + 0.1
    if extras:
        stack = torch.tensor([[0.05, 0.02, z] for z in (-0.6, -0.3, 0.0, 0.3, 0.6, 0.9)], dtype=F64)
        other = torch.tensor([[0.0, 0.0, -4.5], [0.2, 0.1, -5.0],  # behind camera 0
                              [9.0, 0.0, 0.0], [0.0, -8.0, 0.5]], dtype=F64)  # off-screen
        k = len(stack) + len(other)
        means = torch.cat([means, stack, other])
        quats = torch.cat([quats, torch.randn(k, 4, generator=g, dtype=F64)])
        scales = torch.cat([scales, torch.full((k, 3), 0.25, dtype=F64)])
        opac = torch.cat([opac, torch.tensor([0.97, 0.9999, 0.95, 0.99, 0.98, 0.96]), torch.full((4,), 0.8)]).to(F64)
        n = len(means)
    if sh_degree is None:
        colors = torch.rand(n, 3, generator=g, dtype=F64)
    else:
        colors = torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g, dtype=F64) * 0.4
    eyes = [(0.0, 0.0, -4.0), (1.5, 0.8, -3.6), (-2.5, -0.5, -3.0)][:n_cams]
    viewmats = torch.stack([look_at(e) for e in eyes])
    Ks = torch.stack([torch.tensor([[focal, 0, 0.42 * width], [0, focal * 1.1, 0.58 * height], [0, 0, 1]],
                                   dtype=F64) for _ in eyes])
    Ks[1:, 0, 2] += 1.3  # cameras differ in principal point too
    cast = lambda t: t.to(dtype).contiguous()  # noqa: E731
    return [cast(t) for t in (means, quats, scales, opac, colors, viewmats, Ks)]


# ---------------------------------------------------------------------------------------
# Brute force (numpy float64, written from the spec, not from reference.py)
# ---------------------------------------------------------------------------------------
def rotmat_rodrigues(q: np.ndarray) -> np.ndarray:
    """Rotation from a wxyz quaternion via axis-angle and Rodrigues' formula."""
    q = q / np.linalg.norm(q)
    w, v = q[0], q[1:]
    s = np.linalg.norm(v)
    if s < 1e-15:
        return np.eye(3)
    angle, axis = 2 * math.atan2(s, w), v / s
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def brute_project(mean, quat, scale, viewmat, K, width, height, near=0.01, far=1e10):
    """(mean2d, z, cov2d before the 0.3 blur) or None if outside the depth range."""
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    p = R @ mean + t
    if p[2] < near or p[2] > far:
        return None
    rot = rotmat_rodrigues(quat)
    cov_c = R @ (rot @ np.diag(scale**2) @ rot.T) @ R.T
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    ux, uy = p[0] / p[2], p[1] / p[2]
    # the FOV limits widened by 0.3 tan(fov/2) on each side
    ux = min(max(ux, -(cx / fx + 0.15 * width / fx)), (width - cx) / fx + 0.15 * width / fx)
    uy = min(max(uy, -(cy / fy + 0.15 * height / fy)), (height - cy) / fy + 0.15 * height / fy)
    J = np.array([[fx / p[2], 0, -fx * ux / p[2]], [0, fy / p[2], -fy * uy / p[2]]])
    mean2d = np.array([fx * p[0] / p[2] + cx, fy * p[1] / p[2] + cy])
    return mean2d, p[2], J @ cov_c @ J.T


def brute_render(means, quats, scales, opac, colors, viewmats, Ks, width, height, *,
                 sh_degree=None, backgrounds=None, render_mode="RGB", antialiased=False):
    """For every pixel: every Gaussian's 2D Gaussian, sorted by depth, composited."""
    a = [t.detach().double().numpy() for t in (means, quats, scales, opac, colors, viewmats, Ks)]
    means, quats, scales, opac, colors, viewmats, Ks = a
    bgs = None if backgrounds is None else backgrounds.detach().double().numpy()
    imgs, alphas = [], []
    for c in range(len(viewmats)):
        campos = -viewmats[c, :3, :3].T @ viewmats[c, :3, 3]
        items = []
        for i in range(len(means)):
            pr = brute_project(means[i], quats[i], scales[i], viewmats[c], Ks[c], width, height)
            if pr is None:
                continue
            m2, z, cov = pr
            blurred = cov + 0.3 * np.eye(2)
            det = np.linalg.det(blurred)
            if det <= 0:
                continue
            o = opac[i] * (math.sqrt(max(0.0, np.linalg.det(cov) / det)) if antialiased else 1.0)
            if sh_degree is None:
                rgb = colors[i]
            else:
                y = real_sh_brute(sh_degree, (means[i] - campos)[None])[0]
                rgb = np.maximum(y @ colors[i][: len(y)] + 0.5, 0.0)
            feat = {"RGB": rgb, "D": [z], "ED": [z]}.get(render_mode, np.append(rgb, z))
            items.append((z, i, m2, np.linalg.inv(blurred), o, np.asarray(feat, float)))
        items.sort(key=lambda it: (it[0], it[1]))
        dim = 3 if render_mode == "RGB" else (1 if render_mode in ("D", "ED") else 4)
        img, alph = np.zeros((height, width, dim)), np.zeros((height, width, 1))
        for yy in range(height):
            for xx in range(width):
                pix = np.array([xx + 0.5, yy + 0.5])
                T, acc = 1.0, np.zeros(dim)
                for _, _, m2, conic, o, feat in items:
                    d = m2 - pix
                    sigma = 0.5 * d @ conic @ d
                    if sigma < 0:
                        continue
                    alpha = min(0.999, o * math.exp(-sigma))
                    if alpha < 1 / 255:
                        continue
                    if T * (1 - alpha) <= 1e-4:
                        break
                    acc += feat * alpha * T
                    T *= 1 - alpha
                if bgs is not None and render_mode not in ("D", "ED"):
                    bg = bgs[c] if render_mode == "RGB" else np.append(bgs[c], 0.0)
                    acc = acc + T * bg
                if render_mode in ("ED", "RGB+ED"):
                    acc[-1] /= max(1 - T, 1e-10)
                img[yy, xx], alph[yy, xx] = acc, 1 - T
        imgs.append(img)
        alphas.append(alph)
    return np.stack(imgs), np.stack(alphas)


# ---------------------------------------------------------------------------------------
# Forward against brute force
# ---------------------------------------------------------------------------------------
CASES = [
    dict(render_mode="RGB"),
    dict(render_mode="RGB", backgrounds=True),
    dict(render_mode="RGB", antialiased=True, sh_degree=2),
    dict(render_mode="D"),
    dict(render_mode="ED", backgrounds=True),
    dict(render_mode="RGB+D", backgrounds=True, sh_degree=3),
    dict(render_mode="RGB+ED", antialiased=True, sh_degree=1),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_reference_matches_brute_force(case):
    case = dict(case)
    sh = case.pop("sh_degree", None)
    means, quats, scales, opac, colors, viewmats, Ks = make_scene(seed=1, sh_degree=sh)
    bg = torch.tensor([[0.2, 0.5, 0.9], [1.0, 0.3, 0.0]], dtype=F64) if case.pop("backgrounds", False) else None
    out = rasterize(means, quats, scales, opac, colors, viewmats, Ks, 23, 17,
                    sh_degree=sh, backgrounds=bg, backend="reference", **case)
    img, alpha = brute_render(means, quats, scales, opac, colors, viewmats, Ks, 23, 17,
                              sh_degree=sh, backgrounds=bg, **case)
    assert out.colors.shape == img.shape and out.alphas.shape == alpha.shape
    np.testing.assert_allclose(out.alphas.numpy(), alpha, atol=1e-9)
    np.testing.assert_allclose(out.colors.numpy(), img, atol=1e-8)
    if case["render_mode"] != "RGB":
        np.testing.assert_allclose(out.depths.numpy(), img[..., -1:], atol=1e-8)
    else:
        assert out.depths is None
    # The scene exercises what it should: culled Gaussians, an early-stopped pixel.
    assert (~out.visible[0]).sum() >= 4
    assert alpha.max() > 1 - 1e-3


def test_float32_matches_brute_force():
    scene = make_scene(seed=2, dtype=torch.float32, sh_degree=3)
    out = rasterize(*scene, 23, 17, sh_degree=3, backend="reference")
    img, alpha = brute_render(*scene, 23, 17, sh_degree=3)
    np.testing.assert_allclose(out.colors.numpy(), img, atol=1e-4)
    np.testing.assert_allclose(out.alphas.numpy(), alpha, atol=1e-4)


# ---------------------------------------------------------------------------------------
# Projection pieces
# ---------------------------------------------------------------------------------------
def test_covariance_matches_rodrigues():
    g = torch.Generator().manual_seed(7)
    quats = torch.randn(50, 4, generator=g, dtype=F64)
    scales = torch.rand(50, 3, generator=g, dtype=F64) + 0.1
    cov = ref.covariance_3d(quats, scales).numpy()
    for i in range(50):
        r = rotmat_rodrigues(quats[i].numpy())
        np.testing.assert_allclose(cov[i], r @ np.diag(scales[i].numpy() ** 2) @ r.T, atol=1e-12)


def test_projection_matches_pinhole_and_radii_rule():
    means, quats, scales, opac, _, viewmats, Ks = make_scene(seed=3, n=60)
    for aa in (False, True):
        proj = ref.project(means, quats, scales, opac, viewmats, Ks, 23, 17, antialiased=aa)
        for c in range(2):
            for i in range(len(means)):
                pr = brute_project(means[i].numpy(), quats[i].numpy(), scales[i].numpy(),
                                   viewmats[c].numpy(), Ks[c].numpy(), 23, 17)
                r = proj.radii[c, i].numpy()
                if pr is None:
                    assert (r == 0).all()
                    continue
                m2, z, cov = pr
                blurred = cov + 0.3 * np.eye(2)
                o = opac[i].item()
                if aa:
                    o *= math.sqrt(np.linalg.det(cov) / np.linalg.det(blurred))
                ext = min(3.33, math.sqrt(2 * math.log(max(o, 1 / 255) * 255)))
                rx, ry = math.ceil(ext * math.sqrt(blurred[0, 0])), math.ceil(ext * math.sqrt(blurred[1, 1]))
                onscreen = (m2[0] + rx > 0 and m2[0] - rx < 23 and m2[1] + ry > 0 and m2[1] - ry < 17)
                if o < 1 / 255 or not onscreen:
                    assert (r == 0).all()
                    continue
                assert tuple(r) == (rx, ry)
                np.testing.assert_allclose(proj.means2d[c, i].numpy(), m2, atol=1e-10)
                np.testing.assert_allclose(proj.depths[c, i].item(), z, atol=1e-12)
                np.testing.assert_allclose(proj.conics[c, i].numpy()[[0, 1, 2]],
                                           np.linalg.inv(blurred)[[0, 0, 1], [0, 1, 1]], atol=1e-10)
    assert (proj.radii == 0).all(-1).any() and (proj.radii > 0).all(-1).any()


# ---------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("render_mode,antialiased", [("RGB+D", False), ("RGB+ED", True)])
def test_gradcheck(render_mode, antialiased):
    means, quats, scales, opac, colors, viewmats, Ks = make_scene(
        seed=4, n=6, n_cams=1, width=12, height=10, sh_degree=1, extras=False, focal=14.0)
    scales = scales * 2.0
    bg = torch.tensor([[0.3, 0.6, 0.1]], dtype=F64)

    def f(m, q, s, o, c):
        out = ref.rasterize(m, q, s, o, c, viewmats, Ks, 12, 10, sh_degree=1, backgrounds=bg,
                            render_mode=render_mode, antialiased=antialiased, tile_size=4)
        return out.colors, out.alphas

    inputs = [t.clone().requires_grad_(True) for t in (means, quats, scales, opac, colors)]
    assert f(*inputs)[1].max() > 0.3  # the scene is visible
    # fast_mode checks random projections u^T J v, so a few seeds cover the Jacobian well
    for seed in range(3):
        torch.manual_seed(seed)
        assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def _grads(scene, **kw):
    a = [t.clone().requires_grad_(True) for t in scene[:5]]
    out = ref.rasterize(*a, *scene[5:], **kw)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(out.colors.shape, generator=g, dtype=out.colors.dtype)
    out.means2d.retain_grad()
    ((out.colors * w).sum() + out.alphas.square().sum()).backward()
    return [out.colors.detach(), out.alphas.detach(), out.means2d.grad] + [t.grad for t in a]


def test_hand_backward_matches_autograd():
    scene = make_scene(seed=5, n=150, width=40, height=30, sh_degree=2)
    kw = dict(width=40, height=30, sh_degree=2, render_mode="RGB+ED",
              backgrounds=torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.5, 0.5]], dtype=F64))
    for x, y in zip(_grads(scene, **kw), _grads(scene, use_autograd=True, **kw)):
        torch.testing.assert_close(x, y, atol=1e-10, rtol=1e-8)


def test_tiling_and_chunking_do_not_change_results():
    scene = make_scene(seed=6, n=200, width=45, height=33, sh_degree=1)
    kw = dict(width=45, height=33, sh_degree=1, render_mode="RGB+D", antialiased=True)
    base = _grads(scene, **kw)
    for ts, mp in [(4, 1 << 21), (8, 3000), (16, 1 << 12), (32, 1 << 21)]:
        for x, y in zip(_grads(scene, tile_size=ts, max_pairs=mp, **kw), base):
            torch.testing.assert_close(x, y, atol=1e-10, rtol=1e-8)


def thin_ellipses(g: torch.Generator, shape: tuple, log_span: float, dtype=F64):
    """Random thin, tilted projected Gaussians: conics of covariances R diag(s^2) R^T plus
    gsplat's 0.3 blur (log s uniform over `log_span` from -0.5), opacities in [0.01, 1], and
    gsplat's opacity-aware box half-sizes (its radius rule), each of `shape`."""
    ang = torch.rand(shape, generator=g, dtype=dtype) * math.pi
    s = torch.exp(torch.rand(*shape, 2, generator=g, dtype=dtype) * log_span - 0.5)
    cs, sn = torch.cos(ang), torch.sin(ang)
    c00 = cs * cs * s[..., 0] ** 2 + sn * sn * s[..., 1] ** 2 + 0.3
    c11 = sn * sn * s[..., 0] ** 2 + cs * cs * s[..., 1] ** 2 + 0.3
    c01 = cs * sn * (s[..., 0] ** 2 - s[..., 1] ** 2)
    det = c00 * c11 - c01 * c01
    conics = torch.stack([c11 / det, -c01 / det, c00 / det], -1)
    opac = torch.rand(shape, generator=g, dtype=dtype) * 0.99 + 0.01
    extend = torch.sqrt(2 * torch.log(opac.clamp_min(ref.ALPHA_THRESHOLD) / ref.ALPHA_THRESHOLD))
    extend = extend.clamp(max=ref.MAX_EXTEND)
    return conics, opac, torch.stack([torch.ceil(extend * c00.sqrt()), torch.ceil(extend * c11.sqrt())], -1)


def test_tile_touches_matches_brute_force():
    """The exact tile test against every pixel centre of the tile in float64: it keeps every
    pair whose alpha reaches 1/255 somewhere in the tile, and drops the rest (up to its 1%
    margin), which includes tiles inside the Gaussian's bounding box."""
    g = torch.Generator().manual_seed(3)
    m, ts = 4000, 16
    means = torch.rand(m, 2, generator=g, dtype=F64) * 96
    conics, opac, radii = thin_ellipses(g, (m,), 3.5, F64)
    # a random tile inside each Gaussian's bounding box
    rx, ry = radii.unbind(-1)
    u = torch.rand(m, 2, generator=g, dtype=F64) * 2 - 1
    tx = torch.floor((means[:, 0] + u[:, 0] * rx) / ts).long()
    ty = torch.floor((means[:, 1] + u[:, 1] * ry) / ts).long()
    got = ref.tile_touches(means, conics, opac, tx, ty, ts)

    def peak_alpha(local):  # the largest alpha over offsets `local` (in pixels) from the tile's corner
        px = (tx[:, None] * ts + local[None, :])[:, None, :] - means[:, 0, None, None]  # m 1 k
        py = (ty[:, None] * ts + local[None, :])[:, :, None] - means[:, 1, None, None]  # m k 1
        a, b, c = (conics[:, k, None, None] for k in range(3))
        sigma = 0.5 * (a * px * px + c * py * py) + b * px * py
        return (opac[:, None, None] * torch.exp(-sigma)).flatten(1).amax(1)

    at_pixels = peak_alpha(torch.arange(ts, dtype=F64) + 0.5)
    assert bool(got[at_pixels >= 1 / 255].all()), "a pair that reaches alpha 1/255 at a pixel was dropped"
    # The test bounds the pixel centres by their rectangle, so what it drops never reaches
    # 1/255 anywhere in that rectangle (sampled at 1/8 pixel here).
    anywhere = peak_alpha(torch.linspace(0.5, ts - 0.5, 8 * (ts - 1) + 1, dtype=F64))
    assert not bool(got[anywhere < 0.98 / 255].any()), "a pair that never reaches 1/255 was kept"
    assert 0.1 < float((at_pixels < 1 / 255).double().mean()) < 0.9  # both cases occur


def test_tile_culling_drops_pairs_not_pixels():
    """Tile lists with the exact tile test hold fewer pairs than the boxes give, and composite
    to the same images and gradients."""
    scene = make_scene(seed=7, n=300, width=64, height=48, sh_degree=1)
    kw = dict(width=64, height=48, sh_degree=1, render_mode="RGB+D", antialiased=True)
    means, quats, scales, opac, colors, viewmats, Ks = scene
    proj, op, _ = ref.project_with_colors(means, quats, scales, opac, colors, viewmats, Ks, 64, 48,
                                          sh_degree=1, antialiased=True)
    boxes = ref.intersect_tiles(proj.means2d, proj.radii, proj.depths, 8, 64, 48)
    exact = ref.intersect_tiles(proj.means2d, proj.radii, proj.depths, 8, 64, 48, proj.conics, op)
    assert exact.flat_ids.numel() < 0.9 * boxes.flat_ids.numel()
    assert torch.equal(exact.tiles_per_gauss, boxes.tiles_per_gauss)
    culled = _grads(scene, **kw)
    orig = ref.intersect_tiles
    try:
        ref.intersect_tiles = lambda *a, **k: orig(*a[:6])  # boxes only
        for x, y in zip(_grads(scene, **kw), culled):
            torch.testing.assert_close(x, y, atol=1e-10, rtol=1e-8)
    finally:
        ref.intersect_tiles = orig


def test_saved_and_recomputed_pairs_give_the_same_gradients(monkeypatch):
    """The compositing backward uses the forward's per-pair tensors while they fit the
    render's SAVE_BYTES and recomputes them past it: every split gives the same bits."""
    scene = make_scene(seed=9, n=200, width=45, height=33, sh_degree=1)
    kw = dict(width=45, height=33, sh_degree=1, render_mode="RGB+D", absgrad=True, max_pairs=3000)
    runs, recomputed = [], []
    forward_pairs = ref._composite_forward
    calls = []
    monkeypatch.setattr(ref, "_composite_forward", lambda q: calls.append(1) or forward_pairs(q))
    for budget in (0, 250_000, 1 << 30):  # none kept, the first few batches, all
        monkeypatch.setattr(ref, "SAVE_BYTES", budget)
        calls.clear()
        a = [t.clone().requires_grad_(True) for t in scene[:5]]
        out = ref.rasterize(*a, *scene[5:], **kw)
        w = torch.randn(out.colors.shape, generator=torch.Generator().manual_seed(0), dtype=out.colors.dtype)
        out.means2d.retain_grad()
        loss = (out.colors * w).sum() + out.alphas.square().sum()
        loss.backward(retain_graph=True)
        first = [out.means2d.grad.clone(), out.means2d.absgrad.clone()] + [t.grad.clone() for t in a]
        recomputed.append(len(calls))
        for t in a:
            t.grad = None
        out.means2d.grad = None
        loss.backward()  # a second backward recomputes what the first one dropped
        runs.append(first + [out.means2d.grad] + [t.grad for t in a])
    batches = recomputed[0] // 2  # with nothing kept, each batch runs its pairs twice
    assert batches > 3 and recomputed == [2 * batches, recomputed[1], batches] and batches < recomputed[1] < 2 * batches
    n = len(runs[0]) - 6
    for other in runs[1:]:
        for x, y in zip(runs[0], other):
            assert torch.equal(x, y)
    for x, y in zip(runs[0][:1] + runs[0][2:n], runs[0][n:]):  # second backward = first
        assert torch.equal(x, y)


def test_absgrad_is_sum_of_per_pixel_abs_grads():
    scene = make_scene(seed=8, n=30, n_cams=2, width=12, height=9, extras=False, focal=12.0)
    a = [t.clone().requires_grad_(True) for t in scene[:5]]
    out = ref.rasterize(*a, *scene[5:], 12, 9, absgrad=True)
    g = torch.Generator().manual_seed(1)
    w = torch.randn(out.colors.shape, generator=g, dtype=F64)
    out.means2d.retain_grad()
    (out.colors * w).sum().backward()
    got = out.means2d.absgrad.clone()
    # brute force: one backward per pixel through the plain-autograd path
    o = ref.rasterize(*a, *scene[5:], 12, 9, use_autograd=True)
    expected = torch.zeros_like(got)
    for c in range(2):
        for y in range(9):
            for x in range(12):
                (gr,) = torch.autograd.grad((o.colors[c, y, x] * w[c, y, x]).sum(), o.means2d,
                                            retain_graph=True)
                expected += gr.abs()
    assert got.abs().sum() > 0
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-8)
    # and the signed sum is the ordinary gradient
    assert out.means2d.grad.abs().sum() <= got.sum() + 1e-12


# ---------------------------------------------------------------------------------------
# The contract other code relies on
# ---------------------------------------------------------------------------------------
def test_info_feeds_gsplat_default_strategy():
    from gsplat.strategy import DefaultStrategy

    means, quats, scales, opac, colors, viewmats, Ks = make_scene(seed=9, dtype=torch.float32)
    params = torch.nn.ParameterDict({
        "means": means, "quats": quats, "scales": scales.log(), "opacities": torch.logit(opac),
        "colors": colors,
    })
    optimizers = {k: torch.optim.Adam([v], lr=1e-3) for k, v in params.items()}
    strategy = DefaultStrategy(refine_start_iter=10_000, verbose=False)
    strategy.check_sanity(params, optimizers)
    state = strategy.initialize_state()
    out = rasterize(params["means"], params["quats"], params["scales"].exp(),
                    params["opacities"].sigmoid(), params["colors"], viewmats, Ks, 23, 17)
    for key in ("means2d", "radii", "width", "height", "n_cameras", "gaussian_ids"):
        assert key in out.info
    assert out.info["means2d"] is out.means2d and out.means2d.shape == (2, len(means), 2)
    assert out.radii.dtype == torch.int32 and out.radii.shape == (2, len(means), 2)
    strategy.step_pre_backward(params, optimizers, state, 0, out.info)
    out.colors.mean().backward()
    strategy.step_post_backward(params, optimizers, state, 0, out.info, packed=False)
    assert state["count"].sum() == out.visible.sum()
    assert state["grad2d"].sum() > 0


def test_empty_and_invisible_scenes():
    scene = make_scene(seed=10, n=5, extras=False, dtype=torch.float32)
    scene[0] = scene[0] + torch.tensor([0.0, 0.0, -10.0])  # all behind the cameras
    bg = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    out = rasterize(*scene, 23, 17, backgrounds=bg)
    assert (out.radii == 0).all() and (out.alphas == 0).all()
    torch.testing.assert_close(out.colors, bg[:, None, None, :].expand(2, 17, 23, 3))


def test_gsplat_backend_error_is_one_line_on_cpu():
    with pytest.raises(RuntimeError, match="backend='reference'"):
        rasterize(*make_scene(seed=0, n=3, extras=False, dtype=torch.float32), 8, 8, backend="gsplat")
