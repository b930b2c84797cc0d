"""LLFF: `poses_bounds.npy` (N x 17: a 3x5 [R | t | (h, w, focal)] per image, then near/far
bounds) and `images/` whose files, sorted by name, match the rows in order.

LLFF's camera-to-world columns are [down, right, back]; OpenCV's are [right, down,
forward], i.e. (col1, col0, -col2). The principal point is the image centre. No points.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import Frame, Intrinsics, build_scene, list_images
from .types import Scene, SceneError

NAME = "llff"


def sniff(path) -> bool:
    return path is not None and Path(path).is_dir() and (Path(path) / "poses_bounds.npy").is_file()


def llff_to_opencv(pose: np.ndarray) -> np.ndarray:
    """3x5 LLFF matrix -> 4x4 OpenCV camera-to-world."""
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2] = pose[:, 1], pose[:, 0], -pose[:, 2]
    c2w[:3, 3] = pose[:, 3]
    return c2w


def load(path, *, downscale: int = 1, test_every: int = 8, background=None) -> Scene:
    root = Path(path)
    pb_path = root / "poses_bounds.npy"
    try:
        pb = np.load(pb_path)
    except Exception as e:
        raise SceneError(pb_path, f"cannot read ({type(e).__name__}: {e})") from None
    if pb.ndim != 2 or pb.shape[1] != 17:
        raise SceneError(pb_path, f"expected an N x 17 array, got shape {pb.shape}")
    images = list_images(root / "images")
    if len(images) != len(pb):
        raise SceneError(root / "images", f"{len(images)} images but {pb_path.name} has {len(pb)} poses")
    frames = []
    for img, row in zip(images, pb):
        m = row[:15].reshape(3, 5)
        h, w, f = m[:, 4]
        if not np.isfinite([h, w, f]).all():
            raise SceneError(img, f"camera pose is not finite (NaN/Inf) in {pb_path}")
        intr = Intrinsics("PINHOLE", int(round(w)), int(round(h)), float(f), float(f), w / 2.0, h / 2.0)
        frames.append(Frame(img, llff_to_opencv(m), intr, name=img.name))

    def downscaled(p: Path, n: int) -> Path:
        return root / f"images_{n}" / p.name

    return build_scene(
        fmt=NAME, root=root, frames=frames, downscale=downscale, test_every=test_every, background=background,
        downscaled=downscaled, factors=[2, 4, 8], source=pb_path,
    )
