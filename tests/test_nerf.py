"""The NeRF renderer through the contract: geometry helpers, rendering, state round trip,
and a few optimisation steps on a tiny demo scene (the loop's work done by hand here)."""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pytest
import torch

from splatlab.renderers import RENDERERS
from splatlab.renderers.base import Batch
from splatlab.renderers.nerf import PRESETS, NerfConfig, NerfRenderer
from splatlab.renderers.nerf.field import SceneBox
from splatlab.renderers.nerf.model import scene_box
from splatlab.renderers.nerf.sampler import Spacing, camera_rays, pixel_grid
from splatlab.scenes import demo


@pytest.fixture(scope="module")
def tiny_scene():
    return demo.load(None, width=24, height=18, num_views=10, num_points=500)


def tiny_cfg(**kw) -> NerfConfig:
    return dataclasses.replace(
        PRESETS["cpu"][1], hash_levels=4, hash_log2_size=10, max_resolution=32, proposal_levels=2,
        proposal_log2_size=8, proposal_samples_1=16, proposal_samples_2=8, nerf_samples=8,
        hidden_dim=16, color_hidden_dim=16, appearance_dim=4, rays_per_batch=256, **kw)


def test_registry_and_contract_fields():
    assert RENDERERS["nerf"] is NerfRenderer
    assert NerfRenderer.batch_kind == "rays" and NerfRenderer.exports == ("mesh", "points", "cameras")
    for name in ("fast", "default", "cpu"):
        cfg = PRESETS[name][1]
        assert cfg.method == "nerf" and cfg.rgb_loss == "mse" and cfg.ssim_lambda == 0
    cfg = dataclasses.replace(PRESETS["cpu"][1], allow_origin=("http://a.example",))
    assert NerfConfig.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg  # as config.json


def test_contraction():
    box = SceneBox(False, torch.tensor([-2.0, -2, -2]), torch.tensor([2.0, 2, 2]))  # radius 2
    inner = torch.tensor([[0.0, 0, 0], [1.0, -1.5, 0.5]])
    u, inside = box.to_unit(inner)
    torch.testing.assert_close(u, (inner / 2 + 2) / 4)  # identity inside the unit cube
    far = torch.tensor([[1e9, 0, 0], [0, -1e9, 1e9]])
    u, _ = box.to_unit(far)
    assert torch.allclose(u[0], torch.tensor([1.0, 0.5, 0.5]), atol=1e-6)  # infinity -> the cube's face
    line = torch.linspace(2.0, 1e4, 200)[:, None] * torch.tensor([[1.0, 0.3, 0.0]])
    ux = box.to_unit(line)[0][:, 0]
    assert (ux[1:] > ux[:-1]).all() and ux.max() < 1.0  # monotonic and bounded
    bounded = SceneBox(True, torch.tensor([0.0, 0, 0]), torch.tensor([1.0, 2, 4]))
    u, inside = bounded.to_unit(torch.tensor([[0.5, 1, 2], [2.0, 1, 1]]))
    assert inside.tolist() == [True, False] and torch.allclose(u[0], torch.full((3,), 0.5))


def test_spacing_roundtrip_and_piecewise():
    near, far = torch.tensor([0.1, 0.5]), torch.tensor([100.0, 1000.0])
    sp = Spacing(near, far, 2.0)
    s = torch.linspace(0, 1, 11).expand(2, -1)
    t = sp.to_t(s)
    torch.testing.assert_close(t[:, 0], near)
    torch.testing.assert_close(t[:, -1], far, rtol=1e-4, atol=1e-3)
    assert (t[:, 1:] > t[:, :-1]).all()
    # Half the spacing (in g) lies inside the radius: most samples go near the cameras.
    assert (t[:, 5] < 4.0).all()


def test_camera_rays_point_through_pixels(tiny_scene):
    cams = tiny_scene.cameras[[0, 3]]
    pix = torch.tensor([[5.5, 7.5], [20.5, 3.5]])
    rays = camera_rays(cams.camtoworlds, cams.fx, cams.fy, cams.cx, cams.cy, pix)
    assert torch.allclose(rays.dirs.norm(dim=-1), torch.ones(2))
    p = rays.origins + 3.0 * rays.dirs  # a point on each ray, projected back
    cam = (cams.viewmats() @ torch.cat([p, torch.ones(2, 1)], -1)[..., None])[:, :3, 0]
    uv = torch.stack([cams.fx * cam[:, 0] / cam[:, 2] + cams.cx, cams.fy * cam[:, 1] / cam[:, 2] + cams.cy], -1)
    torch.testing.assert_close(uv, pix, atol=1e-4, rtol=0)
    torch.testing.assert_close(cam[:, 2], 3.0 * rays.z_per_t)  # camera z = t * z_per_t


def test_scene_mode_auto_and_override(tiny_scene):
    bounded, lo, hi = scene_box(tiny_scene, tiny_cfg())
    assert bounded  # the demo has a constant background
    assert (lo < tiny_scene.points.min(0)).all() and (hi > tiny_scene.points.max(0)).all()
    bounded, lo, hi = scene_box(tiny_scene, tiny_cfg(scene_mode="unbounded"))
    centers = tiny_scene.cameras.camtoworlds[tiny_scene.train_idx, :3, 3].numpy()
    assert not bounded and (centers >= lo - 1e-5).all() and (centers <= hi + 1e-5).all()


def test_auto_appearance_and_resolution(tiny_scene):
    """appearance_dim -1: embeddings for unbounded captures only; the finest grid resolution
    grows with cells_per_pixel (up to the cap), and random backgrounds are the NeRF default."""
    assert NerfConfig().random_background and NerfConfig().appearance_dim == -1
    cfg = dataclasses.replace(tiny_cfg(), appearance_dim=-1, max_resolution=4096, base_resolution=2)
    r_b = NerfRenderer.build(tiny_scene, cfg, "cpu")
    r_u = NerfRenderer.build(tiny_scene, dataclasses.replace(cfg, scene_mode="unbounded"), "cpu")
    assert r_b.arch["appearance_dim"] == 0 and r_b.field.appearance is None
    assert r_u.arch["appearance_dim"] == 32 and r_u.field.appearance.weight.shape == (len(tiny_scene.train_idx), 32)
    assert [g.name for g in r_b.param_groups(cfg)] == ["field", "proposals"]
    r_2 = NerfRenderer.build(tiny_scene, dataclasses.replace(cfg, cells_per_pixel=2.0), "cpu")
    r_1 = NerfRenderer.build(tiny_scene, dataclasses.replace(cfg, cells_per_pixel=1.0), "cpu")
    assert abs(r_2.arch["max_resolution"] - 2 * r_1.arch["max_resolution"]) <= 1


@pytest.mark.parametrize("mode", ["bounded", "unbounded"])
def test_render_shapes_state_roundtrip(tiny_scene, mode):
    torch.manual_seed(0)
    r = NerfRenderer.build(tiny_scene, tiny_cfg(scene_mode=mode), torch.device("cpu"))
    cams = tiny_scene.cameras[[0, 1]]
    out = r.render(cams, with_depth=True)
    assert out.rgb.shape == (2, 18, 24, 3) and out.alpha.shape == (2, 18, 24, 1) and out.depth.shape == (2, 18, 24, 1)
    assert torch.isfinite(out.rgb).all() and (out.alpha >= 0).all() and (out.alpha <= 1 + 1e-5).all()
    assert r.render(cams).depth is None
    buf = io.BytesIO()
    torch.save(r.state_dict(), buf)
    buf.seek(0)
    r2 = NerfRenderer.from_state(torch.load(buf, weights_only=True))
    torch.testing.assert_close(r2.render(cams, with_depth=True).rgb, out.rgb)
    live = r.live_copy()
    with torch.no_grad():
        r.field.grid.table.add_(1.0)  # training goes on: the snapshot must not change
    torch.testing.assert_close(live.render(cams).rgb, out.rgb)
    assert not any(p.requires_grad for p in live.field.parameters())
    s = r.stats()
    assert s["hash grid"] == "4 x 2^10" and s["parameters"] == sum(p.numel() for g in r.param_groups(tiny_cfg()) for p in g.params)


def test_render_is_chunk_invariant(tiny_scene):
    r = NerfRenderer.build(tiny_scene, tiny_cfg(), torch.device("cpu"))
    with torch.no_grad():
        r.field.grid.table.normal_(0, 1.0)  # a non-trivial field
    a = r.render(tiny_scene.cameras[[2]], with_depth=True)
    r.arch["render_chunk"] = 37
    b = r.render(tiny_scene.cameras[[2]], with_depth=True)
    torch.testing.assert_close(a.rgb, b.rgb)
    torch.testing.assert_close(a.depth, b.depth)


def test_a_few_steps_reduce_the_loss(tiny_scene):
    """What the loop does with a rays batch, by hand: photometric MSE + extra losses, one
    Adam per parameter group. The rays of one image: the fit must improve quickly."""
    torch.manual_seed(0)
    cfg = tiny_cfg(lr=5e-2)
    r = NerfRenderer.build(tiny_scene, cfg, torch.device("cpu"))
    r.setup_training(cfg, tiny_scene)
    groups = r.param_groups(cfg)
    names = [g.name for g in groups]
    assert len(set(names)) == len(names)
    n_params = sum(p.numel() for g in groups for p in g.params)
    assert n_params == r.num_parameters()
    opts = [torch.optim.Adam(g.params, lr=g.lr, eps=g.eps) for g in groups]
    cams = tiny_scene.cameras[tiny_scene.train_idx]
    pixels = pixel_grid(24, 18, "cpu")
    image_idx = torch.zeros(pixels.shape[0], dtype=torch.long)
    gt = torch.from_numpy(tiny_scene.images[tiny_scene.train_idx[0]]).float().reshape(-1, 3) / 255
    losses = []
    for step in range(15):
        b = Batch("rays", cams, gt, image_idx, pixels)
        out = r.train_render(b, step)
        mse = (out.rgb.reshape(-1, 3) - gt).square().mean()
        extra = r.extra_losses(step, out, b)
        assert set(extra) == {"interlevel", "distortion"} and all(torch.isfinite(v) for v in extra.values())
        (mse + sum(extra.values())).backward()
        for o in opts:
            o.step()
            o.zero_grad(set_to_none=True)
        losses.append(mse.item())
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])
    assert r.field.grid.table.grad is None  # zero_grad(set_to_none) reached every group


def test_depth_points_unproject_to_the_rendered_depth(tiny_scene):
    """`points` for a NeRF: every kept pixel lands at its rendered camera z, on its pixel ray."""
    from splatlab.app.exporters.points import depth_points
    from splatlab.renderers.base import Rendered

    class Wall:
        def render(self, cameras, *, background=None, with_depth=False):
            h, w = int(cameras.height[0]), int(cameras.width[0])
            depth = 2.0 + torch.arange(w, dtype=torch.float32)[None, :, None].expand(h, w, 1) / w
            alpha = torch.ones(h, w, 1)
            alpha[:, : w // 2] = 0.2  # the left half is too faint to keep
            return Rendered(torch.full((1, h, w, 3), 0.5), alpha[None], depth[None])

    cams = tiny_scene.cameras[[0, 4]]
    xyz, rgb = depth_points(Wall(), cams, min_alpha=0.5, stride=3)
    per_view = len(range(0, 18, 3)) * len([u for u in range(0, 24, 3) if u >= 12])
    assert xyz.shape == (2 * per_view, 3) and (rgb == 128).all()
    first = torch.from_numpy(xyz[:per_view])
    cam = (cams.viewmats()[0].double() @ torch.cat([first, torch.ones(per_view, 1, dtype=torch.float64)], -1).T).T
    u = cams.fx[0] * cam[:, 0] / cam[:, 2] + cams.cx[0] - 0.5  # back to integer pixel columns
    torch.testing.assert_close(cam[:, 2], 2.0 + u / 24, atol=1e-4, rtol=0)
    assert torch.allclose(u, u.round(), atol=1e-3) and (u >= 12 - 1e-3).all()


@pytest.mark.cuda
def test_cuda_bf16_triton_path_trains_and_matches_torch_render(tiny_scene):
    """On the device: the triton hash grid under bf16 autocast learns, and its full-image
    render agrees with the same weights rendered through the torch twin in float32."""
    torch.manual_seed(0)
    cfg = tiny_cfg(lr=5e-2, bf16=True)  # the option, now off by default
    r = NerfRenderer.build(tiny_scene, cfg, torch.device("cuda"))
    r.setup_training(cfg, tiny_scene)
    opts = [torch.optim.Adam(g.params, lr=g.lr, eps=g.eps) for g in r.param_groups(cfg)]
    cams = tiny_scene.cameras[tiny_scene.train_idx]
    pixels = pixel_grid(24, 18, "cuda")
    image_idx = torch.zeros(pixels.shape[0], dtype=torch.long, device="cuda")
    gt = torch.from_numpy(tiny_scene.images[tiny_scene.train_idx[0]]).cuda().float().reshape(-1, 3) / 255
    losses = []
    for step in range(40):
        b = Batch("rays", cams, gt, image_idx, pixels)
        out = r.train_render(b, step)
        mse = (out.rgb.reshape(-1, 3) - gt).square().mean()
        (mse + sum(r.extra_losses(step, out, b).values())).backward()
        for o in opts:
            o.step()
            o.zero_grad(set_to_none=True)
        losses.append(mse.item())
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])
    fast = r.render(tiny_scene.cameras[[0]]).rgb
    state = r.state_dict()
    state["arch"] = {**state["arch"], "hash_backend": "torch", "bf16": False}
    ref = NerfRenderer.from_state(state, "cuda").render(tiny_scene.cameras[[0]]).rgb
    assert (fast - ref).abs().mean() < 0.01  # bf16 MLPs: small differences only
