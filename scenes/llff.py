"""LLFF: `poses_bounds.npy` (N x 17: a 3x5 [R | t | (h, w, focal)] per image, then near/far
bounds) and `images/` whose files, sorted by name, match the rows in order.

LLFF's camera-to-world columns are [down, right, back]; OpenCV's are [right, down,
forward], i.e. (col1, col0, -col2). The principal point is the image centre. No points.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import MAX_SIDE, Frame, Intrinsics, build_scene, list_images
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


MAX_ROWS = 100_000


def read_poses_bounds(pb_path: Path) -> np.ndarray:
    """N x 17 float64 from a .npy file: no pickles, memory bounded by the file's size."""
    try:
        pb = np.load(pb_path, mmap_mode="r", allow_pickle=False)
    except Exception as e:  # numpy raises several types for a bad header or a short file
        raise SceneError(pb_path, f"cannot read as a .npy array ({type(e).__name__}: {e})") from None
    if not isinstance(pb, np.ndarray):  # an .npz archive
        raise SceneError(pb_path, "is an .npz archive, expected a single .npy array")
    if pb.dtype.kind not in "fiu":
        raise SceneError(pb_path, f"holds {pb.dtype} values, expected real numbers")
    if pb.ndim != 2 or pb.shape[1] != 17 or not 0 < pb.shape[0] <= MAX_ROWS:
        raise SceneError(pb_path, f"expected an N x 17 array (N in 1..{MAX_ROWS}), got shape {pb.shape}")
    return np.asarray(pb, dtype=np.float64)


def load(path, *, downscale: int = 1, test_every: int = 8, background=None, images: Path | None = None) -> Scene:
    root = Path(path)
    pb_path = root / "poses_bounds.npy"
    pb = read_poses_bounds(pb_path)
    image_dir = root / "images" if images is None else (root / images if (root / images).is_dir() else Path(images))
    if images is not None and not image_dir.is_dir():
        raise SceneError(image_dir, "--images: no such folder")
    files = list_images(image_dir)
    if len(files) != len(pb):
        raise SceneError(image_dir, f"{len(files)} images but {pb_path.name} has {len(pb)} poses")
    frames = []
    for img, row in zip(files, pb):
        m = row[:15].reshape(3, 5)
        h, w, f = m[:, 4]
        if not np.isfinite(row[:15]).all():
            raise SceneError(img, f"camera pose is not finite (NaN/Inf) in {pb_path}")
        if not (0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE):
            raise SceneError(pb_path, f"image size {w:g}x{h:g} for {img.name} is out of range (1..{MAX_SIDE})")
        intr = Intrinsics("PINHOLE", int(round(w)), int(round(h)), float(f), float(f), w / 2.0, h / 2.0)
        frames.append(Frame(img, llff_to_opencv(m), intr, name=img.name))

    def downscaled(p: Path, n: int) -> Path:
        return image_dir.parent / f"{image_dir.name}_{n}" / p.name

    return build_scene(
        fmt=NAME, root=root, frames=frames, downscale=downscale, test_every=test_every, background=background,
        downscaled=downscaled, factors=[2, 4, 8], source=pb_path,
    )
