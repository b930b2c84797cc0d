"""Densification strategies: thin wrappers choosing gsplat's `DefaultStrategy` (3DGS
adaptive density control) or `MCMCStrategy` (3DGS-MCMC). Their running state is a plain
dict of tensors that checkpoints as is (`state_to`).

Both run on CPU too: `DefaultStrategy`'s split/duplicate/prune/reset ops are plain torch,
and `MCMCStrategy`'s two CUDA kernels (relocation, noise covariances) have torch twins
that `splatlab.renderers.splat.strategies` substitutes for non-CUDA tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Union

import torch
from torch import Tensor

from splatlab.renderers.splat.strategies import DefaultStrategy, MCMCStrategy, mcmc_step_post_backward

StrategyKind = Literal["default", "mcmc"]


@dataclass
class SyncFreeDefaultStrategy(DefaultStrategy):
    """gsplat's DefaultStrategy with a per-step statistics update that never waits on
    the GPU: upstream gathers the visible Gaussians with `torch.where` (a device->host
    sync every step); a masked sum over cameras gives the same grad2d/count.

    `reset_opacities`: 3DGS's opacity reset, which gsplat 1.5.3 never performs: its condition
    `step % self.reset_every == 0 & step > 0` parses as the chained comparison
    `step % reset_every == (0 & step) > 0`, always false. Here every `reset_every` steps while
    refining (and, with `reset_at_start`, once at `refine_start_iter`, as 3DGS does on
    white-background scenes) every opacity is clamped to 2 x `prune_opa`, its Adam moments zeroed."""

    reset_opacities: bool = False
    reset_at_start: bool = False

    def step_post_backward(self, params, optimizers, state: dict, step: int, info: dict,
                           packed: bool = False) -> None:
        super().step_post_backward(params, optimizers, state, step, info, packed=packed)
        if self.resets_at(step):
            from gsplat.strategy.ops import reset_opa

            reset_opa(params=params, optimizers=optimizers, state=state, value=self.prune_opa * 2.0)

    def resets_at(self, step: int) -> bool:
        """Whether `step_post_backward` resets the opacities at this step."""
        if not self.reset_opacities or not 0 < step < self.refine_stop_iter:
            return False
        return (self.reset_every > 0 and step % self.reset_every == 0) or (
            self.reset_at_start and step == self.refine_start_iter)

    def _update_state(self, params, state: dict, info: dict, packed: bool = False) -> None:
        if packed:  # packed renders list visible ids already; upstream code is fine
            return super()._update_state(params, state, info, packed=packed)
        g = info[self.key_for_gradient]
        grads = g.absgrad if self.absgrad else g.grad  # C N 2, zero where not visible
        w, h, c = info["width"], info["height"], info["n_cameras"]
        norms = torch.linalg.vector_norm(
            grads * grads.new_tensor([w / 2.0 * c, h / 2.0 * c]), dim=-1
        )  # C N
        visible = (info["radii"] > 0).all(dim=-1)  # C N
        n = params["means"].shape[0]
        if state["grad2d"] is None:
            state["grad2d"] = torch.zeros(n, device=grads.device)
        if state["count"] is None:
            state["count"] = torch.zeros(n, device=grads.device)
        state["grad2d"] += torch.where(visible, norms, 0.0).sum(0)
        state["count"] += visible.sum(0)
        if self.refine_scale2d_stop_iter > 0:
            if state["radii"] is None:
                state["radii"] = torch.zeros(n, device=grads.device)
            r = info["radii"].max(dim=-1).values.float() / float(max(w, h))
            r = torch.where(visible, r, 0.0).amax(0)
            state["radii"] = torch.maximum(state["radii"], r)


Strategy = Union[SyncFreeDefaultStrategy, MCMCStrategy]


def make_strategy(
    kind: StrategyKind,
    *,
    refine_start: int,
    refine_stop: int,
    refine_every: int,
    reset_every: int,
    grow_grad2d: float,
    grow_scale3d: float,
    prune_opa: float,
    prune_scale3d: float,
    absgrad: bool,
    cap_max: int,
    noise_lr: float,
    reset_opacities: bool = False,
    reset_at_start: bool = False,
) -> Strategy:
    if kind == "default":
        return SyncFreeDefaultStrategy(
            prune_opa=prune_opa, grow_grad2d=grow_grad2d, grow_scale3d=grow_scale3d,
            prune_scale3d=prune_scale3d, refine_start_iter=refine_start,
            refine_stop_iter=refine_stop, refine_every=refine_every,
            reset_every=reset_every, absgrad=absgrad, reset_opacities=reset_opacities,
            reset_at_start=reset_at_start,
        )
    if kind == "mcmc":
        return MCMCStrategy(
            cap_max=cap_max, noise_lr=noise_lr, refine_start_iter=refine_start,
            refine_stop_iter=refine_stop, refine_every=refine_every, min_opacity=prune_opa,
        )
    raise ValueError(f"unknown strategy {kind!r}")


def needs_cuda(kind: StrategyKind) -> bool:
    return False  # both strategies have a CPU path


def initial_state(strategy: Strategy, scene_extent: float) -> dict[str, Any]:
    if isinstance(strategy, DefaultStrategy):
        return strategy.initialize_state(scene_scale=scene_extent)
    return strategy.initialize_state()


def pre_backward(strategy: Strategy, params, optimizers, state, step: int, info: dict) -> None:
    if isinstance(strategy, DefaultStrategy):
        strategy.step_pre_backward(params, optimizers, state, step, info)


def post_backward(strategy: Strategy, params, optimizers, state, step: int, info: dict,
                  lr_means: float) -> None:
    """Densify/prune/relocate (every `refine_every` steps) and update running stats.
    Call after the optimizer step; `lr_means` is the current position learning rate."""
    if isinstance(strategy, MCMCStrategy):
        mcmc_step_post_backward(strategy, params, optimizers, state, step, info, lr=lr_means)
    else:
        strategy.step_post_backward(params, optimizers, state, step, info, packed=False)


def state_to(state: dict[str, Any], device: torch.device | str) -> dict[str, Any]:
    """The strategy state with its tensors moved (to "cpu" for a checkpoint)."""
    return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in state.items()}


__all__ = ["make_strategy", "needs_cuda", "initial_state", "pre_backward", "post_backward",
           "state_to", "Strategy", "StrategyKind", "SyncFreeDefaultStrategy"]
