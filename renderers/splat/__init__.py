"""3D Gaussian splatting: the model, its PLY file IO, and how to render it."""

from .model import SplatModel, num_sh_bases, rgb_to_sh, sh_to_rgb

__all__ = ["SplatModel", "num_sh_bases", "rgb_to_sh", "sh_to_rgb"]
