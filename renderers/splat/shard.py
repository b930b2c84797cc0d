"""A splat model split across processes (torch.distributed): what each rank holds, and
the whole model gathered back.

Each rank holds a contiguous slice of the Gaussians, `shard_rows(N, rank, W)` of the
whole model: of the initial points on a fresh run, of the checkpoint's gathered model on
a resumed one (whatever number of processes wrote it). Every render is then collective
(`rasterize(..., distributed=True)`, rasterizer/distributed.py): each rank renders its
own camera of the whole model, and gradients flow back to every rank's shard.

Densification and relocation run per shard, at the same steps on every rank:
- the default strategy (3DGS adaptive density control): its statistics are per Gaussian
  (the screen-space gradient of each Gaussian in every rank's cameras, which the
  distributed render returns to the Gaussian's owner, and its largest screen radius), so
  each shard clones, splits and prunes its own Gaussians; opacity resets happen at the
  same step everywhere. Nothing global is needed beyond what the render exchanges.
- MCMC: each shard relocates its dead Gaussians onto live ones of its own and grows
  within its own cap, `cap_max // W` (sampling is by opacity within the shard).
- the Gaussian cap (--max-gaussians N) is divided likewise; the default cap (from free
  memory) is per device already.
The per-image corrections (appearance, poses) are not sharded: every rank holds them
whole and the training loop sums their gradients over ranks (`ParamGroup.sharded`).
"""

from __future__ import annotations

import copy
from typing import Optional

from torch import Tensor

from splatlab.rasterizer.distributed import gather_rows, rank_and_size, shard_rows
from splatlab.renderers.base import Renderer

from .model import SplatModel

# Strategy-state entries with one row per Gaussian (gsplat's DefaultStrategy); the others
# (scene_scale, MCMC's binomial table) are the same on every rank.
PER_GAUSSIAN_STATE = ("grad2d", "count", "radii")


def _rows(state: Optional[dict], rows: slice) -> Optional[dict]:
    if state is None:
        return None
    return {k: v[rows].clone() if k in PER_GAUSSIAN_STATE and isinstance(v, Tensor) else v
            for k, v in state.items()}


def take_shard(r: Renderer, rank: int, size: int) -> None:
    """Keep rank `rank`'s rows of the whole model the SplatRenderer `r` holds (in place)."""
    rows = shard_rows(r.model.num_gaussians, rank, size)
    r.model = SplatModel({k: v.detach()[rows].clone() for k, v in r.model.splats.items()},
                         r.model.sh_degree)
    if r.filter_variance is not None:
        r.filter_variance = r.filter_variance[rows].clone()
    r._strategy_state = _rows(r._strategy_state, rows)


def gather(r: Renderer) -> Optional[Renderer]:
    """Collective: the whole model (every rank's rows in rank order) as a renderer on
    rank 0, sharing `r`'s training-side pieces (corrections, config); None elsewhere."""
    rank, _ = rank_and_size()
    splats = {k: gather_rows(v.detach()) for k, v in r.model.splats.items()}
    fv = None if r.filter_variance is None else gather_rows(r.filter_variance.detach())
    state = None
    if r._strategy_state is not None:
        state = {k: gather_rows(v) if k in PER_GAUSSIAN_STATE and isinstance(v, Tensor) else v
                 for k, v in r._strategy_state.items()}
    if rank != 0:
        return None
    whole = copy.copy(r)
    whole.model = SplatModel(splats, r.model.sh_degree)
    whole.filter_variance, whole._strategy_state, whole._shard = fv, state, None
    return whole


__all__ = ["PER_GAUSSIAN_STATE", "gather", "take_shard"]
