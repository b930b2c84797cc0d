"""gsplat's densification strategies (gsplat is imported only by rasterizer/ and
renderers/splat/). gsplat is imported on first attribute access, not with this module.

    DefaultStrategy, MCMCStrategy, Strategy   gsplat.strategy's classes, unchanged
    mcmc_step_post_backward(...)              MCMCStrategy.step_post_backward on any device
    inject_noise(...)                         its position noise in fewer kernels

Why a substitution for MCMC on CPU: `MCMCStrategy.step_post_backward` reaches two CUDA-only
kernels through names that `gsplat.strategy.ops` binds at import (`compute_relocation`,
used by `relocate`/`sample_add`, and `quat_scale_to_covar_preci`, used by
`inject_noise_to_position`). Rewriting those ops here would fork gsplat's optimizer
bookkeeping; instead, for tensors not on CUDA, the call runs with those two names
pointing at dispatchers that send non-CUDA tensors to the torch twins in
`relocation.py` and CUDA tensors to gsplat's originals. The substitution is scoped (a
context manager, restored on exit, serialised by a lock) and CUDA calls never enter it,
so results on CUDA are gsplat's own.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from torch import Tensor

_CLASSES = ("DefaultStrategy", "MCMCStrategy", "Strategy")
_lock = threading.Lock()


def __getattr__(name: str) -> Any:
    if name in _CLASSES:
        import gsplat.strategy

        return getattr(gsplat.strategy, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _ops():
    import gsplat.strategy.ops as ops

    return ops


@contextlib.contextmanager
def torch_twins() -> Iterator[None]:
    """Within the block, gsplat's strategy ops run their CUDA-only kernels through the
    torch twins for non-CUDA tensors (CUDA tensors still go to gsplat's kernels)."""
    from . import relocation

    ops = _ops()
    with _lock:
        cuda_relocation = ops.compute_relocation
        cuda_covar_preci = ops.quat_scale_to_covar_preci

        def compute_relocation(opacities, scales, ratios, binoms):
            if opacities.is_cuda:
                return cuda_relocation(opacities=opacities, scales=scales, ratios=ratios,
                                       binoms=binoms)
            return relocation.compute_relocation(opacities, scales, ratios, binoms)

        def quat_scale_to_covar_preci(quats, scales, compute_covar=True, compute_preci=True,
                                      triu=False):
            if quats.is_cuda:
                return cuda_covar_preci(quats, scales, compute_covar=compute_covar,
                                        compute_preci=compute_preci, triu=triu)
            if not compute_covar or compute_preci or triu:
                raise NotImplementedError("the torch twin computes full covariances only")
            return relocation.quat_scale_to_covar(quats, scales), None

        ops.compute_relocation = compute_relocation
        ops.quat_scale_to_covar_preci = quat_scale_to_covar_preci
        try:
            yield
        finally:
            ops.compute_relocation = cuda_relocation
            ops.quat_scale_to_covar_preci = cuda_covar_preci


def inject_noise(params, scaler: float) -> None:
    """3DGS-MCMC's position noise, as gsplat's `inject_noise_to_position`: every mean moves
    by its covariance times a standard normal draw, weighted by sigmoid(100 (1 - o - 0.995))
    (almost only the transparent Gaussians move), times `scaler`. The same draw
    (`randn_like(means)`) and math in 9 kernels instead of ~17: the weight is written
    sigmoid(0.5 - 100 o), and `scaler` goes into the final add."""
    import torch

    from . import relocation

    with torch.no_grad():
        means = params["means"]
        w = torch.rsub(torch.sigmoid(params["opacities"].flatten()), 0.5, alpha=100.0).sigmoid_()
        scales = torch.exp(params["scales"])
        if means.is_cuda:
            covars = _ops().quat_scale_to_covar_preci(params["quats"], scales, compute_covar=True,
                                                      compute_preci=False, triu=False)[0]
        else:
            covars = relocation.quat_scale_to_covar(params["quats"], scales)
        noise = torch.randn_like(means).mul_(w.unsqueeze(-1))
        means.add_(torch.bmm(covars, noise.unsqueeze(-1)).squeeze(-1), alpha=scaler)


def mcmc_step_post_backward(strategy, params, optimizers, state: dict, step: int,
                            info: dict, lr: float) -> None:
    """`strategy.step_post_backward(...)` of an `MCMCStrategy` on any device: on refine
    steps gsplat's relocation and growth (on CPU with the torch twins, see the module
    docstring), then the position noise (`inject_noise`). Unlike gsplat it does not
    empty torch's CUDA cache after a refinement: that frees cached blocks only for the
    next steps to cudaMalloc them again."""
    means: Tensor = params["means"]
    if strategy.refine_start_iter < step < strategy.refine_stop_iter and step % strategy.refine_every == 0:
        state["binoms"] = state["binoms"].to(means.device)
        with contextlib.nullcontext() if means.is_cuda else torch_twins():
            strategy._relocate_gs(params, optimizers, state["binoms"])
            strategy._add_new_gs(params, optimizers, state["binoms"])
    inject_noise(params, lr * strategy.noise_lr)


__all__ = ["DefaultStrategy", "MCMCStrategy", "Strategy", "inject_noise", "mcmc_step_post_backward",
           "torch_twins"]
