"""nerfstudio / instant-ngp: a `transforms.json` beside the images.

Intrinsics shared at the top level or per frame: `fl_x fl_y cx cy w h`, or
`camera_angle_x` (and `camera_angle_y`); w/h default to the image header, cx/cy to the
centre. Distortion `k1 k2 k3 k4 p1 p2` (perspective only) is undistorted once and cached.
`transform_matrix` is camera-to-world with OpenGL axes (x right, y up, z back); we flip to
OpenCV. `applied_transform` (nerfstudio: original data frame -> saved frame) becomes the
rotation of `Scene.normalization`, so exports map back to the original frame;
`ply_file_path` (in the saved frame) gives the initial points. Own split from
`train_filenames`/`test_filenames` when present. Frames whose image file is missing are
skipped with one warning.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .common import Frame, Intrinsics, build_scene, image_size
from .geometry import OPENGL_TO_OPENCV, fov_to_focal
from .types import Scene, SceneError

NAME = "nerfstudio"
DIST_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")


def transforms_path(path) -> Path | None:
    p = Path(path)
    if p.is_file() and p.suffix == ".json":
        return p
    if p.is_dir() and (p / "transforms.json").is_file():
        return p / "transforms.json"
    return None


def sniff(path) -> bool:
    return path is not None and transforms_path(path) is not None


def read_json(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SceneError(path, f"invalid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SceneError(path, f"cannot read ({e})") from None
    if not isinstance(meta, dict):
        raise SceneError(path, "expected a JSON object with a `frames` list")
    return meta


def image_file(base: Path, file_path: str) -> Path:
    """The image a `file_path` names; Blender's omit the extension (`./train/r_0`)."""
    p = (base / file_path).resolve() if not Path(file_path).is_absolute() else Path(file_path)
    if not p.suffix or (not p.exists() and p.suffix.lower() not in (".png", ".jpg", ".jpeg")):
        for ext in (".png", ".jpg", ".jpeg", ".PNG", ".JPG"):
            if p.with_name(p.name + ext).exists():
                return p.with_name(p.name + ext)
    return p


def frame_intrinsics(meta: dict, frame: dict, image: Path, where: Path, size=None) -> Intrinsics:
    """Per-frame keys override the shared ones. `size` (w, h): a header already read."""
    def get(k, default=None):
        return frame.get(k, meta.get(k, default))

    try:
        w, h = get("w"), get("h")
        if w is None or h is None:
            if size is None:
                size = image_size(image) if image.is_file() else None
            if size is None:
                raise SceneError(where, f"no image size (w, h) for {image.name} and its file is missing")
            w, h = size
        w, h = int(round(float(w))), int(round(float(h)))
        fx, fy = get("fl_x"), get("fl_y")
        if fx is None:
            ax = get("camera_angle_x")
            if ax is None:
                raise SceneError(where, "no focal length: give fl_x/fl_y or camera_angle_x")
            fx = fov_to_focal(float(ax), w)
        if fy is None:
            ay = get("camera_angle_y")
            fy = fov_to_focal(float(ay), h) if ay is not None and get("fl_x") is None else fx
        cx, cy = float(get("cx", w / 2.0)), float(get("cy", h / 2.0))
        dist = tuple(float(get(k, 0.0)) for k in DIST_KEYS)
    except (TypeError, ValueError) as e:
        raise SceneError(where, f"bad intrinsics for {image.name} ({e})") from None
    model = str(get("camera_model", "OPENCV" if any(dist) else "PINHOLE"))
    if model not in ("OPENCV", "PINHOLE", "PERSPECTIVE"):
        raise SceneError(where, f"camera_model {model} is not supported (perspective OPENCV/PINHOLE only)")
    if dist[3] != 0:
        raise SceneError(where, "k4 distortion is not supported for perspective cameras")
    return Intrinsics(model, w, h, float(fx), float(fy), cx, cy, dist)


def frame_pose(frame: dict, where: Path, name: str) -> np.ndarray:
    try:
        m = np.asarray(frame["transform_matrix"], dtype=np.float64)
    except KeyError:
        raise SceneError(where, f"frame {name} has no transform_matrix") from None
    except (TypeError, ValueError):
        raise SceneError(where, f"frame {name}: transform_matrix is not a numeric matrix") from None
    if m.shape == (3, 4):
        m = np.vstack([m, [0, 0, 0, 1]])
    if m.shape != (4, 4):
        raise SceneError(where, f"frame {name}: transform_matrix has shape {m.shape}, expected 4x4")
    return m @ OPENGL_TO_OPENCV


def _read_ply_points(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from plyfile import PlyData

    try:
        v = PlyData.read(str(path))["vertex"]
        xyz = np.stack([v["x"], v["y"], v["z"]], -1).astype(np.float64)
        names = v.data.dtype.names
        rgb = (np.stack([v["red"], v["green"], v["blue"]], -1).astype(np.uint8)
               if {"red", "green", "blue"} <= set(names) else np.full((len(xyz), 3), 128, np.uint8))
    except Exception as e:
        raise SceneError(path, f"cannot read the point cloud ({type(e).__name__}: {e})") from None
    return xyz, rgb


def load(path, *, downscale: int = 1, test_every: int = 8, background=None) -> Scene:
    tp = transforms_path(path)
    if tp is None:
        raise SceneError(path, "no transforms.json")
    meta = read_json(tp)
    base = tp.parent
    raw = meta.get("frames")
    if not isinstance(raw, list) or not raw:
        raise SceneError(tp, "no frames listed (`frames` is missing or empty)")

    frames, missing = [], []
    for k, fr in enumerate(raw):
        if not isinstance(fr, dict) or "file_path" not in fr:
            raise SceneError(tp, f"frame {k} has no file_path")
        img = image_file(base, str(fr["file_path"]))
        if not (img.is_file() or (downscale > 1 and _downscaled(img, downscale).is_file())):
            missing.append(img)
            continue
        name = str(Path(fr["file_path"]).as_posix()).removeprefix("./")
        frames.append(Frame(img, frame_pose(fr, tp, name), frame_intrinsics(meta, fr, img, tp), name=name))

    warnings = []
    if missing:
        warnings.append(f"{tp}: skipped {len(missing)} of {len(raw)} frames whose image file is missing "
                        f"(e.g. {missing[0].relative_to(base) if missing[0].is_relative_to(base) else missing[0]})")
    if not frames:
        raise SceneError(tp, f"none of the {len(raw)} frames has an image file (first: {missing[0]})")
    frames.sort(key=lambda f: f.name)

    test_names = None
    if isinstance(meta.get("test_filenames"), list):
        test_names = {str(n).removeprefix("./") for n in meta["test_filenames"]}

    rotation = offset = None
    if "applied_transform" in meta:
        A = np.asarray(meta["applied_transform"], dtype=np.float64)
        if A.shape not in ((3, 4), (4, 4)) or not np.isfinite(A).all():
            raise SceneError(tp, "applied_transform must be a finite 3x4 matrix")
        R, t = A[:3, :3], A[:3, 3]
        if np.allclose(R @ R.T, np.eye(3), atol=1e-6) and np.linalg.det(R) > 0:
            # The poses are already in the saved frame: express them back in the original one,
            # and let the normalization (rotation R) bring them forward again.
            inv = np.eye(4)
            inv[:3, :3], inv[:3, 3] = R.T, -R.T @ t
            for f in frames:
                f.c2w = inv @ f.c2w
            rotation, offset = R, t
        else:
            warnings.append(f"{tp}: applied_transform is not a rotation; ignored (exports stay in the saved frame)")

    points = colors = None
    if meta.get("ply_file_path"):
        ply = base / str(meta["ply_file_path"])
        if ply.is_file():
            points, colors = _read_ply_points(ply)
            if rotation is not None:  # saved frame -> original frame
                points = (points - offset) @ rotation
        else:
            warnings.append(f"{ply}: ply_file_path names a missing file; no initial points")

    return build_scene(
        fmt=NAME, root=base, frames=frames, downscale=downscale, test_every=test_every, test_names=test_names,
        background=background, points=points, point_colors=colors, warnings=warnings,
        downscaled=_downscaled, factors=[2, 4, 8], rotation=rotation, offset=offset, source=tp,
    )


def _downscaled(p: Path, n: int) -> Path:
    """nerfstudio's convention: `images/x.jpg` -> `images_N/x.jpg`."""
    return p.parent.parent / f"{p.parent.name}_{n}" / p.name
