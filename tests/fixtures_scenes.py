"""Tiny datasets in every format, generated in a tmp dir with KNOWN cameras and points,
so loaders can be checked against brute-force float64 projection."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

W, H = 40, 30
FX, FY, CX, CY = 36.0, 35.0, 19.5, 15.25


def orbit_c2w(n: int, radius: float = 4.0, center=(1.0, -2.0, 0.5)) -> np.ndarray:
    """n OpenCV camera-to-world matrices on a tilted circle, looking at `center`."""
    center = np.asarray(center, np.float64)
    out = []
    for k in range(n):
        a = 2 * np.pi * k / n
        eye = center + radius * np.array([np.cos(a), np.sin(a), 0.4 + 0.1 * np.sin(3 * a)])
        fwd = center - eye
        fwd /= np.linalg.norm(fwd)
        right = np.cross(fwd, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        down = np.cross(fwd, right)
        m = np.eye(4)
        m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, down, fwd, eye
        out.append(m)
    return np.stack(out)


def scene_points(n: int = 50, center=(1.0, -2.0, 0.5), seed: int = 0) -> np.ndarray:
    return np.asarray(center) + np.random.default_rng(seed).uniform(-0.7, 0.7, (n, 3))


def project(c2w: np.ndarray, K: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force pinhole projection in float64: (pixels P 2, depth P)."""
    w2c = np.linalg.inv(c2w)
    xc = x @ w2c[:3, :3].T + w2c[:3, 3]
    uv = xc[:, :2] / xc[:, 2:3]
    return uv * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]], xc[:, 2]


def K_of(fx=FX, fy=FY, cx=CX, cy=CY) -> np.ndarray:
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])


def write_image(path: Path, w: int = W, h: int = H, seed: int = 0, alpha: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 4 if alpha else 3), dtype=np.uint8)
    if alpha:
        img[..., 3] = 0
        img[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4, 3] = 255
    Image.fromarray(img).save(path)


def write_colmap(root: Path, n: int = 10, model: str = "PINHOLE", params=None, text: bool = False,
                 register: bool = True, image_dir: str = "images", w: int = W, h: int = H,
                 model_dir: str = "sparse/0") -> dict:
    """A COLMAP model under root/model_dir with n images in root/image_dir, observing scene_points()."""
    import pycolmap

    params = params if params is not None else [FX, FY, CX, CY]
    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(pycolmap.Camera(model=model, width=w, height=h, params=params, camera_id=1))
    c2ws = orbit_c2w(n)
    pts = scene_points()
    K = K_of()
    obs: dict[int, list] = {}
    if register:
        for k in range(n):
            uv, _ = project(c2ws[k], K, pts)
            inside = np.where((uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h))[0]
            im = pycolmap.Image(name=f"img_{k:03d}.png", keypoints=uv[inside], camera_id=1, image_id=k + 1)
            w2c = np.linalg.inv(c2ws[k])
            rec.add_image_with_trivial_frame(im, pycolmap.Rigid3d(pycolmap.Rotation3d(w2c[:3, :3]), w2c[:3, 3]))
            for j, p in enumerate(inside):
                obs.setdefault(int(p), []).append((k + 1, j))
            write_image(root / image_dir / f"img_{k:03d}.png", w, h, seed=k)
        for p, els in obs.items():
            tr = pycolmap.Track()
            for img_id, idx in els:
                tr.add_element(img_id, idx)
            rec.add_point3D(pts[p], tr, np.array([p % 256, 100, 200], np.uint8))
    d = root / model_dir
    d.mkdir(parents=True, exist_ok=True)
    (rec.write_text if text else rec.write_binary)(str(d))
    return {"c2w": c2ws, "points": pts, "K": K, "observed": sorted(obs)}


def write_transforms(root: Path, n: int = 10, missing: int = 0, distortion: dict | None = None,
                     per_frame: bool = False, applied_transform=None, nan_frame: int | None = None) -> dict:
    """An instant-ngp/nerfstudio transforms.json (OpenGL poses) with n frames, the last
    `missing` of which have no image file."""
    c2ws = orbit_c2w(n)
    gl = c2ws @ np.diag([1.0, -1.0, -1.0, 1.0])
    if applied_transform is not None:  # poses saved in the applied frame
        A = np.vstack([np.asarray(applied_transform, np.float64), [0, 0, 0, 1]])
        gl = A @ gl
    frames = []
    for k in range(n):
        m = gl[k].copy()
        if k == nan_frame:
            m[0, 3] = np.nan
        fr = {"file_path": f"images/f_{k:03d}.png", "transform_matrix": m.tolist()}
        if per_frame:
            fr.update({"fl_x": FX + k, "fl_y": FY + k, "cx": CX, "cy": CY, "w": W, "h": H})
        frames.append(fr)
        if k < n - missing:
            write_image(root / "images" / f"f_{k:03d}.png", seed=k)
    meta = {} if per_frame else {"fl_x": FX, "fl_y": FY, "cx": CX, "cy": CY, "w": W, "h": H}
    meta.update(distortion or {})
    if applied_transform is not None:
        meta["applied_transform"] = np.asarray(applied_transform).tolist()
    meta["frames"] = frames
    root.mkdir(parents=True, exist_ok=True)
    (root / "transforms.json").write_text(json.dumps(meta, allow_nan=True))
    return {"c2w": c2ws, "K": K_of()}


def write_blender(root: Path, n_train: int = 4, n_test: int = 3, size: int = 24) -> dict:
    angle = 0.9
    out = {}
    for split, n, off in (("train", n_train, 0), ("test", n_test, 100)):
        c2ws = orbit_c2w(n, center=(0, 0, 0))
        frames = []
        for k in range(n):
            write_image(root / split / f"r_{k}.png", size, size, seed=off + k, alpha=True)
            frames.append({"file_path": f"./{split}/r_{k}", "transform_matrix": (c2ws[k] @ np.diag([1.0, -1, -1, 1])).tolist()})
        (root / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": angle, "frames": frames}))
        out[split] = c2ws
    out["fx"] = 0.5 * size / np.tan(angle / 2)
    return out


def write_llff(root: Path, n: int = 9, h: int = H, w: int = W, f: float = FX) -> dict:
    c2ws = orbit_c2w(n)
    rows = []
    for k in range(n):
        R, t = c2ws[k][:3, :3], c2ws[k][:3, 3]
        llff = np.stack([R[:, 1], R[:, 0], -R[:, 2], t, [h, w, f]], 1)  # [down, right, back | t | hwf]
        rows.append(np.concatenate([llff.ravel(), [0.5, 10.0]]))
        write_image(root / "images" / f"IMG_{k:04d}.png", w, h, seed=k)
    np.save(root / "poses_bounds.npy", np.stack(rows))
    return {"c2w": c2ws, "K": K_of(f, f, w / 2, h / 2)}


def tree_digest(root: Path) -> str:
    """Names, sizes and contents of every file under root (to prove nothing was written)."""
    h = hashlib.sha1()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for fn in sorted(filenames):
            p = Path(dirpath) / fn
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
        h.update(dirpath.encode())
    return h.hexdigest()


def write_colmap_pipeline(root: Path, n: int = 6) -> dict:
    """What COLMAP's own pipeline leaves: the photos in input/, the distorted model in
    distorted/sparse/0 (OPENCV), and image_undistorter's dense/0/{images,sparse} (PINHOLE)."""
    dist = write_colmap(root, n=n, model="OPENCV", params=[FX, FY, CX, CY, 0.02, -0.01, 0.001, 0.0005],
                        image_dir="input", model_dir="distorted/sparse/0")
    dense = write_colmap(root, n=n, image_dir="dense/0/images", model_dir="dense/0/sparse")
    return {"distorted": dist, "dense": dense}


def write_nerfstudio_colmap(root: Path, n: int = 6) -> dict:
    """nerfstudio's `ns-process-data` output without its transforms.json: colmap/sparse/0 beside images/."""
    return write_colmap(root, n=n, model_dir="colmap/sparse/0")
