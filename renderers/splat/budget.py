"""The Gaussian budget: a cap on the Gaussian count so that long schedules cannot grow
the model until it no longer fits (gsplat's MCMC trainer reaches 1M Gaussians and 26 GB
on beer by 30k steps, issue 12).

By default the cap comes from the training device's memory when training starts (a
CUDA device's free memory, a CPU host's physical RAM): `MEMORY_FRACTION` of it divided by
`BYTES_PER_GAUSSIAN`, the peak training memory per Gaussian measured there (26 GB / 1M:
parameters, gradients, Adam moments, strategy statistics and the rasterizer's per-Gaussian
buffers at ~1 MP images). When a refinement step overshoots the cap, the least opaque
Gaussians are removed (with gsplat's strategy op, which keeps the optimizers and the
strategy state in step).
"""

from __future__ import annotations

import os

import torch

BYTES_PER_GAUSSIAN = 26_000
MEMORY_FRACTION = 0.8


def device_memory_bytes(device: torch.device) -> int:
    """Memory where training runs: the CUDA device's free memory, else the host's physical
    RAM. Not the host's free RAM: that is the kernel's MemFree, which the page cache and
    other processes move from moment to moment (down to the kernel's reserve, ~100 MB or
    less, where the page cache fills the RAM), and a cap below the Gaussian count changes
    the run, so two CPU runs of one command would differ."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # not POSIX: assume a small machine
        return 4 << 30


def gaussian_cap(setting: int, device: torch.device) -> int:
    """`setting` > 0: that cap; 0: derived from the device's memory; < 0: no cap."""
    if setting > 0:
        return setting
    if setting < 0:
        return 1 << 62
    return max(int(MEMORY_FRACTION * device_memory_bytes(device) / BYTES_PER_GAUSSIAN), 1)


@torch.no_grad()
def enforce_cap(params, optimizers: dict, state: dict, cap: int) -> int:
    """Remove the least opaque Gaussians beyond `cap` (params/optimizers/state edited in
    place, as gsplat's strategies do). Returns how many were removed."""
    n = params["means"].shape[0]
    if n <= cap:
        return 0
    from gsplat.strategy.ops import remove

    drop = torch.zeros(n, dtype=torch.bool, device=params["means"].device)
    drop[torch.argsort(params["opacities"].detach().flatten())[: n - cap]] = True
    remove(params=params, optimizers=optimizers, state=state, mask=drop)
    return int(n - cap)


__all__ = ["BYTES_PER_GAUSSIAN", "MEMORY_FRACTION", "device_memory_bytes", "enforce_cap", "gaussian_cap"]
