"""Rendering with the Gaussians sharded across processes (torch.distributed), over raw tensors.

The scheme is gsplat 1.5.3's `rasterization(..., distributed=True)` (Grendel-GS,
arXiv 2406.18533). On CUDA `rasterize(..., distributed=True)` calls gsplat itself;
`rasterize_sharded` here is its torch twin (the CPU backend, over gloo), built from the
reference rasterizer's two stages:

1. every rank holds a shard of the Gaussians and C cameras of its own (the same C and
   image size on every rank); the cameras are all-gathered, so each rank knows all W*C;
2. each rank projects its own Gaussians into all W*C cameras and evaluates their colours
   (`reference.project_with_colors`);
3. an all-to-all sends camera c's projected Gaussians to the rank that renders camera c,
   which then holds, for its C cameras, the Gaussians of every rank (in rank order);
4. each rank composites its own C images (`reference.rasterize_projected`).

Gradients go the same way back (the adjoint of an all-to-all is the transposed
all-to-all), so each rank's shard receives the gradient of every rank's loss, and a
camera (pose optimisation) the sum over the ranks that projected into it.
`info["means2d"]`/`info["radii"]` are the rank's own Gaussians in all W*C cameras
(W*C N_local), as gsplat returns them, so densification statistics stay per local
Gaussian; `info["n_cameras"]` is the local C. Not supported, as in gsplat: absgrad.

Also here: the row-wise collectives the sharded model needs (`shard_rows`, `gather_rows`).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from .types import RenderMode, RenderOutput


def rank_and_size() -> tuple[int, int]:
    """(this process's rank, the number of processes); (0, 1) without torch.distributed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_rows(n: int, rank: int, size: int) -> slice:
    """Rank `rank`'s rows of n: contiguous, in rank order, so the concatenation of every
    rank's shard in rank order is the whole (what checkpoints hold)."""
    return slice(n * rank // size, n * (rank + 1) // size)


def row_counts(n: int, device: torch.device) -> list[int]:
    """Every rank's `n`, in rank order (one small all-gather; a host read)."""
    import torch.distributed as dist

    _, size = rank_and_size()
    if size == 1:
        return [int(n)]
    t = torch.tensor([int(n)], dtype=torch.int64, device=device)
    out = [torch.empty_like(t) for _ in range(size)]
    dist.all_gather(out, t)
    return [int(v) for v in torch.cat(out).tolist()]


def _exchange(inputs: Sequence[Tensor], out_shapes: Sequence[torch.Size]) -> list[Tensor]:
    """inputs[r] to rank r, outputs from every rank, through one flat all_to_all_single
    (gloo's list all_to_all wants equal sizes; the flat one takes uneven splits)."""
    import math

    import torch.distributed as dist

    send = torch.cat([t.reshape(-1) for t in inputs])
    out_sizes = [math.prod(s) for s in out_shapes]
    recv = send.new_empty(sum(out_sizes))
    dist.all_to_all_single(recv, send, output_split_sizes=out_sizes,
                           input_split_sizes=[t.numel() for t in inputs])
    return [t.view(s) for t, s in zip(recv.split(out_sizes), out_shapes)]


class _AllToAll(torch.autograd.Function):
    """inputs[r] goes to rank r; output r comes from rank r (shapes given). Backward is the
    transposed exchange."""

    @staticmethod
    def forward(ctx, out_shapes, *inputs):
        ctx.in_shapes, ctx.out_shapes = [t.shape for t in inputs], out_shapes
        return tuple(_exchange(inputs, out_shapes))

    @staticmethod
    def backward(ctx, *grads):
        like = next(g for g in grads if g is not None)
        # Every rank takes part, sending zeros for the outputs it did not use.
        grads = [like.new_zeros(s) if g is None else g for g, s in zip(grads, ctx.out_shapes)]
        return (None, *_exchange(grads, ctx.in_shapes))


def all_to_all(tensors: Sequence[Tensor], out_shapes: Sequence[tuple]) -> list[Tensor]:
    """Differentiable all-to-all: `tensors[r]` goes to rank r; returns what each rank sent
    here (shapes `out_shapes`, rank order). One process: the tensors themselves."""
    _, size = rank_and_size()
    if size == 1:
        return list(tensors)
    return list(_AllToAll.apply([torch.Size(s) for s in out_shapes], *tensors))


def all_gather_rows(x: Tensor) -> Tensor:
    """Differentiable all-gather along rows (ranks may hold different row counts): every
    rank's `x` concatenated in rank order; the gradient of each rank's rows is the sum of
    every rank's gradient for them."""
    _, size = rank_and_size()
    if size == 1:
        return x
    counts = row_counts(x.shape[0], x.device)
    return torch.cat(all_to_all([x] * size, [(n, *x.shape[1:]) for n in counts]))


@torch.no_grad()
def gather_rows(x: Tensor, dst: int = 0) -> Optional[Tensor]:
    """Every rank's `x` concatenated along rows in rank order, on rank `dst` (None on the
    others). Not differentiable: for checkpoints and final outputs."""
    import torch.distributed as dist

    rank, size = rank_and_size()
    if size == 1:
        return x
    counts = row_counts(x.shape[0], x.device)
    padded = x.new_zeros((max(counts), *x.shape[1:]))
    padded[: x.shape[0]] = x
    bufs = [torch.empty_like(padded) for _ in counts] if rank == dst else None
    dist.gather(padded, bufs, dst=dst)
    if rank != dst:
        return None
    return torch.cat([b[:n] for b, n in zip(bufs, counts)])


def rasterize_sharded(
    means: Float[Tensor, "N 3"],
    quats: Float[Tensor, "N 4"],
    scales: Float[Tensor, "N 3"],
    opacities: Float[Tensor, " N"],
    colors: Tensor,
    viewmats: Float[Tensor, "C 4 4"],
    Ks: Float[Tensor, "C 3 3"],
    width: int,
    height: int,
    *,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    sh_degree: Optional[int] = None,
    backgrounds: Optional[Float[Tensor, "C 3"]] = None,
    render_mode: RenderMode = "RGB",
    antialiased: bool = False,
    absgrad: bool = False,
) -> RenderOutput:
    """This rank's C images of the Gaussians of every rank (this rank passes its own
    shard): a collective, every rank calls it with the same C, width and height."""
    from . import reference

    if absgrad:
        raise ValueError("absgrad is not supported with distributed rendering (nor is it in gsplat)")
    if sh_degree is None and colors.dim() != 2:
        raise ValueError("distributed rendering takes per-Gaussian colours (N D), as gsplat's")
    _, size = rank_and_size()
    c = viewmats.shape[0]
    cams = all_gather_rows(torch.cat([viewmats.reshape(c, 16), Ks.reshape(c, 9)], -1))
    if cams.shape[0] != c * size:
        raise ValueError("distributed rendering: every rank must render the same number of cameras")
    all_views, all_Ks = cams[:, :16].reshape(-1, 4, 4), cams[:, 16:].reshape(-1, 3, 3)
    proj, opac, feats = reference.project_with_colors(
        means, quats, scales, opacities, colors, all_views, all_Ks, width, height,
        near_plane=near_plane, far_plane=far_plane, sh_degree=sh_degree, antialiased=antialiased)

    # One float tensor per destination rank (its C cameras x our N Gaussians), radii beside it.
    d = feats.shape[-1]
    packed = torch.cat([proj.means2d, proj.conics, proj.depths[..., None], opac[..., None], feats], -1)
    counts = row_counts(means.shape[0], means.device)
    f = packed.shape[-1]
    recv = torch.cat(all_to_all(list(packed.split(c)), [(c, n, f) for n in counts]), dim=1)
    with torch.no_grad():
        radii = torch.cat(all_to_all(list(proj.radii.split(c)), [(c, n, 2) for n in counts]), dim=1)
    means2d, conics, depths, opac_all, feats_all = recv.split([2, 3, 1, 1, d], dim=-1)
    out = reference.rasterize_projected(
        means2d, conics, depths[..., 0], radii, opac_all[..., 0], feats_all, width, height,
        backgrounds=backgrounds, render_mode=render_mode)
    if recv.requires_grad and not out.colors.requires_grad:
        # Nothing landed on this rank's images: still join the backward exchange, which
        # every rank must enter (the other ranks' Gaussians wait on it for their gradients).
        out.colors = out.colors + 0.0 * recv.sum()
    out.means2d, out.radii = proj.means2d, proj.radii
    out.info.update(means2d=proj.means2d, radii=proj.radii, depths=proj.depths, conics=proj.conics,
                    opacities=opac, n_cameras=c)
    return out


__all__ = ["all_gather_rows", "all_to_all", "gather_rows", "rank_and_size", "rasterize_sharded",
           "row_counts", "shard_rows"]
