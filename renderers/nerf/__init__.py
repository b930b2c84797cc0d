"""NeRF: a nerfacto-class radiance field on a hash grid with a proposal sampler."""

from .config import PRESETS, NerfConfig
from .model import NerfRenderer

__all__ = ["NerfConfig", "NerfRenderer", "PRESETS"]
