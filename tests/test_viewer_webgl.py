"""Splats for viser's WebGL renderer (`viewer/browser.py`): float16-faithful covariances,
back-to-front order for the start camera, non-finite Gaussians dropped, the page title;
and (slow, headless Chromium) the exported HTML page against a server render of its
start camera."""

from __future__ import annotations

import io
import math
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from splatlab.scenes.geometry import quat_to_rotmat
from splatlab.renderers.splat import SplatModel, SplatRenderer
from splatlab.viewer.browser import browser_splats, fp16_faithful, fp16_roundtrip


def _trained_like(n=2000, seed=0, size=2e-3):
    """Flat, randomly oriented Gaussians about `size` wide in a unit scene: what training
    leaves on surfaces (normalized frame)."""
    g = torch.Generator().manual_seed(seed)
    m = SplatModel.random(n, torch.tensor([-1.0, -1, -1]), torch.tensor([1.0, 1, 1]), sh_degree=0, generator=g)
    s = size * torch.exp(torch.randn(n, 3, generator=g))
    s[:, 2] /= 30.0
    q = torch.randn(n, 4, generator=g)
    m.splats["scales"] = torch.log(s)
    m.splats["quats"] = q / q.norm(dim=1, keepdim=True)
    return m


def test_raw_float16_covariances_are_unfaithful_and_ours_are():
    m = _trained_like()
    R = quat_to_rotmat(m.quats.detach().double().numpy())
    raw = fp16_faithful(R, m.scales.detach().double().numpy())
    b = browser_splats(SplatRenderer(m).browser_splats())
    cov = b.covariances.astype(np.float64)
    dec = fp16_roundtrip(cov)
    ev_true, ev_dec = np.linalg.eigvalsh(cov), np.linalg.eigvalsh(dec)
    ours = ((ev_dec >= ev_true / 1.5) & (ev_dec <= ev_true * 1.5)).all(1)
    print(f"\nfloat16-faithful covariances: raw {raw.mean():.1%}, sent {ours.mean():.1%} "
          f"({b.widened} of {m.num_gaussians} widened)")
    assert raw.mean() < 0.5  # most trained Gaussians are lost in float16 as they were sent
    # (Checked in float64 before the float32 cast: a borderline one may tip over after it.)
    assert ours.mean() > 0.995
    # Only the very anisotropic ones (beyond float16's 11 bits) are widened.
    assert b.widened < 0.5 * m.num_gaussians
    # The node scale undoes the scene scaling exactly; untouched Gaussians keep their shape.
    np.testing.assert_allclose(b.centers * b.scale, m.means.detach().numpy(), rtol=1e-5, atol=1e-6)
    s = m.scales.detach().double().numpy() / b.scale
    M = R * s[:, None, :]
    want = M @ M.transpose(0, 2, 1)
    same = np.abs(cov - want).max(axis=(1, 2)) <= 1e-4 * np.abs(want).max(axis=(1, 2))
    assert same.sum() >= m.num_gaussians - b.widened


def test_non_finite_dropped_and_back_to_front_order():
    m = _trained_like(200, size=0.05)
    with torch.no_grad():
        m.splats["means"][3, 0] = float("nan")
        m.splats["scales"][5, 1] = float("inf")
        m.splats["quats"][7] = 0.0
    from splatlab.scenes.types import look_at

    c2w = look_at(np.array([0.0, -4.0, 1.0]), np.zeros(3))
    b = browser_splats(SplatRenderer(m).browser_splats(), view_c2w=c2w)
    assert b.dropped == 3 and len(b.centers) == 197
    for a in (b.centers, b.covariances, b.rgbs, b.opacities):
        assert np.isfinite(a).all()
    depth = (b.centers.astype(np.float64) * b.scale - c2w[:3, 3]) @ c2w[:3, 2]
    assert (np.diff(depth) <= 1e-6).all(), "farthest first"


def test_page_title():
    from splatlab.viewer.html import set_title

    page = "<html><head><title>Viser</title></head></html>"
    assert set_title(page, "fox <1>") == "<html><head><title>fox &lt;1&gt;</title></head></html>"


# ---- headless Chromium ------------------------------------------------------------------
VIEWPORT = {"width": 800, "height": 600}
# viser's "software WebGL" notice sits at the top left: compare below it.
ROWS = slice(160, 600)
# three.js logs this for viser's splat quad, whose "position" attribute has 2 components
# (computeBoundingSphere reads a z past the end): it appears with any data, two finite
# Gaussians included, and does not affect drawing. Anything else fails the test.
VISER_QUAD_WARNING = "computeBoundingSphere(): Computed radius is NaN"


def _need_browser():
    sys.path.insert(0, str(Path(__file__).parent))
    from test_viewer_browser import CHROMIUM, _need_browser as need

    need()
    return CHROMIUM


def _screenshot_when_still(page, timeout=40.0) -> np.ndarray:
    """The page once two screenshots a second apart agree (the page fades in)."""
    from PIL import Image

    prev, t0 = None, time.monotonic()
    while True:
        page.wait_for_timeout(1000)
        cur = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB")).astype(np.float32)
        if prev is not None and time.monotonic() - t0 > 3.0 and np.abs(cur - prev).mean() < 0.3:
            return cur
        assert time.monotonic() - t0 < timeout, "the page never settled"
        prev = cur


def _demo_model(flat: bool):
    from splatlab.scenes import load_scene

    scene = load_scene("demo")
    m = SplatModel.from_points(torch.as_tensor(scene.points).float(),
                               torch.as_tensor(scene.point_colors).float() / 255, sh_degree=1, init_opacity=0.9)
    if flat:  # trained-like: flat disks, random orientations
        g = torch.Generator().manual_seed(0)
        q = torch.randn(m.num_gaussians, 4, generator=g)
        s = m.scales.detach().clone()
        s[:, 2] /= 30.0
        m.splats["quats"] = q / q.norm(dim=1, keepdim=True)
        m.splats["scales"] = torch.log(s)
    return scene, m


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("flat", [False, True], ids=["demo", "flat-disks"])
def test_html_export_matches_server_render(tmp_path, flat):
    chromium = _need_browser()
    from playwright.sync_api import sync_playwright

    from splatlab.viewer.html import build_html, start_view
    from splatlab.viewer.render import RenderSettings, ViewCamera, render_frame, rotmat_to_quat
    from test_viewer_browser import ARGS

    scene, model = _demo_model(flat)
    out = build_html(SplatRenderer(model), tmp_path / "demo.html", cameras=scene.cameras, background=scene.background,
                     title="demo - splatlab")
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(out.as_uri())
        shot = _screenshot_when_still(page)
        title = page.title()
        browser.close()
    view, c2w = start_view(SplatRenderer(model), scene.cameras)
    cam = ViewCamera.from_viser(rotmat_to_quat(c2w[:3, :3]), c2w[:3, 3], view["fov"], VIEWPORT["width"],
                                VIEWPORT["height"])
    want = render_frame(SplatRenderer(model), cam, VIEWPORT["width"], VIEWPORT["height"],
                        RenderSettings(sh_degree=0, background=scene.background)).astype(np.float32)
    mae = float(np.abs(shot[ROWS] - want[ROWS]).mean())
    other = scene.cameras.camtoworlds[5].double().numpy()
    cam5 = ViewCamera.from_viser(rotmat_to_quat(other[:3, :3]), other[:3, 3], view["fov"], VIEWPORT["width"],
                                 VIEWPORT["height"])
    wrong = float(np.abs(shot[ROWS] - render_frame(SplatRenderer(model), cam5, VIEWPORT["width"], VIEWPORT["height"],
                                                     RenderSettings(sh_degree=0, background=scene.background))
                         .astype(np.float32)[ROWS]).mean())
    print(f"\nHTML export ({'flat disks' if flat else 'demo'}): MAE vs server render of its start camera "
          f"{mae:.2f}/255 (of another camera {wrong:.2f}/255); console errors: {errors}")
    assert title == "demo - splatlab"
    assert [e for e in errors if VISER_QUAD_WARNING not in e] == []
    # WebGL's splatting differs from gsplat's in small ways (no 3-sigma cutoff, 8-bit
    # colours, a minimum splat size): a few levels. Before the fixes: 25 and 20 levels.
    assert mae < 6.0
    assert wrong > 2 * mae
