"""`TrainConfig`: the config fields every method shares (split from renderers/base.py so
that reading a method's config and presets, as `splatlab train --help` does, imports no torch).
`renderers.base` re-exports it; the contract is unchanged."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, Optional

import tyro
from typing_extensions import Annotated

from splatlab.renderers import RENDERERS


def _arg(metavar: str, hint: str = "") -> object:
    # Help in words, not tyro's notation (`{None}|STR`, "(default: None)"); an empty hint omits it.
    return tyro.conf.arg(metavar=metavar, help_behavior_hint=hint)


@dataclass
class TrainConfig:
    """The fields every method's config shares: data, run folder, loop and bookkeeping.
    A method's config subclasses this with its own flat fields (one dataclass, no nesting);
    attribute docstrings are the CLI help; it is saved as plain JSON of primitives."""

    data: Annotated[Optional[str], tyro.conf.Positional, _arg(metavar="[DATA]", hint="(default: demo)")] = None
    """Scene folder (COLMAP, nerfstudio, Blender, LLFF), a photo folder or video (posed by
    `splatlab process`), or `demo` (the default): the built-in procedural scene."""
    method: Annotated[str, _arg(metavar="{" + ",".join(RENDERERS) + "}", hint="(default: splat)")] = "splat"
    """Scene representation to train."""
    format: Annotated[Optional[Literal["colmap", "blender", "nerfstudio", "llff", "images"]],
                      _arg(metavar="{colmap,blender,nerfstudio,llff,images}", hint="(default: detected)")] = None
    """Read DATA as this scene format instead of detecting it."""
    images: Annotated[Optional[str], _arg(metavar="PATH")] = None
    """Images folder, when not where the format expects it (relative: to DATA first)."""
    colmap_path: Annotated[Optional[str], _arg(metavar="PATH")] = None
    """COLMAP model folder (cameras/images/points3D), when not in a usual place (relative: to DATA first)."""
    preset: Annotated[Optional[str], tyro.conf.Suppress] = None
    """The preset this config started from (set by the CLI, saved with the run)."""
    output: Annotated[Optional[str], _arg(metavar="PATH")] = None
    """Run folder to create (default: runs/<scene>-<date>-<time> under the current directory)."""
    overwrite: bool = False
    """Replace a previous run in --output (only the files splatlab wrote there)."""
    viewer: bool = False
    """Open the live browser viewer while training."""
    viewer_port: int = 8080
    """Port of the live viewer."""
    allow_origin: Annotated[tuple[str, ...], _arg(metavar="ORIGIN ...", hint="(default: none)")] = ()
    """Extra web origins the live viewer accepts (e.g. http://localhost:9000 behind an SSH tunnel)."""
    device: str = "auto"
    """Torch device: auto (CUDA when available, else CPU), cpu, cuda, cuda:1, ..."""
    gpus: int = 1
    """Train in this many processes, one per GPU (NCCL), the Gaussians split between them and
    one image each per step; without CUDA, CPU processes (gloo). Under torchrun: torchrun's count."""
    seed: int = 42
    """Random seed (initial model, view order, densification)."""
    steps: int = 30_000
    """Number of optimisation steps."""
    downscale: int = 1
    """Load images at 1/downscale resolution."""
    random_background: bool = False
    """For scenes with alpha: composite on a random colour each step (robust transparent backgrounds)."""
    rgb_loss: Literal["l1", "mse"] = "l1"
    """Photometric loss on the colours (the loop computes it, masked by `Batch.mask`)."""
    ssim_lambda: float = 0.2
    """Image batches only: loss = (1 - ssim_lambda) * rgb_loss + ssim_lambda * (1 - SSIM)."""
    test_every: int = 8
    """Hold out every N-th image as a test view (when the dataset has no test split)."""
    log_every: int = 100
    """Read back and log loss/PSNR every this many steps."""
    checkpoint_every: int = 5000
    """Write a checkpoint every this many steps (and at the end)."""
    keep_checkpoints: int = 3
    """How many checkpoints to keep."""
    eval_every: int = 0
    """Evaluate on the test views every this many steps (0: only at the end)."""
    save_renders: bool = True
    """Save the final test renders as PNG under renders/test/."""

    def to_json(self) -> dict:
        """Plain JSON of primitives (tuples become lists; `from_json` turns them back)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict) -> "TrainConfig":
        fields = {f.name: f for f in dataclasses.fields(cls)}
        # JSON has no tuples: a tuple-valued field comes back as a list.
        tuples = {n for n, f in fields.items() if isinstance(f.default, tuple)}
        return cls(**{k: tuple(v) if k in tuples and isinstance(v, list) else v
                      for k, v in d.items() if k in fields})


__all__ = ["TrainConfig"]
