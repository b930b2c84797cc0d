"""The rasterizer's small types, in their own module so that the backends import them
without importing the package that dispatches to them (no import cycle)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from jaxtyping import Float
from torch import Tensor

RenderMode = Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"]
Backend = Literal["auto", "gsplat", "reference"]


@dataclass
class RenderOutput:
    """What a render returns. `colors` holds RGB (and/or depth as its last channel, as
    gsplat does) composited over `backgrounds`; `depths` is split out for convenience."""

    colors: Float[Tensor, "C H W D"]  # RGB, or depth, or RGB+depth, per render_mode
    alphas: Float[Tensor, "C H W 1"]
    depths: Optional[Float[Tensor, "C H W 1"]]  # expected ("ED") or accumulated ("D") depth
    # For densification strategies: projected 2D means (their .grad is read after
    # backward), per-camera radii in pixels (C N 2, int; 0 = not visible).
    means2d: Tensor
    radii: Tensor
    # The dict gsplat's strategies read (means2d, radii, width, height, n_cameras, ...).
    info: dict = field(default_factory=dict)

    @property
    def rgb(self) -> Float[Tensor, "C H W 3"]:
        return self.colors[..., :3]

    @property
    def visible(self) -> Tensor:
        """C N bool: Gaussians that touched each camera's image."""
        return (self.radii > 0).all(dim=-1) if self.radii.dim() == 3 else self.radii > 0


__all__ = ["Backend", "RenderMode", "RenderOutput"]
