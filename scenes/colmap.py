"""COLMAP: a sparse model (binary or text) in `sparse/0/` or `sparse/`, images in
`images/` (or `images_N/` copies downscaled by N). Read with pycolmap.

Accepted camera models: SIMPLE_PINHOLE, PINHOLE (used as is), SIMPLE_RADIAL, RADIAL,
OPENCV (undistorted once, cached). Registered images only, sorted by name; points3D and
their colours become `Scene.points`. COLMAP's world-to-camera poses already use OpenCV axes.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .common import Frame, Intrinsics, build_scene
from .types import Scene, SceneError

NAME = "colmap"
MODEL_FILES = ("cameras.bin", "cameras.txt")
SUPPORTED = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")


def model_dir(path: Path) -> Path | None:
    for d in (path / "sparse" / "0", path / "sparse"):
        if any((d / f).is_file() for f in MODEL_FILES):
            return d
    return None


def sniff(path) -> bool:
    return path is not None and Path(path).is_dir() and model_dir(Path(path)) is not None


def intrinsics(model: str, width: int, height: int, p: list[float], where: Path) -> Intrinsics:
    """COLMAP params -> canonical intrinsics (k1 k2 k3 k4 p1 p2)."""
    z = 0.0
    if model == "SIMPLE_PINHOLE":
        f, cx, cy = p
        return Intrinsics(model, width, height, f, f, cx, cy)
    if model == "PINHOLE":
        fx, fy, cx, cy = p
        return Intrinsics(model, width, height, fx, fy, cx, cy)
    if model == "SIMPLE_RADIAL":
        f, cx, cy, k = p
        return Intrinsics(model, width, height, f, f, cx, cy, (k, z, z, z, z, z))
    if model == "RADIAL":
        f, cx, cy, k1, k2 = p
        return Intrinsics(model, width, height, f, f, cx, cy, (k1, k2, z, z, z, z))
    if model == "OPENCV":
        fx, fy, cx, cy, k1, k2, p1, p2 = p
        return Intrinsics(model, width, height, fx, fy, cx, cy, (k1, k2, z, z, p1, p2))
    raise SceneError(where, f"camera model {model} is not supported (use one of {', '.join(SUPPORTED)}, "
                            "or undistort with `colmap image_undistorter` first)")


def read_model(d: Path):
    import pycolmap

    try:
        return pycolmap.Reconstruction(str(d))
    except Exception as e:
        raise SceneError(d, f"cannot read the COLMAP model ({type(e).__name__}: {e})") from None


def _factors(root: Path) -> list[int]:
    out = []
    for p in root.glob("images_*"):
        m = re.fullmatch(r"images_(\d+)", p.name)
        if m and p.is_dir():
            out.append(int(m.group(1)))
    return sorted(out)


def load(path, *, downscale: int = 1, test_every: int = 8, background=None) -> Scene:
    root = Path(path)
    d = model_dir(root)
    if d is None:
        raise SceneError(root, "no COLMAP model (sparse/0/cameras.bin or .txt)")
    rec = read_model(d)
    images = sorted((im for im in rec.images.values() if im.has_pose), key=lambda im: im.name)
    if not images:
        raise SceneError(d, "the COLMAP model has no registered images")
    image_root = root / "images"
    frames = []
    for im in images:
        cam = rec.cameras[im.camera_id]
        intr = intrinsics(cam.model.name, int(cam.width), int(cam.height), [float(v) for v in cam.params], d)
        w2c = np.eye(4)
        w2c[:3, :4] = im.cam_from_world().matrix()
        frames.append(Frame(image_root / im.name, np.linalg.inv(w2c), intr, name=im.name))

    pts = rec.points3D
    xyz = np.array([p.xyz for p in pts.values()], dtype=np.float64).reshape(-1, 3)
    rgb = np.array([p.color for p in pts.values()], dtype=np.uint8).reshape(-1, 3)

    def downscaled(p: Path, n: int) -> Path:
        return root / f"images_{n}" / p.relative_to(image_root)

    return build_scene(
        fmt=NAME, root=root, frames=frames, downscale=downscale, test_every=test_every,
        background=background, points=xyz, point_colors=rgb,
        downscaled=downscaled, factors=_factors(root), source=d,
    )
