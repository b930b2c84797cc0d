"""`NerfConfig`: the NeRF's fields on top of the shared `TrainConfig`, plus its presets
(`splatlab train --method nerf --preset NAME`). Attribute docstrings are the CLI help."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from splatlab.renderers.train_config import TrainConfig


@dataclass
class NerfConfig(TrainConfig):
    """A nerfacto-class NeRF: hash-grid field, proposal or occupancy-grid sampler, appearance
    embeddings."""

    method: str = "nerf"
    """Scene representation to train."""
    rgb_loss: Literal["l1", "mse"] = "mse"
    """Photometric loss on the ray colours."""
    ssim_lambda: float = 0.0
    """Unused by ray batches (SSIM needs whole images)."""
    random_background: bool = True
    """For scenes with alpha (Blender): each ray's pixel is composited on a random colour and
    rendered on the same colour, so the field must make the background transparent. On a
    constant background a NeRF can paint it with density instead (floaters in new views)."""

    # ---- scene ----
    scene_mode: Literal["auto", "bounded", "unbounded"] = "auto"
    """bounded: an axis-aligned box on the scene's background (Blender, the demo). unbounded:
    mip-NeRF 360 contraction of all space (real captures). auto: bounded when the scene has a
    constant background colour, else unbounded."""
    box_margin: float = 0.05
    """Bounded: grow the scene's box by this fraction of its diagonal on every side."""
    near_plane: float = 0.05
    """Nearest sample distance, times the scene radius."""
    far_plane: float = 1000.0
    """Unbounded: farthest sample distance, times the scene radius."""

    # ---- field ----
    hash_levels: int = 16
    """Hash grid levels."""
    hash_features: int = 2
    """Features per level."""
    hash_log2_size: int = 19
    """log2 of the entries per level."""
    base_resolution: int = 16
    """Coarsest grid resolution (cells per side of the unit cube)."""
    max_resolution: int = 2048
    """Cap on the finest resolution; the actual one is `cells_per_pixel` cells per pixel
    footprint at the cameras' mean distance (from the scene's size and the focal length)."""
    cells_per_pixel: float = 2.0
    """Finest grid cells per pixel footprint (the trilinear interpolation of a finer grid
    resolves edges a one-cell-per-pixel grid blurs)."""
    hidden_dim: int = 64
    """Width of the density MLP."""
    geo_features: int = 15
    """Geometry features passed from the density MLP to the colour MLP."""
    color_hidden_dim: int = 64
    """Width of the colour MLP (two hidden layers)."""
    appearance_dim: int = -1
    """Per-image appearance embedding size (0: none; -1: 32 for unbounded captures, whose
    exposure varies, and none for bounded scenes). Test views use the mean embedding."""
    hash_backend: Literal["auto", "torch", "triton"] = "auto"
    """Hash encoding kernel: auto (triton on CUDA when installed, else torch)."""
    bf16: bool = False
    """bf16 autocast of the MLPs on CUDA (the hash tables stay float32). Off: at these MLP
    widths the casts cost more than they save (lego, 1500 steps on an H100: 29.5 s with it,
    24.7 s without, same PSNR; benchmarks/RESULTS.md, "NeRF stability")."""

    # ---- sampling ----
    rays_per_batch: int = 4096
    """Rays per training step, drawn across all training images (with `samples_per_batch`: the
    first step's, and the most a step draws unless the budget is larger)."""
    samples_per_batch: int = 0
    """Occupancy: resize each step's ray batch so that the field evaluates about this many samples
    (rays x the last step's samples per ray), as Instant-NGP does with 2^18; 0: always
    `rays_per_batch` rays. Empty space costs no samples, so a fixed ray count leaves the GPU idle
    once the grid has carved it out."""
    sampler: Literal["auto", "proposal", "occupancy"] = "auto"
    """Where rays are sampled. occupancy: Instant-NGP's ray marching through an occupancy grid
    of the box (bounded scenes only). proposal: nerfacto's proposal networks. auto: occupancy
    for bounded scenes, proposal for unbounded ones."""
    occ_resolution: int = 128
    """Occupancy: cells per side of the box."""
    march_samples: int = 1024
    """Occupancy: the marching step is the box's diagonal / this."""
    occ_threshold: float = 0.01
    """Occupancy: a cell is occupied while its density x step exceeds this (or the grid's mean,
    if lower)."""
    occ_update_every: int = 16
    """Occupancy: re-evaluate the grid every this many steps."""
    occ_warmup_steps: int = 256
    """Occupancy: until this step every cell is re-evaluated; after it a random quarter of the
    cells plus the occupied ones."""
    occ_decay: float = 0.95
    """Occupancy: a cell's value decays by this factor per update unless its density holds it."""
    early_stop_eps: float = 1e-4
    """Occupancy: drop samples where less than this much light is left (0: keep all)."""
    proposal_samples_1: int = 256
    """Samples of the first proposal round."""
    proposal_samples_2: int = 96
    """Samples of the second proposal round."""
    nerf_samples: int = 48
    """Proposal sampler: samples of the radiance field per ray."""
    proposal_levels: int = 5
    """Hash levels of each proposal density field."""
    proposal_log2_size: int = 17
    """log2 table size of each proposal field."""
    proposal_max_resolution_1: int = 128
    """Finest resolution of the first proposal field."""
    proposal_max_resolution_2: int = 256
    """Finest resolution of the second proposal field."""
    proposal_anneal_steps: int = 1000
    """Sharpen the proposal weights used for resampling from flat to exact over these steps."""
    interlevel_weight: float = 1.0
    """Weight of the proposal (interlevel) loss."""
    distortion_weight: float = 0.002
    """Weight of mip-NeRF 360's distortion loss."""
    render_chunk: int = 16384
    """Rays per chunk when rendering whole images (bounds memory)."""

    # ---- optimiser (Adam eps 1e-15, exponential decay) ----
    lr: float = -1.0
    """Learning rate of the fields (hash tables and MLPs); -1: by sampler. Occupancy: Instant-NGP's
    1e-2 (lego `fast` on an H100: 35.15 dB, no collapse). Proposal: 1e-3, as nerfacto's 1e-2 sent
    every density to the e^30 cap after about 1k steps on lego and beer, and 3e-3 still did on beer
    at step 2400 (an H100, benchmarks/RESULTS.md, "NeRF stability"); both runs predate the
    resampling's histogram padding, which ended that collapse on a CPU, so 1e-3 stays until a GPU
    run says more. The `cpu` preset's short schedule sets 1e-2."""
    lr_final: float = 0.01
    """Learning rate at the last step, as a fraction of `lr`."""
    lr_appearance: float = 1e-2
    """Learning rate of the appearance embeddings."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up."""


def _preset(doc: str, **overrides) -> tuple[str, NerfConfig]:
    return doc, dataclasses.replace(NerfConfig(), **overrides)


# name -> (help, config)
PRESETS: dict[str, tuple[str, NerfConfig]] = {
    "default": _preset("30k steps: nerfacto's field; the occupancy grid with 2^18 field samples a step on "
                       "bounded scenes, the proposal sampler with 4096 rays on unbounded ones.",
                       steps=30_000, samples_per_batch=1 << 18, checkpoint_every=5000, log_every=100),
    "fast": _preset("20k steps of 2^18 field samples (occupancy grid; 8192 rays with proposals): the "
                    "5-minute GPU schedule.",
                    steps=20_000, rays_per_batch=8192, samples_per_batch=1 << 18, checkpoint_every=3000,
                    log_every=100),
    "cpu": _preset(
        "The demo on a CPU: a small grid, the proposal sampler with few samples, 800 steps of 1024 "
        "rays at half resolution.",
        steps=800, downscale=2, rays_per_batch=1024, sampler="proposal", hash_levels=8, hash_log2_size=15,
        max_resolution=256, hidden_dim=32, color_hidden_dim=32,
        proposal_samples_1=32, proposal_samples_2=16, nerf_samples=16, proposal_levels=4,
        proposal_log2_size=13, proposal_max_resolution_1=64, proposal_max_resolution_2=128,
        proposal_anneal_steps=300, lr=1e-2, lr_final=0.1, log_every=50, checkpoint_every=800,
        render_chunk=8192,
    ),
}

__all__ = ["NerfConfig", "PRESETS"]
