"""3D Gaussian splatting: the model, its config and presets, its PLY file IO, and its
renderer (the contract of renderers/base.py)."""

from .config import SplatConfig
from .model import SplatModel, num_sh_bases, rgb_to_sh, sh_to_rgb
from .renderer import SplatRenderer

__all__ = ["SplatConfig", "SplatModel", "SplatRenderer", "num_sh_bases", "rgb_to_sh", "sh_to_rgb"]
