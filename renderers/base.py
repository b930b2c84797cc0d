"""The renderer contract: what a method supplies so that one training loop, one run
folder, the viewer, eval and export drive it without knowing which method it is.

A method is a subclass of `Renderer`, registered by name in `splatlab.renderers.RENDERERS`.
The training loop (app/train.py) does, per step:

    batch = sampler.next()                      # Batch: images (splat) or rays (nerf)
    out = renderer.train_render(batch, step)    # Rendered
    renderer.before_backward(step, out, optimizers)
    loss = photometric(out.rgb, batch.gt) + sum(renderer.extra_losses(step, out, batch).values())
    loss.backward(); optimizers step (lrs from renderer.param_groups schedules)
    renderer.after_step(step, out, optimizers)  # densify / relocate / update samplers

and owns everything else: optimizers, logging, checkpoints, eval, the viewer feed.
State that a checkpoint holds is tensors and primitives only (loadable with
`torch.load(..., weights_only=True)`); the method's name is saved beside it and read
back through the registry, never guessed.

Conventions (rasterizer/CONVENTIONS.md): OpenCV camera axes, world->camera view
matrices, colours in [0, 1] composited over `background`, depth is camera z.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Optional

from jaxtyping import Float, Int
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from splatlab.scenes.types import Cameras, Scene

BatchKind = Literal["image", "rays"]


@dataclass
class Rendered:
    """What every method's render returns (C cameras, or R rays laid out as C=1, H=1, W=R)."""

    rgb: Float[Tensor, "C H W 3"]  # composited over the background
    alpha: Float[Tensor, "C H W 1"]  # accumulated opacity
    depth: Optional[Float[Tensor, "C H W 1"]] = None  # expected camera-z depth, when asked for
    extras: dict[str, Any] = field(default_factory=dict)  # method-specific (gsplat info, ray samples)


@dataclass
class Batch:
    """One training step's data, drawn by the loop.

    "image" batches: `cameras` holds the C views rendered, `gt` is C H W 3.
    "rays" batches: `cameras` holds every training view, `image_idx` (R) and `pixels`
    (R 2, x y pixel centres, +0.5 included) pick R rays; `gt` is R 3.
    `image_idx` always indexes the training views (for per-image embeddings).
    """

    kind: BatchKind
    cameras: "Cameras"
    gt: Tensor  # float in [0, 1], composited over `background` where the scene has alpha
    image_idx: Int[Tensor, " B"]
    pixels: Optional[Float[Tensor, "R 2"]] = None
    background: Optional[Float[Tensor, "B 3"]] = None  # None: black
    mask: Optional[Tensor] = None  # 1 where the loss counts (C H W 1 or R 1); None: everywhere


@dataclass
class ParamGroup:
    """Parameters sharing one optimizer and learning-rate schedule: `lr` at step 0,
    exponential decay to `lr * lr_final` at the last step (1.0: constant), linear
    warm-up from 0 over `warmup_steps`."""

    name: str
    params: list[Tensor]
    lr: float
    lr_final: float = 1.0
    warmup_steps: int = 0
    eps: float = 1e-15
    weight_decay: float = 0.0

    def lr_at(self, step: int, total_steps: int) -> float:
        lr = self.lr * self.lr_final ** (min(step, total_steps) / max(total_steps, 1))
        if self.warmup_steps > 0 and step < self.warmup_steps:
            lr *= step / self.warmup_steps
        return lr



@dataclass
class TrainConfig:
    """The fields every method's config shares: data, run folder, loop and bookkeeping.
    A method's config subclasses this with its own flat fields (one dataclass, no nesting);
    attribute docstrings are the CLI help; it is saved as plain JSON of primitives."""

    data: Optional[str] = None
    """Scene folder (COLMAP, nerfstudio, Blender, LLFF), a photo folder or video (posed by
    `splatlab process`), or `demo` (the default): the built-in procedural scene."""
    method: str = "splat"
    """Scene representation to train."""
    output: Optional[str] = None
    """Run folder to create (default: runs/<scene>-<date>-<time> under the current directory)."""
    viewer: bool = False
    """Open the live browser viewer while training."""
    viewer_port: int = 8080
    """Port of the live viewer."""
    device: str = "auto"
    """Torch device: auto (CUDA when available, else CPU), cpu, cuda, cuda:1, ..."""
    seed: int = 42
    """Random seed (initial model, view order, densification)."""
    steps: int = 30_000
    """Number of optimisation steps."""
    downscale: int = 1
    """Load images at 1/downscale resolution."""
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
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class Renderer(ABC):
    """A scene representation and how to render it. No training loop here."""

    name: ClassVar[str]  # registry key, saved in config.json and checkpoints
    config_cls: ClassVar[type["TrainConfig"]]  # the method's flat config (a TrainConfig subclass)
    presets: ClassVar[dict[str, tuple[str, "TrainConfig"]]]  # name -> (one-line help, config)
    batch_kind: ClassVar[BatchKind] = "image"
    exports: ClassVar[tuple[str, ...]] = ()  # export formats this method supports

    # ---- construction and state -------------------------------------------------------
    @classmethod
    @abstractmethod
    def build(cls, scene: "Scene", cfg: Any, device: "torch.device") -> "Renderer":
        """A fresh model for `scene` (normalized frame) from the method's config."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to render and to resume (model and method-side training
        state such as densification statistics): tensors and primitives only."""

    @classmethod
    @abstractmethod
    def from_state(cls, state: dict[str, Any], device: "torch.device | str" = "cpu") -> "Renderer":
        """Inverse of `state_dict`."""

    @property
    @abstractmethod
    def device(self) -> "torch.device":
        ...

    # ---- rendering ---------------------------------------------------------------------
    @abstractmethod
    def render(
        self,
        cameras: "Cameras",
        *,
        background: Optional[Float[Tensor, "C 3"]] = None,
        with_depth: bool = False,
    ) -> Rendered:
        """Full images from `cameras` (on this renderer's device), at full quality."""

    def train_render(self, batch: Batch, step: int) -> Rendered:
        """The training forward pass (a method may use `step` for schedules)."""
        return self.render(batch.cameras, background=batch.background)

    # ---- training hooks ----------------------------------------------------------------
    @abstractmethod
    def param_groups(self, cfg: Any) -> list[ParamGroup]:
        """The trainable parameters, one group per optimizer, named uniquely."""

    def before_backward(self, step: int, out: Rendered, optimizers: dict) -> None:
        """Called after the forward pass, before `loss.backward()`."""

    def after_step(self, step: int, out: Rendered, optimizers: dict) -> Optional[str]:
        """Called after the optimizers stepped (densification, sampler updates). Returns a
        short note when the model's structure changed (e.g. "12,000 -> 13,500 Gaussians")."""
        return None

    def extra_losses(self, step: int, out: Rendered, batch: Batch) -> dict[str, Tensor]:
        """Regularizers added to the photometric loss, by name (logged separately)."""
        return {}

    # ---- reporting ---------------------------------------------------------------------
    @abstractmethod
    def stats(self) -> dict[str, Any]:
        """Numbers for the live display and viewer, by human-readable name
        (e.g. {"Gaussians": 100000} or {"hash grid": "2^19 x 16 levels"})."""

    def live_copy(self) -> "Renderer":
        """A detached, render-ready snapshot for the viewer to read while training goes on."""
        return self


__all__ = ["Batch", "BatchKind", "ParamGroup", "Rendered", "Renderer", "TrainConfig"]
