"""Disk formats -> one typed `Scene`: the registry and `load_scene` live in `loading.py`.

Names load on first use (PEP 562), so `from splatlab.scenes.errors import SceneError` (the
CLI) and the torch-free modules import no torch; `from splatlab.scenes import load_scene,
SceneError, ...` and `splatlab.scenes.colmap` work as before.
"""

import importlib

_FROM_LOADING = {"BY_NAME", "FORMATS", "TAKES_IMAGES", "find_format", "load_scene", "matching_formats",
                 "read_scene", "images_format"}
_FROM_TYPES = {"Cameras", "ImageSet", "Mesh", "Normalization", "Scene"}
_SUBMODULES = {"blender", "colmap", "common", "demo", "errors", "files", "geometry", "images", "llff",
               "loading", "nerfstudio", "types", "capture"}


def __getattr__(name: str):
    if name == "SceneError":
        module = "errors"
    elif name in _FROM_LOADING:
        module = "loading"
    elif name in _FROM_TYPES:
        module = "types"
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
        globals()[name] = value
        return value
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = ["FORMATS", "Cameras", "ImageSet", "Mesh", "Normalization", "Scene", "SceneError", "find_format",
           "load_scene", "matching_formats", "read_scene"]
