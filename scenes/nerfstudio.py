"""nerfstudio / instant-ngp: a `transforms.json` beside the images.

Intrinsics shared at the top level or per frame: `fl_x fl_y cx cy w h`, or
`camera_angle_x` (and `camera_angle_y`); w/h default to the image header, cx/cy to the
centre. `camera_model` PINHOLE/OPENCV with distortion `k1 k2 k3 p1 p2`, or OPENCV_FISHEYE
with `k1 k2 k3 k4`: undistorted once to pinhole and cached (one rasterizer path; the
fisheye's rim beyond what a pinhole can show is cropped). `transform_matrix` is
camera-to-world with OpenGL axes (x right, y up, z back); we flip to OpenCV.
`applied_transform` (nerfstudio: original data frame -> saved frame) becomes the rotation of
`Scene.normalization`, so exports map back to the original frame; `ply_file_path` (in the
saved frame) gives the initial points. Split: `test_filenames` (else `val_filenames`) is the
test split and `train_filenames` the training one, when present. Per frame, `mask_path`
becomes `ImageSet.mask` (checked against the image's size) and `depth_file_path` is recorded
in `Scene.meta["depth_files"]` (not loaded). Frames whose image file is missing are skipped
with one warning; frames whose file lies outside the dataset folder load, with one warning.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Optional

import numpy as np

from .common import MAX_SIDE, Frame, Intrinsics, build_scene, image_size
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


MAX_JSON_BYTES = 512 << 20
MAX_PATH = 4096


def read_json(path: Path) -> dict:
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise SceneError(path, f"is larger than {MAX_JSON_BYTES >> 20} MB; not a camera file")
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except json.JSONDecodeError as e:
        raise SceneError(path, f"invalid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except RecursionError:
        raise SceneError(path, "invalid JSON (nested too deeply)") from None
    except UnicodeDecodeError as e:
        raise SceneError(path, f"cannot read (not UTF-8 text: {e.reason} at byte {e.start})") from None
    except OSError as e:
        raise SceneError(path, f"cannot read ({e.strerror})") from None
    if not isinstance(meta, dict):
        raise SceneError(path, "expected a JSON object with a `frames` list")
    return meta


def checked_path(value, where: Path, what: str) -> str:
    """A path string from a JSON file, or a SceneError saying what is wrong with it."""
    if not isinstance(value, str) or not value:
        raise SceneError(where, f"{what} is not a non-empty string")
    if "\0" in value:
        raise SceneError(where, f"{what} contains a NUL byte")
    if len(value) > MAX_PATH or any(len(part.encode()) > 255 for part in value.split("/")):
        raise SceneError(where, f"{what} is too long ({len(value)} characters: {value[:40]}...)")
    return value


def image_file(base: Path, file_path: str) -> Path:
    """The image a `file_path` names; Blender's omit the extension (`./train/r_0`)."""
    p = Path(os.path.normpath(base / file_path))
    if not p.name:  # the file system's root
        return p
    try:
        if not p.suffix or (not p.exists() and p.suffix.lower() not in (".png", ".jpg", ".jpeg")):
            for ext in (".png", ".jpg", ".jpeg", ".PNG", ".JPG"):
                if p.with_name(p.name + ext).exists():
                    return p.with_name(p.name + ext)
    except OSError:  # a symlink loop or an over-long name: reported as missing
        pass
    return p


def _is_file(p: Path) -> bool:
    try:
        return p.is_file()
    except OSError:
        return False


def _inside(p: Path, base: Path) -> bool:
    return os.path.normpath(p).startswith(os.path.normpath(base) + os.sep)


def frame_intrinsics(meta: dict, frame: dict, image: Path, where: Path, size=None) -> Intrinsics:
    """Per-frame keys override the shared ones. `size` (w, h): a header already read."""
    def get(k, default=None):
        return frame.get(k, meta.get(k, default))

    def num(k, default=None) -> float:
        v = get(k, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise SceneError(where, f"{k} is {json.dumps(v)[:40]} for {image.name}; expected a number")
        if not math.isfinite(v):
            raise SceneError(where, f"{k} is {v} for {image.name}; expected a finite number")
        return float(v)

    w, h = get("w"), get("h")
    if w is None or h is None:
        if size is None:
            size = image_size(image) if _is_file(image) else None
        if size is None:
            raise SceneError(where, f"no image size (w, h) for {image.name} and its file is missing")
        w, h = size
    else:
        w, h = num("w"), num("h")
        if not (0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE):
            raise SceneError(where, f"image size w={w:g} h={h:g} for {image.name} is out of range (1..{MAX_SIDE})")
        w, h = int(round(w)), int(round(h))
    if get("fl_x") is not None:
        fx = num("fl_x")
        fy = num("fl_y") if get("fl_y") is not None else fx
    else:
        if get("camera_angle_x") is None:
            raise SceneError(where, "no focal length: give fl_x/fl_y or camera_angle_x")
        angles = {}
        for k, side in (("camera_angle_x", w), ("camera_angle_y", h)):
            if get(k) is not None:
                a = num(k)
                if not 0 < a < math.pi:
                    raise SceneError(where, f"{k} is {a:g}; expected a field of view in (0, pi) radians")
                angles[k] = fov_to_focal(a, side)
        fx = angles["camera_angle_x"]
        fy = angles.get("camera_angle_y", fx)
    cx, cy = num("cx", w / 2.0), num("cy", h / 2.0)
    dist = tuple(num(k, 0.0) for k in DIST_KEYS)
    model = get("camera_model", "OPENCV" if any(dist) else "PINHOLE")
    if model not in ("OPENCV", "PINHOLE", "PERSPECTIVE", "OPENCV_FISHEYE"):
        raise SceneError(where, f"camera_model {str(model)[:40]} is not supported (OPENCV, PINHOLE, OPENCV_FISHEYE)")
    if model == "OPENCV_FISHEYE":
        k1, k2, k3, k4 = dist[:4]
        return Intrinsics(model, w, h, fx, fy, cx, cy, (k1, k2, k3, k4, 0.0, 0.0))
    if dist[3] != 0:
        raise SceneError(where, "k4 distortion is only supported with camera_model OPENCV_FISHEYE")
    return Intrinsics(model, w, h, fx, fy, cx, cy, dist)


def frame_pose(frame: dict, where: Path, name: str) -> np.ndarray:
    try:
        m = np.asarray(frame["transform_matrix"], dtype=np.float64)
    except KeyError:
        raise SceneError(where, f"frame {name} has no transform_matrix") from None
    except (TypeError, ValueError):
        raise SceneError(where, f"frame {name}: transform_matrix is not a numeric matrix") from None
    if m.shape not in ((3, 4), (4, 4)):
        raise SceneError(where, f"frame {name}: transform_matrix has shape {m.shape}, expected 4x4")
    m = np.vstack([m[:3], [0, 0, 0, 1]])  # the bottom row is [0 0 0 1] by definition; nerfstudio ignores it too
    with np.errstate(all="ignore"):  # Inf * 0 here is NaN, which check_cameras names
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

    entries, missing, outside = [], [], []
    for k, fr in enumerate(raw):
        if not isinstance(fr, dict) or "file_path" not in fr:
            raise SceneError(tp, f"frame {k} has no file_path")
        fp = checked_path(fr["file_path"], tp, f"frame {k}'s file_path")
        img = image_file(base, fp)
        if not (_is_file(img) or (downscale > 1 and _is_file(_downscaled(img, downscale)))):
            missing.append(img)
            continue
        if not _inside(img, base):
            outside.append(img)
        name = Path(fp).as_posix().removeprefix("./")
        mask = depth = None
        if fr.get("mask_path") is not None:
            mask = Path(os.path.normpath(base / checked_path(fr["mask_path"], tp, f"frame {k}'s mask_path")))
            if not _is_file(mask):
                raise SceneError(mask, f"mask file is missing (mask_path of frame {name} in {tp})")
        if fr.get("depth_file_path") is not None:
            depth = os.path.normpath(base / checked_path(fr["depth_file_path"], tp, f"frame {k}'s depth_file_path"))
        entries.append((Frame(img, frame_pose(fr, tp, name), frame_intrinsics(meta, fr, img, tp), name=name), mask, depth))

    warnings = []
    if missing:
        warnings.append(f"{tp}: skipped {len(missing)} of {len(raw)} frames whose image file is missing "
                        f"(e.g. {missing[0].relative_to(base) if missing[0].is_relative_to(base) else missing[0]})")
    if outside:
        warnings.append(f"{tp}: {len(outside)} of {len(raw)} frames use an image outside the dataset folder "
                        f"(e.g. {outside[0]})")
    if not entries:
        raise SceneError(tp, f"none of the {len(raw)} frames has an image file (first: {missing[0]})")
    entries.sort(key=lambda e: e[0].name)
    frames = [e[0] for e in entries]
    masks = [e[1] for e in entries]
    n_masks = sum(m is not None for m in masks)
    if 0 < n_masks < len(masks):
        raise SceneError(tp, f"mask_path is given for {n_masks} of {len(masks)} frames; give it for all or none")
    depths = [e[2] for e in entries]

    train_names, test_names, split_warnings = _split(meta, frames, tp)
    warnings += split_warnings

    rotation = offset = None
    if "applied_transform" in meta:
        try:
            A = np.asarray(meta["applied_transform"], dtype=np.float64)
        except (TypeError, ValueError):
            raise SceneError(tp, "applied_transform must be a finite 3x4 matrix") from None
        if A.shape not in ((3, 4), (4, 4)) or not np.isfinite(A).all():
            raise SceneError(tp, "applied_transform must be a finite 3x4 matrix")
        R, t = A[:3, :3], A[:3, 3]
        if np.abs(R).max() <= 1.01 and np.allclose(R @ R.T, np.eye(3), atol=1e-6) and np.linalg.det(R) > 0:
            # The poses are already in the saved frame: express them back in the original one,
            # and let the normalization (rotation R) bring them forward again.
            inv = np.eye(4)
            inv[:3, :3], inv[:3, 3] = R.T, -R.T @ t
            with np.errstate(all="ignore"):  # a huge pose overflows; check_cameras names it
                for f in frames:
                    f.c2w = inv @ f.c2w
            rotation, offset = R, t
        else:
            warnings.append(f"{tp}: applied_transform is not a rotation; ignored (exports stay in the saved frame)")

    points = colors = ply = None
    if meta.get("ply_file_path"):
        ply = base / checked_path(meta["ply_file_path"], tp, "ply_file_path")
        if _is_file(ply):
            points, colors = _read_ply_points(ply)
            if rotation is not None:  # saved frame -> original frame
                points = (points - offset) @ rotation
        else:
            warnings.append(f"{ply}: ply_file_path names a missing file; no initial points")

    return build_scene(
        fmt=NAME, root=base, frames=frames, downscale=downscale, test_every=test_every, test_names=test_names,
        train_names=train_names, background=background, points=points, point_colors=colors, warnings=warnings,
        downscaled=_downscaled, factors=[2, 4, 8], rotation=rotation, offset=offset, source=tp,
        points_source=ply, masks=masks if n_masks else None,
        meta={"depth_files": depths} if any(d is not None for d in depths) else None,
    )


def _split(meta: dict, frames: list[Frame], tp: Path) -> tuple[Optional[set], Optional[set], list[str]]:
    """nerfstudio's own split: (train names, test names, warnings). `test_filenames`, else
    `val_filenames`, is the test split; `train_filenames` narrows training."""
    def names(key: str) -> Optional[set[str]]:
        v = meta.get(key)
        if v is None:
            return None
        if not isinstance(v, list) or not all(isinstance(n, str) and "\0" not in n for n in v):
            raise SceneError(tp, f"{key} must be a list of file names")
        return {os.path.normpath(n) for n in v}

    by_key = {os.path.normpath(f.name): f.name for f in frames}
    test_key = "test_filenames" if meta.get("test_filenames") is not None else "val_filenames"
    out, warnings = [], []
    for key in ("train_filenames", test_key):
        got = names(key)
        if got is not None:
            unknown = got - by_key.keys()
            if unknown:
                warnings.append(f"{tp}: {len(unknown)} of {len(got)} {key} are not frames with an image "
                                f"(e.g. {sorted(unknown)[0]})")
            got = {by_key[n] for n in got if n in by_key}
        out.append(got)
    train, test = out
    if train is not None and test is None:  # a training list alone: the other frames are the test split
        test = {f.name for f in frames} - train
    return train, test, warnings


def _downscaled(p: Path, n: int) -> Path:
    """nerfstudio's convention: `images/x.jpg` -> `images_N/x.jpg`."""
    return p.parent.parent / f"{p.parent.name}_{n}" / p.name
