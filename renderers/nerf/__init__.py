"""NeRF: a nerfacto-class radiance field on a hash grid with a proposal sampler.

Names load on first use (PEP 562), so reading `nerf.config` (`train --help`) imports no torch.
"""

import importlib

_LAZY = {"NerfConfig": "config", "PRESETS": "config", "NerfRenderer": "model"}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["NerfConfig", "NerfRenderer", "PRESETS"]
