"""The occupancy-grid sampler (renderers/nerf/occupancy.py) on analytic fields: marching
against a brute-force list of steps, the grid's update rule, and early termination."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from splatlab.rasterizer.volume import composite_packed
from splatlab.renderers.nerf.occupancy import OccupancyGrid, early_stop, march, march_step
from splatlab.renderers.nerf.sampler import Rays, box_near_far

LO, HI = torch.tensor([-1.0, -0.5, -0.8]), torch.tensor([1.0, 1.5, 0.6])


def random_rays(n: int, seed: int) -> Rays:
    """Rays from outside the box towards points around it (some miss it), one from inside."""
    g = torch.Generator().manual_seed(seed)
    target = LO - 0.3 + torch.rand(n, 3, generator=g) * (HI - LO + 0.6)
    d = torch.randn(n, 3, generator=g)
    origins = target - 3.0 * d / d.norm(dim=-1, keepdim=True)
    origins[0] = 0.5 * (LO + HI)  # a camera inside the box
    dirs = target - origins
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    return Rays(origins, dirs, torch.ones(n))


def brute_force_steps(rays: Rays, u: torch.Tensor, step: float, k_max: int, occupied) -> list[list[float]]:
    """Per ray, every t = near + (k + u) step inside [near, far) whose point `occupied` accepts."""
    near, far, hit = box_near_far(rays, LO, HI, 0.0)
    out = []
    for r in range(len(near)):
        ts = []
        for k in range(k_max):
            t = float(near[r]) + (k + float(u[r])) * step
            x = rays.origins[r] + rays.dirs[r] * t
            if bool(hit[r]) and t < float(far[r]) and occupied(x):
                ts.append(t)
        out.append(ts)
    return out


def packed_lists(ray_idx: torch.Tensor, t: torch.Tensor, n: int) -> list[list[float]]:
    return [t[ray_idx == r].tolist() for r in range(n)]


@pytest.mark.parametrize("jitter", [False, True])
def test_march_on_a_full_grid_lists_every_step_inside_the_box(jitter):
    rays = random_rays(40, seed=1)
    grid = OccupancyGrid(LO, HI, 8)
    step, K = march_step(LO, HI, 64)
    assert K == 65 and step == pytest.approx(float((HI - LO).norm()) / 64)
    near, far, hit = box_near_far(rays, LO, HI, 0.0)
    # No chord here is the diagonal: march takes fewer than K steps, and must still lose none.
    assert float(((far - near) * hit).max()) < (K - 3) * step
    torch.manual_seed(7)
    ray_idx, t = march(rays, near, far, hit, grid, step, K, jitter=jitter)
    torch.manual_seed(7)
    u = torch.rand(40) if jitter else torch.full((40,), 0.5)  # the draw march makes
    want = brute_force_steps(rays, u, step, K, lambda x: True)
    got = packed_lists(ray_idx, t, 40)
    assert [len(g) for g in got] == [len(w) for w in want]
    for g, w in zip(got, want):
        torch.testing.assert_close(torch.tensor(g), torch.tensor(w), rtol=0, atol=1e-5)
    assert (ray_idx[1:] >= ray_idx[:-1]).all()  # sorted by ray, then by t
    same = ray_idx[1:] == ray_idx[:-1]
    assert (t[1:][same] > t[:-1][same]).all()
    assert sum(len(w) == 0 for w in want) >= 3 and len(want[0]) > 0  # misses and the inside camera
    # K steps always reach the far side: the last sample of each ray lies within a step of it.
    for r in range(40):
        if want[r]:
            assert float(far[r]) - got[r][-1] <= step + 1e-5


def test_march_skips_empty_cells():
    """A grid empty where x < the box's middle: no sample there, all the others kept."""
    rays = random_rays(40, seed=2)
    res = 8
    grid = OccupancyGrid(LO, HI, res)
    ix = torch.arange(res ** 3) // (res * res)
    grid.binary.copy_(ix >= res // 2)
    step, K = march_step(LO, HI, 64)
    near, far, hit = box_near_far(rays, LO, HI, 0.0)
    ray_idx, t = march(rays, near, far, hit, grid, step, K, jitter=False)
    x = rays.origins[ray_idx] + rays.dirs[ray_idx] * t[:, None]
    mid = float(0.5 * (LO[0] + HI[0]))
    assert len(t) > 100 and (x[:, 0] >= mid - 1e-5).all()
    want = brute_force_steps(rays, torch.full((40,), 0.5), step, K, lambda p: float(p[0]) >= mid)
    got = packed_lists(ray_idx, t, 40)
    assert [len(g) for g in got] == [len(w) for w in want]


def ball_density(center, radius, value=1e3):
    def f(x):
        return torch.where((x - center).norm(dim=-1) < radius, torch.full_like(x[:, 0], value),
                           torch.zeros_like(x[:, 0]))
    return f


def test_grid_update_finds_a_ball_then_follows_it_after_warmup():
    res = 16
    grid = OccupancyGrid(LO, HI, res, threshold=0.01, decay=0.5, warmup_steps=10)
    step, _ = march_step(LO, HI, 64)
    centre = torch.arange(res ** 3)
    centres = grid.cell_points(centre, torch.full((res ** 3, 3), 0.5))
    half_diag = 0.5 * float(((HI - LO) / res).norm())
    c1, c2, radius = torch.tensor([-0.4, 0.5, -0.1]), torch.tensor([0.5, 0.7, 0.1]), 0.35
    assert grid.binary.all()  # everything occupied before the first update

    grid.update(0, ball_density(c1, radius), step)  # warm-up: every cell
    d1 = (centres - c1).norm(dim=-1)
    inside, outside = d1 < radius - half_diag, d1 > radius + half_diag
    assert inside.sum() > 20 and grid.binary[inside].all() and not grid.binary[outside].any()
    torch.testing.assert_close(grid.ema[inside], torch.full((int(inside.sum()),), 1e3 * step))

    # The ball moves. After warm-up, updates see the occupied cells (which decay) and a random
    # quarter of the others (which find the new ball over a few updates).
    moved = ball_density(c2, radius)
    inside2 = (centres - c2).norm(dim=-1) < radius - half_diag
    grid.update(10, moved, step)
    only_old = inside & ~inside2
    torch.testing.assert_close(grid.ema[only_old], torch.full((int(only_old.sum()),), 0.5e3 * step))
    seen = grid.binary[inside2].float().mean()
    assert 0.1 < seen < 0.5  # about a quarter found at once
    for s in range(11, 30):
        grid.update(s, moved, step)
    assert grid.binary[inside2].all()
    assert not grid.binary[only_old].any()  # decayed by 0.5^20 below the threshold
    assert not grid.binary[(centres - c2).norm(dim=-1) > radius + half_diag].any()


def test_grid_update_is_seeded_by_the_step():
    """The update's randomness comes from the step, not the global stream (a resumed run repeats it)."""
    a, b = OccupancyGrid(LO, HI, 8, warmup_steps=0), OccupancyGrid(LO, HI, 8, warmup_steps=0)
    step, _ = march_step(LO, HI, 64)
    soft = lambda x: 50.0 * torch.exp(-4 * (x - 0.1).square().sum(-1))  # noqa: E731
    torch.manual_seed(0)
    a.update(3, soft, step)
    torch.manual_seed(1)  # another global RNG state
    b.update(3, soft, step)
    assert torch.equal(a.ema, b.ema) and torch.equal(a.binary, b.binary)


def test_early_termination_changes_an_opaque_scene_by_at_most_eps():
    """A dense slab across the box: samples behind it carry less than eps of light, so dropping
    them moves colour and opacity by at most eps (and drops most of them)."""
    rays = random_rays(200, seed=3)
    grid = OccupancyGrid(LO, HI, 8)
    step, K = march_step(LO, HI, 256)
    near, far, hit = box_near_far(rays, LO, HI, 0.0)
    ray_idx, t = march(rays, near, far, hit, grid, step, K, jitter=False)
    density = lambda x: torch.where(x[:, 1].abs() < 0.3, 40.0, 0.5)  # noqa: E731
    colour = lambda x: torch.sigmoid(3 * x)  # noqa: E731
    bg = torch.tensor([0.2, 0.9, 0.4]).expand(200, 3)

    def render(ri, tt):
        x = rays.origins[ri] + rays.dirs[ri] * tt[:, None]
        return composite_packed(density(x), colour(x), tt - step / 2, tt + step / 2, ri, 200, bg)

    eps = 1e-4
    pts = rays.origins[ray_idx] + rays.dirs[ray_idx] * t[:, None]
    keep = early_stop(ray_idx, pts, 200, density, step, eps)
    full, cut = render(ray_idx, t), render(ray_idx[keep], t[keep])
    assert (~keep).sum() > 0.3 * len(keep)  # most samples behind the slab go
    assert (full.alpha > 0.999).sum() > 50  # an opaque scene for many rays
    assert (full.rgb - cut.rgb).abs().max() <= eps and (full.alpha - cut.alpha).abs().max() <= eps
    assert (full.rgb - cut.rgb).abs().max() > 0  # something was dropped
    assert early_stop(ray_idx, pts, 200, density, step, 0.0).all()


# ---- through the renderer -------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_scene():
    from splatlab.scenes import demo

    return demo.load(None, width=24, height=18, num_views=10, num_points=500)


def occ_cfg(**kw):
    import dataclasses

    from splatlab.renderers.nerf import PRESETS

    base = dict(sampler="occupancy", hash_levels=4, hash_log2_size=10, max_resolution=32, hidden_dim=16,
                color_hidden_dim=16, appearance_dim=0, rays_per_batch=256, occ_resolution=16,
                march_samples=96, occ_warmup_steps=6, occ_update_every=3)
    return dataclasses.replace(PRESETS["cpu"][1], **{**base, **kw})


def test_sampler_resolution(tiny_scene, tmp_path, monkeypatch):
    """auto: the occupancy grid for bounded scenes (Blender, the demo), proposals for
    unbounded ones; the cpu preset keeps proposals (its measured figures); an explicit
    occupancy on an unbounded scene is an error naming the fix."""
    from fixtures_scenes import write_blender, write_transforms

    from splatlab.renderers.nerf import PRESETS, NerfRenderer
    from splatlab.scenes import load_scene

    monkeypatch.setenv("SPLATLAB_CACHE", str(tmp_path / "cache"))
    write_blender(tmp_path / "blender")
    write_transforms(tmp_path / "capture", n=6)
    blender, capture = load_scene(tmp_path / "blender"), load_scene(tmp_path / "capture")
    assert blender.background is not None and capture.background is None
    cfg = occ_cfg(sampler="auto")
    assert PRESETS["cpu"][1].sampler == "proposal" and PRESETS["fast"][1].sampler == "auto"
    assert NerfRenderer.build(blender, cfg, "cpu").arch["sampler"] == "occupancy"
    assert NerfRenderer.build(tiny_scene, cfg, "cpu").arch["sampler"] == "occupancy"
    assert NerfRenderer.build(capture, cfg, "cpu").arch["sampler"] == "proposal"
    assert NerfRenderer.build(tiny_scene, occ_cfg(sampler="proposal"), "cpu").arch["sampler"] == "proposal"
    assert NerfRenderer.build(tiny_scene, PRESETS["cpu"][1], "cpu").arch["sampler"] == "proposal"
    with pytest.raises(ValueError, match="--sampler proposal"):
        NerfRenderer.build(capture, occ_cfg(), "cpu")


def test_field_learning_rate_by_sampler(tiny_scene):
    """lr -1 (the default outside the cpu preset) resolves by sampler: Instant-NGP's 1e-2 for
    the occupancy grid, 1e-3 for proposals; an explicit value wins; the optimiser's groups get it."""
    from splatlab.renderers.nerf import PRESETS, NerfRenderer

    assert PRESETS["fast"][1].lr == -1 and PRESETS["default"][1].lr == -1 and PRESETS["cpu"][1].lr == 1e-2
    lrs = {}
    for sampler in ("occupancy", "proposal"):
        cfg = occ_cfg(sampler=sampler, lr=-1.0)
        groups = {g.name: g.lr for g in NerfRenderer.build(tiny_scene, cfg, "cpu").param_groups(cfg)}
        lrs[sampler] = groups
    assert lrs["occupancy"] == {"field": 1e-2}
    assert lrs["proposal"] == {"field": 1e-3, "proposals": 1e-3}
    cfg = occ_cfg(lr=5e-3)
    assert {g.lr for g in NerfRenderer.build(tiny_scene, cfg, "cpu").param_groups(cfg)} == {5e-3}


def test_occupancy_renderer_trains_saves_its_grid_and_renders_the_same(tiny_scene):
    """No proposal networks (nothing to optimise or regularise); a few steps fit one image;
    the grid travels in the state (a model loaded for eval marches with it) and in live copies."""
    import io

    from splatlab.renderers.base import Batch
    from splatlab.renderers.nerf import NerfRenderer
    from splatlab.renderers.nerf.sampler import pixel_grid

    torch.manual_seed(0)
    cfg = occ_cfg(lr=5e-2)
    r = NerfRenderer.build(tiny_scene, cfg, "cpu")
    r.setup_training(cfg, tiny_scene)
    groups = r.param_groups(cfg)
    assert [g.name for g in groups] == ["field"] and len(r.proposals) == 0
    assert set(r.modules()) == {"field", "occupancy"}
    assert sum(p.numel() for g in groups for p in g.params) == r.num_parameters()
    opts = [torch.optim.Adam(g.params, lr=g.lr, eps=g.eps) for g in groups]
    cams = tiny_scene.cameras[tiny_scene.train_idx]
    pixels = pixel_grid(24, 18, "cpu")
    image_idx = torch.zeros(pixels.shape[0], dtype=torch.long)
    gt = torch.from_numpy(tiny_scene.images[tiny_scene.train_idx[0]]).float().reshape(-1, 3) / 255
    bg = torch.tensor(tiny_scene.background, dtype=torch.float32).expand(pixels.shape[0], 3)
    losses = []
    for step in range(25):
        b = Batch("rays", cams, gt, image_idx, pixels, background=bg)
        out = r.train_render(b, step)
        assert r.extra_losses(step, out, b) == {}
        mse = (out.rgb.reshape(-1, 3) - gt).square().mean()
        mse.backward()
        for o in opts:
            o.step()
            o.zero_grad(set_to_none=True)
        losses.append(mse.item())
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses
    s = r.stats()
    assert 0 < float(s["samples/ray"]) <= r.march_steps and s["occupied"].endswith("%")
    assert r.metrics()["sampler"] == "occupancy"

    with torch.no_grad():  # a grid with holes, so that one left all occupied would show
        r.grid.binary[torch.arange(r.grid.binary.numel()) % 3 == 0] = False
    views = tiny_scene.cameras[[0, 2]]
    out = r.render(views, with_depth=True)
    buf = io.BytesIO()
    torch.save(r.state_dict(), buf)
    buf.seek(0)
    r2 = NerfRenderer.from_state(torch.load(buf, weights_only=True))
    assert r2.arch["sampler"] == "occupancy" and torch.equal(r2.grid.binary, r.grid.binary)
    assert torch.equal(r2.grid.ema, r.grid.ema)
    again = r2.render(views, with_depth=True)
    torch.testing.assert_close(again.rgb, out.rgb, rtol=0, atol=0)
    torch.testing.assert_close(again.depth, out.depth, rtol=0, atol=0)
    r2.grid.binary.fill_(True)
    assert (r2.render(views).rgb - out.rgb).abs().max() > 1e-3  # the grid matters to the render

    live = r.live_copy()
    r.grid.binary.fill_(True)  # training goes on: the snapshot keeps its grid
    torch.testing.assert_close(live.render(views).rgb, out.rgb, rtol=0, atol=0)


def test_ray_batch_follows_the_sample_budget(tiny_scene):
    """`samples_per_batch`: the next step draws budget / (last samples per ray) rays, rounded to
    256 and kept in [256, max(rays_per_batch, budget)]; without a budget, or with proposals (a
    fixed count per ray), the batch stays as it is."""
    from splatlab.app.data import RaySampler
    from splatlab.renderers.nerf import NerfRenderer

    cfg = occ_cfg(samples_per_batch=5000, rays_per_batch=512)
    r = NerfRenderer.build(tiny_scene, cfg, "cpu")
    r.setup_training(cfg, tiny_scene)
    assert r.rays_wanted(512) == 512  # no step seen yet
    for spr, want in ((10.0, 512), (3.0, 1792), (0.01, 5000), (1000.0, 256)):
        r.samples_per_ray = spr
        assert r.rays_wanted(512) == want, spr
    sampler = RaySampler(tiny_scene, torch.device("cpu"), 512)
    torch.manual_seed(0)
    r.train_render(sampler.next(0), 0)
    spr = r.samples_per_ray
    assert r.rays_last == 512 and spr > 0
    sampler.resize(r.rays_wanted(sampler.R))
    assert sampler.next(1).pixels.shape[0] == min(max(round(5000 / spr / 256) * 256, 256), 5000)
    with pytest.raises(ValueError):
        sampler.resize(0)
    with pytest.raises(ValueError, match="--samples-per-batch"):
        r.setup_training(occ_cfg(samples_per_batch=-1), tiny_scene)

    fixed = occ_cfg(rays_per_batch=512)
    r = NerfRenderer.build(tiny_scene, fixed, "cpu")
    r.setup_training(fixed, tiny_scene)
    r.samples_per_ray = 3.0
    assert r.rays_wanted(512) == 512
    prop = occ_cfg(sampler="proposal", samples_per_batch=5000)
    r = NerfRenderer.build(tiny_scene, prop, "cpu")
    r.setup_training(prop, tiny_scene)
    assert r.rays_wanted(512) == 512


def test_render_chunks_and_empty_grids(tiny_scene):
    """Whole images are chunk-invariant (the march is per ray); an empty grid renders the
    background with zero opacity."""
    from splatlab.renderers.nerf import NerfRenderer

    r = NerfRenderer.build(tiny_scene, occ_cfg(), "cpu")
    with torch.no_grad():
        r.field.grid.table.normal_(0, 1.0)
    a = r.render(tiny_scene.cameras[[1]], with_depth=True)
    r.arch["render_chunk"] = 37
    b = r.render(tiny_scene.cameras[[1]], with_depth=True)
    torch.testing.assert_close(a.rgb, b.rgb)
    torch.testing.assert_close(a.depth, b.depth)
    assert a.alpha.max() > 0.1
    r.grid.binary.fill_(False)
    e = r.render(tiny_scene.cameras[[1]])
    assert e.alpha.abs().max() == 0
    torch.testing.assert_close(e.rgb, torch.tensor(tiny_scene.background).float().expand_as(e.rgb))


def test_old_checkpoints_load_as_proposal(tiny_scene):
    """A state saved before the occupancy sampler (no sampler or occ_* keys) renders with
    its proposal networks as before."""
    from splatlab.renderers.nerf import NerfRenderer

    r = NerfRenderer.build(tiny_scene, occ_cfg(sampler="proposal"), "cpu")
    state = r.state_dict()
    state["arch"] = {k: v for k, v in state["arch"].items()
                     if k != "sampler" and not k.startswith(("occ_", "march_", "early_"))}
    old = NerfRenderer.from_state(state)
    assert old.arch["sampler"] == "proposal" and old.grid is None and len(old.proposals) == 2
    cams = tiny_scene.cameras[[0]]
    torch.testing.assert_close(old.render(cams).rgb, r.render(cams).rgb)
