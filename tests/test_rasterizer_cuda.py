"""gsplat (CUDA) against the reference rasterizer: images, alphas, radii and gradients.

Run on the device: `pytest -m cuda tests/test_rasterizer_cuda.py`. Scenes are seeded,
Gaussians sit well inside the frustum at moderate sizes and counts, so no result hinges on
a pixel sitting exactly at the 1/255 alpha or 1e-4 transmittance threshold.
The reference runs in float64 on the same device, from the same float32 inputs.
"""

from __future__ import annotations

import pytest
import torch

from splatlab.rasterizer import rasterize
from test_rasterizer import look_at

pytestmark = pytest.mark.cuda

W, H = 96, 72
DEVICE = "cuda"


def random_scene(seed: int, n: int = 400, sh_degree: int = 0, n_cams: int = 2):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) * 2 - 1) * torch.tensor([1.0, 0.7, 0.7])
    quats = torch.randn(n, 4, generator=g)
    scales = torch.exp(torch.rand(n, 3, generator=g) * 1.2 - 3.6)
    opac = torch.rand(n, generator=g) * 0.8 + 0.1
    colors = torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g) * 0.3
    colors[:, 0] += 0.5
    viewmats = torch.stack([look_at(e) for e in [(0.0, 0.1, -4.0), (1.2, 0.5, -3.8)][:n_cams]]).float()
    Ks = torch.tensor([[[80.0, 0, 47.0], [0, 82.0, 37.5], [0, 0, 1]],
                       [[75.0, 0, 49.5], [0, 75.0, 35.0], [0, 0, 1]]])[:n_cams]
    bgs = torch.tensor([[0.1, 0.2, 0.3], [0.9, 0.8, 0.7]])[:n_cams]
    return means, quats, scales, opac, colors, viewmats, Ks, bgs


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative error ||a - b|| / ||b|| (b the reference)."""
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def _run(backend, scene, dtype, **kw):
    means, quats, scales, opac, colors, viewmats, Ks, bgs = scene
    dev = torch.device(DEVICE)
    params = [t.detach().to(dev, dtype).clone().requires_grad_(True) for t in (means, quats, scales, opac, colors)]
    out = rasterize(*params, viewmats.to(dev, dtype), Ks.to(dev, dtype), W, H,
                    backgrounds=bgs.to(dev, dtype), backend=backend, **kw)
    out.means2d.retain_grad()
    g = torch.Generator().manual_seed(123)
    w = torch.randn(out.colors.shape, generator=g).to(dev, dtype)
    ((out.colors * w).sum() + out.alphas.sum()).backward()
    names = ("means", "quats", "scales", "opacities", "colors")
    grads = {k: p.grad.double() for k, p in zip(names, params) if p.grad is not None}
    grads["means2d"] = out.means2d.grad.double()
    return out, grads


@pytest.mark.parametrize("antialiased", [False, True])
@pytest.mark.parametrize("sh_degree", [0, 3])
@pytest.mark.parametrize("render_mode", ["RGB", "RGB+ED", "D"])
def test_gsplat_matches_reference(render_mode, sh_degree, antialiased):
    scene = random_scene(seed=10 * sh_degree + int(antialiased), sh_degree=sh_degree)
    kw = dict(sh_degree=sh_degree, render_mode=render_mode, antialiased=antialiased)
    out_g, grad_g = _run("gsplat", scene, torch.float32, **kw)
    out_r, grad_r = _run("reference", scene, torch.float64, **kw)

    vis_g, vis_r = out_g.visible, out_r.visible
    assert (vis_g == vis_r).float().mean() > 0.999
    both = vis_g & vis_r
    assert (out_g.radii[both] - out_r.radii[both]).abs().max() <= 1  # ceil of float32 vs 64
    assert (out_g.radii[both] == out_r.radii[both]).all(-1).float().mean() > 0.99

    alpha_err = (out_g.alphas.double() - out_r.alphas).abs().max().item()
    assert alpha_err < 1e-3, alpha_err
    img_g, img_r = out_g.colors.double(), out_r.colors
    if render_mode in ("RGB", "RGB+ED"):
        err = (img_g[..., :3] - img_r[..., :3]).abs().max().item()
        assert err < 1e-3, err
    if render_mode != "RGB":
        # depth in scene units (~3-5): same 1e-3, relative to the depth scale
        scale = img_r[..., -1].abs().max().item()
        covered = out_r.alphas[..., 0] > 0.05  # ED divides by alpha: compare where it is defined
        err = (img_g[..., -1] - img_r[..., -1])[covered].abs().max().item()
        assert err < 1e-3 * scale, (err, scale)

    keys = ["means", "scales", "quats", "opacities", "means2d"]
    if render_mode != "D":  # depth-only renders do not read colours
        keys.append("colors")
    for key in keys:
        assert rel(grad_g[key], grad_r[key]) < 1e-2, (key, rel(grad_g[key], grad_r[key]))


def test_absgrad_matches():
    scene = random_scene(seed=7, sh_degree=1)
    kw = dict(sh_degree=1, absgrad=True)
    out_g, _ = _run("gsplat", scene, torch.float32, **kw)
    out_r, _ = _run("reference", scene, torch.float64, **kw)
    assert rel(out_g.means2d.absgrad.double(), out_r.means2d.absgrad) < 1e-2


def test_info_keys_match_gsplat():
    scene = random_scene(seed=3)
    out_g, _ = _run("gsplat", scene, torch.float32, sh_degree=0)
    out_r, _ = _run("reference", scene, torch.float64, sh_degree=0)
    needed = {"means2d", "radii", "width", "height", "n_cameras", "gaussian_ids", "depths",
              "conics", "opacities", "tile_width", "tile_height", "tile_size"}
    assert needed <= set(out_g.info) and needed <= set(out_r.info)
    assert out_g.radii.shape == out_r.radii.shape and out_g.radii.dtype == out_r.radii.dtype


@pytest.mark.parametrize("render_mode,antialiased", [("RGB", False), ("RGB+ED", False), ("RGB", True)])
def test_direct_path_is_gsplats_rasterization(monkeypatch, render_mode, antialiased):
    """The stage-by-stage path (gsplat_backend._direct) gives gsplat.rasterization's images,
    alphas, info and gradients (same kernels in the same order: equal up to the camera
    centre's inverse, computed by the same factorisation)."""
    from splatlab.rasterizer import gsplat_backend

    scene = random_scene(seed=11, sh_degree=3)
    kw = dict(sh_degree=3, render_mode=render_mode, antialiased=antialiased, absgrad=True)
    monkeypatch.setenv(gsplat_backend.DIRECT_ENV, "1")
    out_d, grad_d = _run("gsplat", scene, torch.float32, **kw)
    monkeypatch.setenv(gsplat_backend.DIRECT_ENV, "0")
    out_w, grad_w = _run("gsplat", scene, torch.float32, **kw)
    torch.testing.assert_close(out_d.colors, out_w.colors, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out_d.alphas, out_w.alphas, atol=1e-6, rtol=1e-5)
    assert torch.equal(out_d.radii, out_w.radii)
    assert torch.equal(out_d.info["flatten_ids"], out_w.info["flatten_ids"])
    assert set(out_w.info) <= set(out_d.info)
    for key in grad_w:
        torch.testing.assert_close(grad_d[key], grad_w[key], atol=1e-6, rtol=1e-4, msg=key)
    torch.testing.assert_close(out_d.means2d.absgrad, out_w.means2d.absgrad, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("render_mode,antialiased", [("RGB", False), ("RGB+ED", True)])
def test_tile_culling_renders_as_gsplat(monkeypatch, render_mode, antialiased):
    """SPLATLAB_TILE_CULL=1 (isect.cull_pairs, the triton kernel) drops pairs and keeps gsplat's
    images, alphas and gradients; its kept set is the torch twin's."""
    from splatlab.rasterizer import gsplat_backend
    from splatlab.rasterizer.isect import cull_pairs

    scene = random_scene(seed=12, n=800, sh_degree=3)
    kw = dict(sh_degree=3, render_mode=render_mode, antialiased=antialiased, absgrad=True)
    monkeypatch.setenv(gsplat_backend.CULL_ENV, "1")
    out_c, grad_c = _run("gsplat", scene, torch.float32, **kw)
    monkeypatch.setenv(gsplat_backend.CULL_ENV, "0")
    out_b, grad_b = _run("gsplat", scene, torch.float32, **kw)
    assert out_c.info["flatten_ids"].numel() < 0.95 * out_b.info["flatten_ids"].numel()
    torch.testing.assert_close(out_c.colors, out_b.colors, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out_c.alphas, out_b.alphas, atol=1e-6, rtol=1e-5)
    for key in grad_b:
        torch.testing.assert_close(grad_c[key], grad_b[key], atol=1e-6, rtol=1e-4, msg=key)
    torch.testing.assert_close(out_c.means2d.absgrad, out_b.means2d.absgrad, atol=1e-6, rtol=1e-4)
    ib = out_b.info
    args = (ib["means2d"].detach(), ib["conics"], ib["opacities"], ib["tile_size"], ib["tile_width"], ib["tile_height"])
    kt, it = cull_pairs(ib["isect_ids"].cpu(), ib["flatten_ids"].cpu(), *(a.cpu() for a in args[:3]), *args[3:])
    # The same pairs (float32 on two devices may differ for a pair at the threshold itself).
    got = set(zip(out_c.info["isect_ids"].tolist(), out_c.info["flatten_ids"].tolist()))
    assert len(got ^ set(zip(kt.tolist(), it.tolist()))) <= 0.001 * len(got)


def test_direct_path_skips_the_checked_inverse(monkeypatch):
    """gsplat.rasterization takes the camera centres from torch.inverse, whose singularity
    check reads a flag back from the GPU (a host sync per render); the direct path never
    calls it (nor linalg.inv): with both made to fail, it still renders, the wrapper not."""
    from splatlab.rasterizer import gsplat_backend

    scene = random_scene(seed=5, sh_degree=3)
    args = [t.to(DEVICE) for t in scene[:7]]

    def checked_inverse(*a, **k):
        raise AssertionError("a checked (host-syncing) inverse was called")

    monkeypatch.setattr(torch, "inverse", checked_inverse)
    monkeypatch.setattr(torch.linalg, "inv", checked_inverse)
    monkeypatch.setenv(gsplat_backend.DIRECT_ENV, "1")
    out = rasterize(*args, W, H, sh_degree=3)
    assert torch.isfinite(out.colors).all()
    monkeypatch.setenv(gsplat_backend.DIRECT_ENV, "0")
    with pytest.raises(AssertionError, match="checked"):
        rasterize(*args, W, H, sh_degree=3)


def _run_capacity(scene, capacity, **kw):
    means, quats, scales, opac, colors, viewmats, Ks, bgs = scene
    dev = torch.device(DEVICE)
    params = [t.detach().to(dev).clone().requires_grad_(True) for t in (means, quats, scales, opac, colors)]
    out = rasterize(*params, viewmats.to(dev), Ks.to(dev), W, H, backgrounds=bgs.to(dev), isect_capacity=capacity,
                    **kw)
    out.means2d.retain_grad()
    g = torch.Generator().manual_seed(123)
    w = torch.randn(out.colors.shape, generator=g).to(dev)
    ((out.colors * w).sum() + out.alphas.sum()).backward()
    grads = {k: p.grad for k, p in zip(("means", "quats", "scales", "opacities", "colors"), params)}
    grads["means2d"] = out.means2d.grad
    return out, grads


@pytest.mark.parametrize("render_mode", ["RGB", "RGB+ED"])
def test_capacity_intersection_renders_as_gsplat(render_mode):
    """Tiles intersected by rasterizer/isect.py (triton kernels, padding in an extra masked
    tile row) give gsplat's own intersection's images and gradients, and the same entries
    per tile."""
    from splatlab.rasterizer.isect import IsectCapacity

    scene = random_scene(seed=21, n=600, sh_degree=3)
    kw = dict(sh_degree=3, render_mode=render_mode)
    mgr = IsectCapacity()
    out_c, grad_c = _run_capacity(scene, mgr, **kw)
    out_e, grad_e = _run_capacity(scene, None, **kw)
    torch.testing.assert_close(out_c.colors, out_e.colors, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_c.alphas, out_e.alphas, atol=1e-5, rtol=1e-5)
    for key in grad_e:
        torch.testing.assert_close(grad_c[key], grad_e[key], atol=1e-5, rtol=1e-4, msg=key)
    # Per tile, the same Gaussians (ties in depth may come in another order).
    ic, ie = out_c.info, out_e.info
    th, tw = ie["tile_height"], ie["tile_width"]
    oc, oe = ic["isect_offsets"], ie["isect_offsets"]
    n = int(ie["flatten_ids"].numel())
    assert oc.shape == (2, th + 1, tw)
    flat_e = oe.reshape(-1).tolist() + [n]
    flat_c = oc.reshape(-1).tolist()
    for c in range(2):
        for t in range(th * tw):
            e_lo, e_hi = flat_e[c * th * tw + t], flat_e[c * th * tw + t + 1]
            c_lo, c_hi = flat_c[c * (th + 1) * tw + t], flat_c[c * (th + 1) * tw + t + 1]
            assert sorted(ic["flatten_ids"][c_lo:c_hi].tolist()) == sorted(ie["flatten_ids"][e_lo:e_hi].tolist())
    torch.cuda.synchronize()
    mgr.poll()
    assert mgr.overflows == 0 and mgr.capacity() >= n


def test_capacity_intersection_does_not_read_back(monkeypatch):
    """After the first render (which sizes the buffers), rendering with an IsectCapacity
    makes no host read at all (torch's sync debug mode raises on one)."""
    from splatlab.rasterizer.isect import IsectCapacity

    scene = random_scene(seed=5, sh_degree=3)
    args = [t.to(DEVICE) for t in scene[:7]]
    mgr = IsectCapacity()
    rasterize(*args, W, H, sh_degree=3, isect_capacity=mgr)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any synchronising call raises
    try:
        for _ in range(3):
            rasterize(*args, W, H, sh_degree=3, isect_capacity=mgr)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    # The check itself works: the exact intersection's count read does raise.
    torch.cuda.set_sync_debug_mode("error")
    try:
        with pytest.raises(RuntimeError, match="synchroniz"):
            rasterize(*args, W, H, sh_degree=3)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_capacity_overflow_is_counted_and_survived():
    """A capacity below the true count drops the last entries for that render (no crash,
    no out-of-range read) and the manager counts the overflow and grows."""
    from splatlab.rasterizer.isect import IsectCapacity

    scene = random_scene(seed=8, n=800, sh_degree=0)
    out, _ = _run_capacity(scene, None, sh_degree=0)
    n = int(out.info["tiles_per_gauss"].sum())
    mgr = IsectCapacity()
    mgr._cap = n // 2  # as if earlier renders had half the intersections
    out2, grads = _run_capacity(scene, mgr, sh_degree=0)
    assert out2.info["flatten_ids"].numel() == n // 2
    torch.cuda.synchronize()
    mgr.poll()
    assert mgr.overflows == 1 and mgr.capacity() >= n
    assert torch.isfinite(out2.colors).all() and all(torch.isfinite(g).all() for g in grads.values())
