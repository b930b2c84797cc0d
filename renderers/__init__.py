"""Scene representations and how to render them (no training loop here).

RENDERERS is the explicit registry: method name -> model class.
"""

from __future__ import annotations

from .nerf import NerfRenderer
from .splat import SplatModel

RENDERERS: dict[str, type] = {"splat": SplatModel, "nerf": NerfRenderer}

__all__ = ["RENDERERS", "NerfRenderer", "SplatModel"]
