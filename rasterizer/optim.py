"""Optimizers over per-Gaussian parameters: torch's Adam, or gsplat's selective Adam.

Selective Adam (Taming 3DGS; gsplat's `SelectiveAdam`) updates only the rows of the
Gaussians visible in the step: the others keep their parameters and moments. Its CUDA
kernel is gsplat's `adam` (fused, no bias correction); `selective_adam_torch` is its twin.
Unlike gsplat's class, `SelectiveAdam.step()` takes no argument: the renderer sets
`visibility` after its forward pass, so a training loop that steps every optimizer the
same way drives it unchanged. gsplat's strategies edit it like any Adam (same state keys).
"""

from __future__ import annotations

from typing import Optional

import torch
from jaxtyping import Bool
from torch import Tensor


@torch.no_grad()
def selective_adam_torch(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor,
                         visible: Bool[Tensor, " N"], lr: float, b1: float, b2: float,
                         eps: float) -> None:
    """In place, rows `visible` only (param is N ...): gsplat's adam kernel in torch."""
    rows = visible.view(-1, *([1] * (param.dim() - 1)))
    m = torch.where(rows, b1 * exp_avg + (1 - b1) * grad, exp_avg)
    v = torch.where(rows, b2 * exp_avg_sq + (1 - b2) * grad * grad, exp_avg_sq)
    param.copy_(torch.where(rows, param - lr * m / (v.sqrt() + eps), param))
    exp_avg.copy_(m)
    exp_avg_sq.copy_(v)


class SelectiveAdam(torch.optim.Adam):
    """Adam over N-row parameters that updates only the rows in `visibility` (N bool),
    which must be set before every `step()` (it is consumed by the step). One tensor per
    group, as gsplat's strategies expect."""

    def __init__(self, params, lr: float, eps: float = 1e-15, betas: tuple[float, float] = (0.9, 0.999)):
        super().__init__(params, lr=lr, eps=eps, betas=betas)
        self.visibility: Optional[Tensor] = None

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - torch's signature
        if closure is not None:
            raise ValueError("SelectiveAdam takes no closure")
        vis, self.visibility = self.visibility, None
        if vis is None:
            raise RuntimeError("SelectiveAdam.step(): set .visibility (N bool) after the forward pass")
        for group in self.param_groups:
            if len(group["params"]) != 1:
                raise ValueError("SelectiveAdam takes one tensor per parameter group")
            p = group["params"][0]
            if p.grad is None:
                continue
            if vis.shape != p.shape[:1]:
                raise ValueError(f"visibility has {tuple(vis.shape)} rows, the parameter {tuple(p.shape)}")
            state = self.state[p]
            if len(state) == 0:
                state["step"] = torch.tensor(0.0)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            b1, b2 = group["betas"]
            args = (p, p.grad, state["exp_avg"], state["exp_avg_sq"], vis, group["lr"], b1, b2, group["eps"])
            if p.is_cuda:
                from gsplat.cuda._wrapper import adam

                adam(*args)
            else:
                selective_adam_torch(*args)
        return None


def _fusable(params: list[Tensor]) -> bool:
    """Whether torch's fused Adam kernel takes these: float tensors on CUDA or the CPU."""
    return bool(params) and all(p.device.type in ("cuda", "cpu") and p.dtype in (
        torch.float32, torch.float64, torch.float16, torch.bfloat16) for p in params)


def make_adam(params: list[Tensor], lr: float, eps: float, *, name: Optional[str] = None,
              weight_decay: float = 0.0, selective: bool = False) -> torch.optim.Optimizer:
    """The optimizer of one parameter group: `SelectiveAdam` when `selective`, the
    parameters are on CUDA and there is no weight decay (gsplat's kernel has none), else
    torch's Adam, fused (one kernel per group, on CUDA and on the CPU alike, so the CPU
    runs the same optimizer code as the GPU and keeps its step counters off the host).
    Off CUDA a selective group falls back to plain Adam: the dense update is cheap there."""
    cuda = all(p.is_cuda for p in params)
    group = {"params": params, "lr": lr}
    if name is not None:
        group["name"] = name  # gsplat's strategies and checkpoints find groups by name
    if selective and cuda and weight_decay == 0:
        return SelectiveAdam([group], lr=lr, eps=eps)
    return torch.optim.Adam([group], lr=lr, eps=eps, weight_decay=weight_decay,
                            fused=True if _fusable(params) else None)


def _plain_fused_adam(opt: torch.optim.Optimizer) -> bool:
    """A torch Adam that `step_all` may step itself: fused, no amsgrad/maximize/
    differentiable/capturable, state already created (torch's first step creates it)."""
    if type(opt) is not torch.optim.Adam:
        return False
    for g in opt.param_groups:
        if not g.get("fused") or g.get("amsgrad") or g.get("maximize") or g.get("differentiable") \
                or g.get("capturable") or g.get("decoupled_weight_decay") or isinstance(g["lr"], Tensor):
            return False
        for p in g["params"]:
            if p.grad is not None and (p.grad.is_sparse or "step" not in opt.state.get(p, {})):
                return False
    return True


def step_all(optimizers: dict[str, torch.optim.Optimizer]) -> None:
    """Step every optimizer and drop the gradients (as `step()` then `zero_grad(set_to_none=True)`
    on each), with the fused torch Adams stepped together: one `_foreach_add_` for all
    their step counters and one `_fused_adam_` kernel per group, the calls torch's own
    fused step makes, without its per-optimizer Python. Same kernels, same results."""
    steps: list[Tensor] = []
    calls = []
    for opt in optimizers.values():
        if not _plain_fused_adam(opt):
            opt.step()
            opt.zero_grad(set_to_none=True)
            continue
        for g in opt.param_groups:
            ps = [p for p in g["params"] if p.grad is not None]
            if not ps:
                continue
            st = [opt.state[p] for p in ps]
            b1, b2 = g["betas"]
            calls.append((ps, [p.grad for p in ps], [s["exp_avg"] for s in st],
                          [s["exp_avg_sq"] for s in st], [s["step"] for s in st],
                          dict(lr=g["lr"], beta1=b1, beta2=b2, weight_decay=g["weight_decay"], eps=g["eps"])))
            steps += [s["step"] for s in st]
    if steps:
        by_device: dict[torch.device, list[Tensor]] = {}
        for t in steps:
            by_device.setdefault(t.device, []).append(t)
        for ts in by_device.values():
            torch._foreach_add_(ts, 1)
    for ps, grads, m, v, st, hp in calls:
        torch._fused_adam_(ps, grads, m, v, [], st, amsgrad=False, maximize=False,
                           grad_scale=None, found_inf=None, **hp)
        for p in ps:
            p.grad = None


def hand_visibility(optimizers: dict[str, torch.optim.Optimizer], visible: Bool[Tensor, "C N"]) -> None:
    """Give every `SelectiveAdam` in `optimizers` this step's mask: the Gaussians visible
    in any of the C rendered cameras. Device ops only (no host sync)."""
    mask = None
    for opt in optimizers.values():
        if isinstance(opt, SelectiveAdam):
            if mask is None:
                mask = visible.any(0)
            opt.visibility = mask


__all__ = ["SelectiveAdam", "hand_visibility", "make_adam", "selective_adam_torch", "step_all"]
