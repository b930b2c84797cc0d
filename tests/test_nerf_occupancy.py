"""The occupancy-grid sampler (renderers/nerf/occupancy.py) on analytic fields: marching
against a brute-force list of steps, the grid's update rule, and early termination."""

from __future__ import annotations

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
    """Processes training one model must agree on the grid: the same step gives the same update."""
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
    keep = early_stop(ray_idx, t, rays, 200, density, step, eps)
    full, cut = render(ray_idx, t), render(ray_idx[keep], t[keep])
    assert (~keep).sum() > 0.3 * len(keep)  # most samples behind the slab go
    assert (full.alpha > 0.999).sum() > 50  # an opaque scene for many rays
    assert (full.rgb - cut.rgb).abs().max() <= eps and (full.alpha - cut.alpha).abs().max() <= eps
    assert (full.rgb - cut.rgb).abs().max() > 0  # something was dropped
    assert early_stop(ray_idx, t, rays, 200, density, step, 0.0).all()
