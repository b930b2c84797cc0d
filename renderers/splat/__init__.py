"""3D Gaussian splatting: the model, its config and presets, its PLY file IO, and its
renderer (the contract of renderers/base.py).

Names load on first use (PEP 562), so reading `splat.config` (`train --help`) imports no torch.
"""

import importlib

# public name -> the submodule that defines it
_LAZY = {"SplatConfig": "config", "SplatModel": "model", "num_sh_bases": "model", "rgb_to_sh": "model",
         "sh_to_rgb": "model", "SplatRenderer": "renderer"}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["SplatConfig", "SplatModel", "SplatRenderer", "num_sh_bases", "rgb_to_sh", "sh_to_rgb"]
