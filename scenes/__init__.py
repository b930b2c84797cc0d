"""Disk formats -> one typed `Scene`.

`FORMATS` is an explicit, ordered registry: each module has `sniff(path) -> bool` and
`load(path, *, downscale=1, test_every=8, background=None) -> Scene`. `load_scene` asks
them in order and loads with the first that recognises the path. Adding a format means
one module and one line here. Order matters where a folder fits several formats: a
COLMAP model wins over LLFF's poses_bounds.npy (both are in `beer/`), Blender's
transforms_train.json over a plain transforms.json, and a bare image folder comes last.
Shared conventions (normalization, split, downscale, cache): see `common.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from . import blender, colmap, demo, images, llff, nerfstudio
from .common import warn
from .types import Cameras, ImageSet, Mesh, Normalization, Scene, SceneError

FORMATS = [demo, colmap, blender, nerfstudio, llff, images]


def find_format(path: Path | str | None):
    """The first format module whose `sniff` recognises `path`, or a SceneError."""
    for fmt in FORMATS:
        if fmt.sniff(path):
            return fmt
    p = Path(str(path))
    if not p.exists():
        raise SceneError(p, "no such file or folder (or pass `demo` for the built-in scene)")
    raise SceneError(p, "not a scene in any known format (" + ", ".join(f.NAME for f in FORMATS) + ")")


def load_scene(
    path: Path | str | None = None,
    *,
    downscale: int = 1,
    test_every: int = 8,
    background: Optional[tuple[float, float, float]] = None,
) -> Scene:
    """Load a scene from disk (`None` or "demo": the built-in procedural scene). Images
    load lazily; the scene's warnings are printed once, here."""
    scene = find_format(path).load(path, downscale=downscale, test_every=test_every, background=background)
    for w in scene.warnings:
        warn(w)
    return scene


__all__ = ["FORMATS", "Cameras", "ImageSet", "Mesh", "Normalization", "Scene", "SceneError", "find_format", "load_scene"]
