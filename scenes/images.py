"""A bare folder of photos: no camera poses, so it cannot be loaded as a Scene yet.
`sniff` recognises it so errors and `splatlab info` can say what to do:
run `splatlab process PATH` (structure-from-motion) first."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .common import image_size, list_images
from .types import Scene, SceneError

NAME = "images"


def folder(path) -> Path | None:
    """The folder holding the photos: PATH itself or PATH/images."""
    p = Path(path)
    for d in (p, p / "images"):
        try:
            if list_images(d):
                return d
        except SceneError:  # unreadable: not a photo folder we can use
            continue
    return None


def hint(path) -> str:
    return f"a folder of photos with no camera poses: run `splatlab process {path}` first"


def sniff(path) -> bool:
    return path is not None and Path(path).is_dir() and folder(path) is not None


def describe(path) -> dict:
    """What `splatlab info` shows for a bare folder (image headers only)."""
    files = list_images(folder(path))
    sizes = Counter(image_size(f) for f in files)
    return {
        "format": NAME,
        "path": str(path),
        "num_images": len(files),
        "num_train": 0,
        "num_test": 0,
        "image_size": list(sizes.most_common(1)[0][0]),
        "image_sizes": {f"{w}x{h}": n for (w, h), n in sizes.most_common()},
        "camera_model": None,
        "num_points": 0,
        "warnings": [],
        "hint": f"run `splatlab process {path}` to estimate camera poses",
    }


def load(path, *, downscale: int = 1, test_every: int = 8, background=None) -> Scene:
    raise SceneError(path, hint(path))
