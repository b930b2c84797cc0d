"""gsplat's densification strategies (gsplat is imported only by rasterizer/ and
renderers/splat/). gsplat is imported on first attribute access, not with this module.

    DefaultStrategy, MCMCStrategy, Strategy   gsplat.strategy's classes, unchanged
    mcmc_step_post_backward(...)              MCMCStrategy.step_post_backward on any device

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


def mcmc_step_post_backward(strategy, params, optimizers, state: dict, step: int,
                            info: dict, lr: float) -> None:
    """`strategy.step_post_backward(...)` of an `MCMCStrategy`; on CPU its relocation and
    noise kernels are the torch twins (see the module docstring)."""
    means: Tensor = params["means"]
    if means.is_cuda:
        strategy.step_post_backward(params, optimizers, state, step, info, lr=lr)
        return
    with torch_twins():
        strategy.step_post_backward(params, optimizers, state, step, info, lr=lr)


__all__ = ["DefaultStrategy", "MCMCStrategy", "Strategy", "mcmc_step_post_backward",
           "torch_twins"]
