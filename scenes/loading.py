"""Disk formats -> one typed `Scene` (the `splatlab.scenes` package re-exports these names lazily).

`FORMATS` is an explicit, ordered registry: each module has `sniff(path) -> bool` and
`load(path, *, downscale=1, test_every=8, background=None) -> Scene` (COLMAP and LLFF also
take `images=`, COLMAP `colmap_path=`). `load_scene` asks them in order and loads with the
first that recognises the path and can read its files, falling back to the next. Adding a format means
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

images_format = images  # `load_scene`'s `images=` argument shadows the module's name there

FORMATS = [demo, colmap, blender, nerfstudio, llff, images]
BY_NAME = {f.NAME: f for f in FORMATS}
# Formats that take an images folder (`images=`) and a COLMAP model folder (`colmap_path=`).
TAKES_IMAGES = (colmap, llff)


def matching_formats(path: Path | str | None) -> list:
    """Every format module whose `sniff` recognises `path`, in registry order."""
    return [fmt for fmt in FORMATS if fmt.sniff(path)]


def find_format(path: Path | str | None):
    """The first format module whose `sniff` recognises `path`, or a SceneError."""
    found = matching_formats(path)
    if found:
        return found[0]
    p = Path(str(path))
    if not p.exists():
        raise SceneError(p, "no such file or folder (or pass `demo` for the built-in scene)")
    raise SceneError(p, "not a scene in any known format (" + ", ".join(f.NAME for f in FORMATS) + ")")


def read_scene(
    path: Path | str | None = None,
    *,
    downscale: int = 1,
    test_every: int = 8,
    background: Optional[tuple[float, float, float]] = None,
    format: Optional[str] = None,
    images: Optional[Path | str] = None,
    colmap_path: Optional[Path | str] = None,
) -> Scene:
    """Load a scene from disk (`None` or "demo": the built-in procedural scene). Images
    load lazily; warnings are in `Scene.warnings` (`load_scene` also prints them).

    `format` forces a format by name (see `FORMATS`); otherwise every format that
    recognises the folder is tried in order, and when one fails on its files (LLFF's `fern`
    ships a partial COLMAP model) the next one loads, with a warning saying so; if none
    loads, the error names what each said. `images` (an images folder) applies to COLMAP
    and LLFF, `colmap_path` (the sparse model folder; implies format colmap) to COLMAP.
    Relative paths are taken inside the scene folder when they exist there."""
    images = None if images is None else Path(images)
    colmap_path = None if colmap_path is None else Path(colmap_path)
    if format is None and colmap_path is not None:
        format = colmap.NAME
    if format is not None:
        if format not in BY_NAME:
            raise SceneError(path, f"unknown format {format!r} (choose one of: {', '.join(BY_NAME)})")
        candidates = [BY_NAME[format]]
        if path is None and format != demo.NAME:
            raise SceneError(None, f"format {format} needs a scene folder")
        if path is not None and not Path(str(path)).is_dir() and format != demo.NAME and format != nerfstudio.NAME:
            raise SceneError(path, "no such folder")
    else:
        candidates = matching_formats(path)
        if not candidates:
            find_format(path)  # raises the error that says why
        if len(candidates) > 1:  # a bare photo folder is only a hint, never a fallback
            candidates = [f for f in candidates if f is not images_format]
    if images is not None and not all(f in TAKES_IMAGES for f in candidates):
        raise SceneError(path, f"--images applies to COLMAP and LLFF scenes, not {candidates[0].NAME}")

    failed: list[tuple[object, SceneError]] = []
    for fmt in candidates:
        extra = {} if fmt not in TAKES_IMAGES else {"images": images}
        if fmt is colmap:
            extra["colmap_path"] = colmap_path
        try:
            scene = fmt.load(path, downscale=downscale, test_every=test_every, background=background, **extra)
        except SceneError as e:
            if len(candidates) == 1:
                raise
            failed.append((fmt, e))
            continue
        given = {"format": format, "images": images, "colmap_path": colmap_path}
        if any(v is not None for v in given.values()):  # so a run can reload its scene the same way
            scene.meta["load_args"] = {k: None if v is None else str(v) for k, v in given.items()}
        if failed:
            scene.warnings.insert(0, f"{path}: loaded as {fmt.NAME} after "
                                  + "; ".join(f"{f.NAME} failed ({e})" for f, e in failed))
        return scene
    raise SceneError(path, "no format could load it: " + "; ".join(f"as {f.NAME}: {e}" for f, e in failed))


def load_scene(
    path: Path | str | None = None,
    *,
    downscale: int = 1,
    test_every: int = 8,
    background: Optional[tuple[float, float, float]] = None,
    format: Optional[str] = None,
    images: Optional[Path | str] = None,
    colmap_path: Optional[Path | str] = None,
) -> Scene:
    """`read_scene`, then print the scene's warnings once."""
    scene = read_scene(path, downscale=downscale, test_every=test_every, background=background, format=format,
                       images=images, colmap_path=colmap_path)
    for w in scene.warnings:
        warn(w)
    return scene


__all__ = ["BY_NAME", "FORMATS", "TAKES_IMAGES", "Cameras", "ImageSet", "Mesh", "Normalization", "Scene", "SceneError", "find_format",
           "load_scene", "matching_formats", "read_scene"]
