"""The viewer's optional renderer capabilities (renderers/base.py), reached with getattr
so the viewer never imports a method: the crop box, the primitives' centres, and the
browser-side splat arrays. A renderer without one simply does not offer the feature."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from splatlab.renderers.common import box_corners


@dataclass(frozen=True)
class CropBox:
    """Axis-aligned box in the model's (normalized) frame; primitives whose centres lie
    outside are hidden when `enabled`."""

    enabled: bool = False
    lo: tuple[float, float, float] = (-1.0, -1.0, -1.0)
    hi: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def to_json(self, normalization=None) -> dict:
        """The box in the normalized frame, plus (given the run's `Normalization`) the
        box in original dataset coordinates, the frame splat.ply and exports are in."""
        d = {"enabled": self.enabled, "frame": "normalized",
             "min": [float(v) for v in self.lo], "max": [float(v) for v in self.hi]}
        if normalization is not None:
            orig = normalization.invert_points(box_corners(self.lo, self.hi))
            # Exact when the normalization has no rotation (every loader today); else the
            # axis-aligned bounds of the rotated box.
            d["original"] = {"min": [float(v) for v in orig.min(0)], "max": [float(v) for v in orig.max(0)]}
        return d

    @classmethod
    def from_json(cls, d: dict) -> "CropBox":
        return cls(bool(d.get("enabled", False)), tuple(float(v) for v in d["min"]),
                   tuple(float(v) for v in d["max"]))

    def mask(self, means: Tensor) -> Tensor:
        lo = torch.as_tensor(self.lo, dtype=means.dtype, device=means.device)
        hi = torch.as_tensor(self.hi, dtype=means.dtype, device=means.device)
        return ((means >= lo) & (means <= hi)).all(-1)


def can_crop(renderer) -> bool:
    return hasattr(renderer, "cropped")


def crop_renderer(renderer, crop: Optional[CropBox]):
    """The renderer restricted to the box (unchanged when cropping is off or unsupported)."""
    if crop is None or not crop.enabled or not can_crop(renderer):
        return renderer
    return renderer.cropped(crop.lo, crop.hi)


def centers(renderer) -> Optional[Tensor]:
    """N 3 primitive centres (normalized frame), or None when the method has none."""
    fn = getattr(renderer, "centers", None)
    return None if fn is None else fn()


def browser_splats(renderer) -> Optional[dict[str, np.ndarray]]:
    """Arrays for viser's add_gaussian_splats, or None when the method cannot give them."""
    fn = getattr(renderer, "browser_splats", None)
    return None if fn is None else fn()


def num_primitives(renderer) -> Optional[int]:
    c = centers(renderer)
    return None if c is None else int(c.shape[0])


def stats_line(renderer) -> str:
    stats: dict[str, Any] = renderer.stats()
    return " · ".join(f"**{k}** {v:,}" if isinstance(v, int) else f"**{k}** {v}" for k, v in stats.items())


__all__ = ["CropBox", "browser_splats", "can_crop", "centers", "crop_renderer", "num_primitives",
           "stats_line"]
