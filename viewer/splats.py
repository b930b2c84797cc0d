"""The viewer's optional renderer capabilities (renderers/base.py), reached with getattr
so the viewer never imports a method: the crop box (a `scenes.geometry.Box`), the primitives' centres, and the
browser-side splat arrays. A renderer without one simply does not offer the feature."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from splatlab.scenes.geometry import Box


def can_crop(renderer) -> bool:
    return hasattr(renderer, "cropped")


def crop_renderer(renderer, crop: Optional[Box]):
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


__all__ = ["browser_splats", "can_crop", "centers", "crop_renderer", "num_primitives",
           "stats_line"]
