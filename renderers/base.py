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
    sampler.resize(renderer.rays_wanted(sampler.R))  # ray batches only

Before the first step (fresh or resumed) the loop calls `renderer.setup_training(cfg,
scene)`; after the last, `renderer.write_outputs(run_dir, normalization)` writes the
method's final artefact (splat.ply for splats). The loop owns everything else: optimizers, logging, checkpoints, eval, the viewer feed.
State that a checkpoint holds is tensors and primitives only (loadable with
`torch.load(..., weights_only=True)`); the method's name is saved beside it and read
back through the registry, never guessed.

Optional capabilities: the viewer and exporters look for these with `getattr` and do
without them (a method that lacks one simply does not offer the feature):

    sh_degree: int                          the maximum SH degree (viewer slider)
    with_render_options(sh_degree, near_plane, far_plane) -> Renderer   a cheap view
    centers() -> Tensor N 3                 primitive centres (crop box, camera target, bounds)
    cropped(lo, hi) -> Renderer             only the primitives inside an axis-aligned box
    browser_splats() -> dict of arrays      colour-only splats for viser's browser renderer

For several processes (torch.distributed; app/distributed.py) a method offers:

    shard(rank, world_size) -> None         after `setup_training`: keep this rank's share of
                                            the primitives (its `sharded` param groups); every
                                            render is collective from then on
    gathered() -> Renderer | None           collective: the whole model on rank 0, None elsewhere

Conventions (rasterizer/CONVENTIONS.md): OpenCV camera axes, world->camera view
matrices, colours in [0, 1] composited over `background`, depth is camera z.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Optional

from jaxtyping import Float, Int
from torch import Tensor

from .train_config import TrainConfig  # noqa: F401 - part of the contract's names

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

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
    selective: bool = False  # update only the rows the renderer marked visible (CUDA; see rasterizer/optim.py)
    sharded: bool = False  # rows split across processes (`shard`); else every rank holds it whole

    def lr_at(self, step: int, total_steps: int) -> float:
        lr = self.lr * self.lr_final ** (min(step, total_steps) / max(total_steps, 1))
        if self.warmup_steps > 0 and step < self.warmup_steps:
            lr *= step / self.warmup_steps
        return lr



class Renderer(ABC):
    """A scene representation and how to render it. No training loop here."""

    name: ClassVar[str]  # registry key, saved in config.json and checkpoints
    config_cls: ClassVar[type["TrainConfig"]]  # the method's flat config (a TrainConfig subclass)
    presets: ClassVar[dict[str, tuple[str, "TrainConfig"]]]  # name -> (one-line help, config)
    batch_kind: ClassVar[BatchKind] = "image"
    exports: ClassVar[tuple[str, ...]] = ()  # export formats this method supports
    file_suffixes: ClassVar[tuple[str, ...]] = ()  # model files it opens with `from_file` (".ply")

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

    @classmethod
    def from_file(cls, path: "Path", device: "torch.device | str" = "cpu") -> "Renderer":
        """A model from one of `file_suffixes` (original coordinates)."""
        raise NotImplementedError(f"{cls.__name__} opens no model files")

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

    def setup_training(self, cfg: Any, scene: "Scene") -> None:
        """Called once before the first step, fresh or resumed (after `from_state`), with the
        run's config: build method-side training state (schedules, a densification
        strategy) that `from_state` did not restore."""

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

    def rays_wanted(self, current: int) -> int:
        """Ray-batch methods: how many rays the next step draws, given this step's count; read
        after `after_step` (e.g. to hold the field samples per step near a target while the
        samples per ray change). Default: unchanged."""
        return current

    # ---- reporting ---------------------------------------------------------------------
    @abstractmethod
    def stats(self) -> dict[str, Any]:
        """Numbers for the live display and viewer, by human-readable name
        (e.g. {"Gaussians": 100000} or {"hash grid": "2^19 x 16 levels"})."""

    def metrics(self) -> dict[str, Any]:
        """Machine-readable numbers for metrics.json (e.g. {"num_gaussians": 100000})."""
        return {}

    def write_outputs(self, run_dir: "Path", normalization: Any) -> list["Path"]:
        """Write the method's final artefact into the run folder (in the dataset's original
        coordinates, given the scene's `Normalization`); returns what it wrote."""
        return []

    def live_copy(self) -> "Renderer":
        """A detached, render-ready snapshot for the viewer to read while training goes on."""
        return self


__all__ = ["Batch", "BatchKind", "ParamGroup", "Rendered", "Renderer", "TrainConfig"]
