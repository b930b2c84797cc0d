"""Scene representations and how to render them (no training loop here).

RENDERERS is the explicit registry: method name -> `Renderer` subclass (renderers/base.py).
Every command dispatches through it; a run saves its method's name and reads it back.
"""

from __future__ import annotations

from .base import Renderer
from .splat import SplatRenderer

RENDERERS: dict[str, type[Renderer]] = {"splat": SplatRenderer}


class UnknownMethod(ValueError):
    """A method name that is not in RENDERERS (the message lists the choices)."""


def get_renderer(name: str) -> type[Renderer]:
    try:
        return RENDERERS[name]
    except KeyError:
        raise UnknownMethod(f"unknown method {name!r}; choose one of: {', '.join(RENDERERS)}") from None


__all__ = ["RENDERERS", "Renderer", "SplatRenderer", "UnknownMethod", "get_renderer"]
