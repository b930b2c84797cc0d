"""`SplatConfig`: the Gaussian-splatting fields on top of the shared `TrainConfig`, plus
the named presets (`splatlab train --preset NAME`). Attribute docstrings are the CLI help."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, Optional

import tyro
from typing_extensions import Annotated

from splatlab.renderers.train_config import TrainConfig


@dataclass
class SplatConfig(TrainConfig):
    """Gaussian splatting (3DGS / gsplat's simple_trainer)."""

    # ---- model ----
    sh_degree: int = 3
    """Maximum spherical-harmonics degree of the colours."""
    sh_degree_interval: int = 1000
    """Raise the SH degree in use by one every this many steps."""
    init_num_points: int = 100_000
    """Random initial points, when the scene has no point cloud."""
    init_max_points: int = 0
    """Use at most this many of the scene's points (a random subset; 0: all of them)."""
    init_extent: float = 3.0
    """Half-size of the random initial box, in units of the scene extent."""
    init_opacity: float = 0.1
    """Initial opacity of every Gaussian."""
    init_scale: float = 1.0
    """Initial scale, relative to the mean distance to the 3 nearest points."""

    # ---- optimiser (Adam, one learning rate per parameter group, as gsplat's simple_trainer) ----
    lr_means: float = 1.6e-4
    """Position learning rate, times the scene extent."""
    lr_means_final: float = 0.01
    """Position learning rate at the last step, as a fraction of `lr_means` (exponential decay)."""
    lr_scales: float = 5e-3
    """Learning rate of the log scales."""
    lr_quats: float = 1e-3
    """Learning rate of the rotations."""
    lr_opacities: float = 5e-2
    """Learning rate of the opacity logits."""
    lr_sh0: float = 2.5e-3
    """Learning rate of the base colour (SH degree 0)."""
    lr_shN: float = 2.5e-3 / 20
    """Learning rate of the higher SH coefficients."""
    selective_adam: bool = False
    """Update only the Gaussians visible in each step (gsplat's selective Adam; CUDA only, plain Adam elsewhere)."""
    ssim_lambda: float = 0.2
    """Loss = (1 - ssim_lambda) * L1 + ssim_lambda * (1 - SSIM)."""
    coarse_to_fine: int = 0
    """Train the first N steps at reduced resolution (1/4 for N/2 steps, then 1/2), as
    DashGaussian does with a fixed schedule: early steps cost a fraction of the pixels.
    0: off."""

    # ---- densification ----
    strategy: Literal["default", "mcmc"] = "default"
    """default: split/duplicate/prune (3DGS's adaptive density control). mcmc: 3DGS-MCMC relocation (gsplat kernels on CUDA, torch twins on CPU)."""
    refine_start: int = 500
    """First step of densification."""
    refine_stop: int = 15_000
    """Stop densifying after this step."""
    refine_every: int = 100
    """Densify every this many steps."""
    reset_every: int = 3000
    """Default strategy with --opacity-reset: reset opacities every this many steps while refining."""
    opacity_reset: bool = False
    """Default strategy: clamp every opacity to 2 x prune_opa every `reset_every` steps while
    refining (and once at refine_start on scenes with a background colour), as 3DGS does, so
    floaters that only stay opaque by inertia get pruned. gsplat 1.5.3's DefaultStrategy never
    resets (an operator-precedence bug in its condition); off, runs match its simple_trainer.
    On in the `default` preset."""
    grow_grad2d: float = 0.0002
    """Split/duplicate Gaussians whose mean screen-space gradient is above this."""
    grow_scale3d: float = 0.01
    """Duplicate below / split above this 3D scale (times the scene extent)."""
    prune_opa: float = 0.005
    """Remove Gaussians less opaque than this."""
    prune_scale3d: float = 0.1
    """Remove Gaussians larger than this (times the scene extent)."""
    absgrad: bool = False
    """Densify on absolute screen-space gradients (AbsGS; raise grow_grad2d to ~0.0008)."""
    cap_max: int = 1_000_000
    """MCMC: maximum number of Gaussians."""
    noise_lr: float = 5e5
    """MCMC: position noise scale."""
    opacity_reg: float = 0.0
    """Opacity regulariser weight (MCMC uses 0.01)."""
    scale_reg: float = 0.0
    """Scale regulariser weight (MCMC uses 0.01)."""

    # ---- casual captures (issue 12; renderers/splat/casual.py) ----
    appearance: Literal["off", "affine", "bilateral"] = "off"
    """Per-training-image colour correction learned with the scene (exposure, white balance):
    affine (a 3x4 colour transform per image) or bilateral (a bilateral grid of them per
    image, sliced by position and luminance). Held at the identity on average, so the scene
    keeps the capture's average look; test views, viewer and exports render uncorrected."""
    appearance_lr: float = 2e-3
    """Learning rate of the appearance corrections (decays 100x over the run)."""
    appearance_warmup: int = 1000
    """Steps of linear warm-up of the appearance learning rate."""
    bilateral_grid_xy: int = 16
    """Bilateral grid cells along the image width and height."""
    bilateral_grid_guidance: int = 8
    """Bilateral grid cells along luminance."""
    bilateral_tv_weight: float = 10.0
    """Weight of the bilateral grids' total-variation loss."""
    pose_opt: tyro.conf.DisallowNone[Annotated[Optional[bool], tyro.conf.arg(help_behavior_hint="(default: by scene)")]] = None
    """Refine the training cameras' poses (rotation + translation per camera). Unset: on for
    nerfstudio transforms.json, video frames and scenes marked rough; off for COLMAP,
    Blender, LLFF and the demo. Test views are never refined."""
    pose_opt_lr: float = 1e-4
    """Learning rate of the pose deltas (radians; translation in scene extents), decays 100x."""
    pose_opt_warmup: int = 1000
    """Steps of linear warm-up of the pose learning rate (let the geometry form first)."""
    pose_opt_reg: float = 1e-6
    """Weight decay of the pose deltas."""
    masks: tyro.conf.DisallowNone[Annotated[Optional[bool], tyro.conf.arg(help_behavior_hint="(default: by scene)")]] = None
    """Leave masked pixels out of the loss. Unset: on when the scene has masks."""
    antialias: bool = False
    """gsplat's antialiased rasterization plus Mip-Splatting's 3D filter (each Gaussian no
    sharper than the training views that see it), for rendering farther or smaller."""
    max_gaussians: int = 0
    """Cap on the Gaussian count: 0 derives it from the training device's memory at the
    start (a GPU's free memory, a CPU host's physical RAM); -1: no cap."""


def _preset(doc: str, **overrides) -> tuple[str, SplatConfig]:
    return doc, dataclasses.replace(SplatConfig(), **overrides)


# What gsplat's simple_trainer changes for MCMC (`--strategy mcmc` alone keeps ADC's init).
MCMC_FIELDS = dict(strategy="mcmc", init_opacity=0.5, init_scale=0.1, opacity_reg=0.01, scale_reg=0.01)

# name -> (help, config). `default` is gsplat simple_trainer's 30k-step schedule.
PRESETS: dict[str, tuple[str, SplatConfig]] = {
    "default": _preset(
        "30k steps: the full-quality schedule of 3DGS (gsplat simple_trainer's, with 3DGS's opacity "
        "reset, which simple_trainer never performs: lego 35.98 dB against 35.30 without, "
        "benchmarks/RESULTS.md; --no-opacity-reset for simple_trainer's exact schedule).",
        opacity_reset=True,
    ),
    "fast": _preset(
        "7k steps of 3DGS-MCMC: relocation and +5% growth every 100 steps. On beer it beat "
        "7k steps of ADC by ~2.7 dB test PSNR with fewer Gaussians (benchmarks/RESULTS.md).",
        **MCMC_FIELDS, steps=7000, refine_stop=25_000, sh_degree_interval=500, checkpoint_every=7000,
    ),
    "fast-adc": _preset(
        "7k steps of 3DGS adaptive density control, densifying until 3.5k (simple_trainer's 7k look).",
        steps=7000, refine_stop=3500, sh_degree_interval=500, checkpoint_every=7000,
    ),
    "mcmc": _preset(
        "30k steps with 3DGS-MCMC relocation, capped at 1M Gaussians.",
        **MCMC_FIELDS, refine_stop=25_000,
    ),
    "cpu": _preset(
        "What the demo uses on a CPU: ~1k steps at half resolution, ~1.5 minutes on 2 cores. "
        "A short schedule, so larger position/scale/colour learning rates.",
        steps=1000, downscale=2, sh_degree=1, sh_degree_interval=300, init_max_points=2000,
        refine_start=100, refine_stop=700, refine_every=100, grow_grad2d=0.0004,
        reset_every=100_000, lr_means=8e-4, lr_means_final=0.1, lr_scales=1e-2, lr_sh0=5e-3,
        log_every=20, checkpoint_every=500,
        appearance_lr=5e-3, appearance_warmup=100, pose_opt_lr=1e-3, pose_opt_warmup=100,
    ),
}


__all__ = ["MCMC_FIELDS", "PRESETS", "SplatConfig"]
