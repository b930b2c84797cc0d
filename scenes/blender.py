"""Blender / NeRF-synthetic: `transforms_train.json`, `transforms_test.json` (and an
optional `transforms_val.json`, not used) with `camera_angle_x` and OpenGL
camera-to-world `transform_matrix`; RGBA PNGs named by `file_path` (extension optional).

The split is the dataset's own (train / test). Images are composited on `background`,
white by default (the NeRF papers' convention), which `Scene.background` reports.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import Frame, build_scene, image_size
from .nerfstudio import _is_file, checked_path, frame_intrinsics, frame_pose, image_file, read_json
from .types import Scene, SceneError

NAME = "blender"
WHITE = (1.0, 1.0, 1.0)


def sniff(path) -> bool:
    return path is not None and Path(path).is_dir() and (Path(path) / "transforms_train.json").is_file()


def _frames(tp: Path, split: str) -> list[Frame]:
    meta = read_json(tp)
    raw = meta.get("frames")
    if not isinstance(raw, list) or not raw:
        raise SceneError(tp, "no frames listed (`frames` is missing or empty)")
    out = []
    size = None  # every frame of a split shares one size in this format: read one header
    for k, fr in enumerate(raw):
        if not isinstance(fr, dict) or "file_path" not in fr:
            raise SceneError(tp, f"frame {k} has no file_path")
        fp = checked_path(fr["file_path"], tp, f"frame {k}'s file_path")
        img = image_file(tp.parent, fp)
        if size is None and "w" not in meta and _is_file(img):
            size = image_size(img)
        name = f"{split}/{Path(fp).name}"
        out.append(Frame(img, frame_pose(fr, tp, name), frame_intrinsics(meta, fr, img, tp, size=size), name=name))
    return out


OBJECT_HALF = 1.3


def load(path, *, downscale: int = 1, test_every: int = 8, background=None) -> Scene:
    root = Path(path)
    train = _frames(root / "transforms_train.json", "train")
    test_json = root / "transforms_test.json"
    test = _frames(test_json, "test") if test_json.is_file() else []
    warnings = [] if test else [f"{test_json}: missing; no test split"]
    bg = tuple(background) if background is not None else WHITE
    scene = build_scene(
        fmt=NAME, root=root, frames=train + test, downscale=downscale, test_every=test_every,
        test_names={f.name for f in test}, background=bg, warnings=warnings,
        source=root / "transforms_train.json",
    )
    # NeRF-synthetic objects sit inside [-1.3, 1.3]^3 (the random-init cube of 3DGS); the
    # default box, 3x the camera radius, would put nearly every initial Gaussian in empty space.
    corners = scene.normalization.apply_points(np.array([[-OBJECT_HALF] * 3, [OBJECT_HALF] * 3]))
    scene.bounds = (corners.min(0), corners.max(0))
    return scene
