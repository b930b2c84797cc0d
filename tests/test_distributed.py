"""Several processes (torch.distributed over gloo, real processes on 127.0.0.1): the
sharded render against the single-process render of the whole model, forward and
backward; the collectives; training, checkpoints across process counts, `--gpus`."""

from __future__ import annotations

import torch

from dist_util import run_ranks

# Tolerance of the sharded render against the single-process one (float32): the same
# per-camera arithmetic on the same Gaussians, in the same order, so only summation order
# (einsum over a different N, gradient sums across ranks) differs.
IMAGE_ATOL = 1e-5
GRAD_RTOL = 1e-4  # relative to the largest gradient entry of each tensor


def _close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    scale = b.abs().max().clamp_min(1e-12)
    err = (a - b).abs().max() / scale
    assert err <= GRAD_RTOL, f"{what}: max error {err:.2e} of the largest entry {scale:.2e}"


def _sharded_render_matches(rank: int, size: int, sh_degree, render_mode: str) -> None:
    from splatlab.rasterizer import rasterize
    from splatlab.rasterizer.distributed import shard_rows
    from test_rasterizer import make_scene

    means, quats, scales, opac, colors, viewmats, Ks = make_scene(
        seed=3, n=60, n_cams=size, width=24, height=16, sh_degree=sh_degree, dtype=torch.float32)
    bg = torch.tensor([[0.2, 0.5, 0.9], [0.7, 0.1, 0.3]])[:size]
    kw = dict(sh_degree=sh_degree, render_mode=render_mode)
    w = torch.rand(size, 16, 24, 4 if render_mode == "RGB+ED" else 3, generator=torch.Generator().manual_seed(9))
    params = [means, quats, scales, opac, colors]

    # Single process, the whole model, every rank's camera.
    full = [p.clone().requires_grad_() for p in params]
    out = rasterize(*full, viewmats, Ks, 24, 16, backgrounds=bg, **kw)
    out.means2d.retain_grad()
    (out.colors * w).sum().backward()

    # This rank: its shard and its own camera.
    rows = shard_rows(len(means), rank, size)
    mine = [p[rows].clone().requires_grad_() for p in params]
    sh = rasterize(*mine, viewmats[rank : rank + 1], Ks[rank : rank + 1], 24, 16,
                   backgrounds=bg[rank : rank + 1], distributed=True, **kw)
    assert sh.means2d.shape == (size, rows.stop - rows.start, 2)  # own Gaussians, every camera
    sh.means2d.retain_grad()
    (sh.colors * w[rank : rank + 1]).sum().backward()

    err = (sh.colors[0] - out.colors[rank].detach()).abs().max()
    assert err <= IMAGE_ATOL, f"rank {rank}: image differs by {err:.2e}"
    assert torch.equal(sh.radii, out.radii[:, rows])
    for name, a, b in zip(("means", "quats", "scales", "opacities", "colors"), mine, full):
        _close(a.grad, b.grad[rows], f"rank {rank} d/d{name}")
    # Densification reads this: each Gaussian's screen-space gradient in every camera.
    _close(sh.means2d.grad, out.means2d.grad[:, rows], f"rank {rank} d/dmeans2d")


def test_sharded_render_equals_whole_model_render_rgb_sh():
    run_ranks(_sharded_render_matches, 2, 1, "RGB")


def test_sharded_render_equals_whole_model_render_plain_colors_depth():
    run_ranks(_sharded_render_matches, 2, None, "RGB+ED")
