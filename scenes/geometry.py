"""The one home of camera math (conventions: rasterizer/CONVENTIONS.md).

* Quaternions are w x y z; they need not be unit (normalised where they are read).
* Camera-to-world matrices use OpenCV camera axes (+x right, +y down, +z forward);
  `OPENCV_TO_OPENGL` turns them into OpenGL/nerfstudio/Blender axes (+y up, +z back)
  by right-multiplication, and is its own inverse.
* `Normalization` is the similarity from a dataset's original frame to the normalized
  frame a Scene lives in, applied to points and to camera-to-world matrices.
* `Box` is the one axis-aligned box (the viewer's crop box, an export's crop).

The rasterizer keeps its own torch covariance (it may import nothing of ours: the twin
rule); everything above it uses `covariances` here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Optional, Union

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

OPENCV_TO_OPENGL: Float[np.ndarray, "4 4"] = np.diag([1.0, -1.0, -1.0, 1.0])
OPENGL_TO_OPENCV = OPENCV_TO_OPENGL  # flipping y and z twice is the identity

# A box corner as callers have it (JSON list, numpy, tuple); a Box stores a tuple of floats.
Vec3Like = Union[tuple[float, float, float], Sequence[Union[float, int]], np.ndarray]


# ---- quaternions -------------------------------------------------------------------


def quat_to_rotmat(wxyz):
    """(... 4) quaternions (w x y z, any norm) -> (... 3 3) rotation matrices. numpy in
    (float64 out) or torch in (same dtype and device out)."""
    if isinstance(wxyz, Tensor):
        q = torch.nn.functional.normalize(wxyz, dim=-1)
        w, x, y, z = q.unbind(-1)
        stack = torch.stack
    else:
        q = np.asarray(wxyz, dtype=np.float64)
        q = q / np.linalg.norm(q, axis=-1, keepdims=True).clip(1e-300)
        w, x, y, z = np.moveaxis(q, -1, 0)
        stack = np.stack
    R = stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1)
    return R.reshape(tuple(q.shape[:-1]) + (3, 3))


def rotmat_to_quat(R) -> np.ndarray:
    """(... 3 3) rotation matrices -> (... 4) unit quaternions (w x y z) with w >= 0
    (Shepperd's method: the branch with the largest pivot, so no division by ~0)."""
    R = np.asarray(R, dtype=np.float64)
    m = R.reshape(-1, 3, 3)
    t = np.trace(m, axis1=-2, axis2=-1)
    d = np.diagonal(m, axis1=-2, axis2=-1)
    q = np.empty((len(m), 4))
    use_t = t > 0
    i = np.argmax(d, axis=-1)
    for n in range(len(m)):
        r = m[n]
        if use_t[n]:
            s = 2.0 * math.sqrt(t[n] + 1.0)
            q[n] = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
        else:
            a = int(i[n])
            b, c = (a + 1) % 3, (a + 2) % 3
            s = 2.0 * math.sqrt(max(1.0 + r[a, a] - r[b, b] - r[c, c], 1e-12))
            q[n, 0] = (r[c, b] - r[b, c]) / s
            q[n, 1 + a] = 0.25 * s
            q[n, 1 + b] = (r[b, a] + r[a, b]) / s
            q[n, 1 + c] = (r[c, a] + r[a, c]) / s
    q *= np.where(q[:, :1] >= 0, 1.0, -1.0) / np.linalg.norm(q, axis=-1, keepdims=True)
    return q.reshape(R.shape[:-2] + (4,))


def quat_multiply(a: Float[Tensor, "*#B 4"], b: Float[Tensor, "*#B 4"]) -> Float[Tensor, "*B 4"]:
    """Hamilton product a * b of wxyz quaternions (broadcasting): the rotation b, then a."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], dim=-1)


def covariances(quats, scales):
    """N 4 quaternions (wxyz, any norm) and N 3 activated scales -> N 3 3 covariances
    R diag(s)^2 R^T. numpy in (float64 out) or torch in (same dtype out)."""
    R = quat_to_rotmat(quats)
    if isinstance(R, Tensor):
        M = R * scales[..., None, :]
        return M @ M.transpose(-1, -2)
    M = R * np.asarray(scales, dtype=np.float64)[..., None, :]
    return M @ np.swapaxes(M, -1, -2)


# ---- cameras -----------------------------------------------------------------------


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """(*P 3) eyes -> (*P 4 4) OpenCV camera-to-world matrices looking at `target`, with
    `up` (world) pointing up in the image. When up is parallel to the view direction
    another axis stands in for it."""
    eye = np.asarray(eye, dtype=np.float64)
    fwd = np.asarray(target, dtype=np.float64) - eye
    fwd = fwd / np.linalg.norm(fwd, axis=-1, keepdims=True)
    right = np.cross(fwd, np.broadcast_to(np.asarray(up, dtype=np.float64), fwd.shape))
    degenerate = np.linalg.norm(right, axis=-1, keepdims=True) < 1e-9
    right = np.where(degenerate, np.cross(fwd, np.broadcast_to([1.0, 0.0, 0.0], fwd.shape)), right)
    right = right / np.linalg.norm(right, axis=-1, keepdims=True)
    down = np.cross(fwd, right)
    c2w = np.zeros(fwd.shape[:-1] + (4, 4))
    c2w[..., :3, 0], c2w[..., :3, 1], c2w[..., :3, 2], c2w[..., :3, 3] = right, down, fwd, eye
    c2w[..., 3, 3] = 1.0
    return c2w


def fov_to_focal(fov: float, size: float | int) -> float:
    """Focal length in pixels for a field of view (radians) across `size` pixels."""
    return 0.5 * float(size) / math.tan(0.5 * float(fov))


def focal_to_fov(focal: float, size: float | int) -> float:
    """Field of view (radians) across `size` pixels for a focal length in pixels."""
    return 2.0 * math.atan(0.5 * float(size) / float(focal))


def focus_point(c2w) -> np.ndarray:
    """C 4 4 camera-to-world matrices (OpenCV axes) -> 3: the point nearest (least
    squares) to all optical axes; the mean camera centre when the axes are (nearly)
    parallel."""
    c2w = np.asarray(c2w, dtype=np.float64).reshape(-1, 4, 4)
    o, d = c2w[:, :3, 3], c2w[:, :3, 2]
    d = d / np.linalg.norm(d, axis=-1, keepdims=True)
    P = np.eye(3)[None] - d[:, :, None] * d[:, None, :]
    A, b = P.sum(0), (P @ o[:, :, None]).sum(0)[:, 0]
    if np.linalg.cond(A) > 1e6:
        return o.mean(0)
    return np.linalg.solve(A, b)


def up_direction(camtoworlds) -> Optional[np.ndarray]:
    """The scene's up (unit, 3): the mean of the cameras' up vectors (-y in OpenCV axes),
    right for captures taken upright. None when they cancel out (or there are none).
    Takes C 4 4 camera-to-world matrices, numpy or torch."""
    if isinstance(camtoworlds, Tensor):
        camtoworlds = camtoworlds.detach().double().cpu().numpy()
    c2w = np.asarray(camtoworlds, dtype=np.float64).reshape(-1, 4, 4)
    if len(c2w) == 0:
        return None
    up = -c2w[:, :3, 1].mean(0)
    norm = float(np.linalg.norm(up))
    if not norm > 1e-6:
        return None
    return up / norm


# ---- the normalization -------------------------------------------------------------


@dataclass
class Normalization:
    """x_normalized = scale * (R @ x_original) + translation. R is identity for every
    loader today (translation plus uniform scale), which keeps SH untouched; exporters
    still handle a general R."""

    scale: float = 1.0
    translation: Float[np.ndarray, "3"] = field(default_factory=lambda: np.zeros(3))
    rotation: Float[np.ndarray, "3 3"] = field(default_factory=lambda: np.eye(3))

    def matrix(self) -> Float[np.ndarray, "4 4"]:
        T = np.eye(4)
        T[:3, :3] = self.scale * np.asarray(self.rotation, dtype=np.float64)
        T[:3, 3] = np.asarray(self.translation, dtype=np.float64)
        return T

    def inverse(self) -> "Normalization":
        """The similarity back: normalized -> original."""
        s = float(self.scale)
        R = np.asarray(self.rotation, dtype=np.float64)
        t = np.asarray(self.translation, dtype=np.float64).reshape(3)
        return Normalization(scale=1.0 / s, translation=-(R.T @ t) / s, rotation=R.T)

    def apply_points(self, x: Float[np.ndarray, "P 3"]) -> Float[np.ndarray, "P 3"]:
        x = np.asarray(x, dtype=np.float64)
        return self.scale * x @ np.asarray(self.rotation).T + np.asarray(self.translation)

    def invert_points(self, x: Float[np.ndarray, "P 3"]) -> Float[np.ndarray, "P 3"]:
        x = np.asarray(x, dtype=np.float64)
        return ((x - np.asarray(self.translation)) / self.scale) @ np.asarray(self.rotation)

    def apply_c2w(self, c2w: Float[np.ndarray, "C 4 4"]) -> Float[np.ndarray, "C 4 4"]:
        """Camera-to-world matrices, original -> normalized: axes turned by R, centres
        moved by the similarity (the camera's own axes stay unit length)."""
        out = np.array(c2w, dtype=np.float64, copy=True)
        out[..., :3, :3] = np.asarray(self.rotation, dtype=np.float64) @ out[..., :3, :3]
        out[..., :3, 3] = self.apply_points(out[..., :3, 3])
        return out

    def invert_c2w(self, c2w: Float[np.ndarray, "C 4 4"]) -> Float[np.ndarray, "C 4 4"]:
        """Camera-to-world matrices, normalized -> original (the inverse of apply_c2w)."""
        out = np.array(c2w, dtype=np.float64, copy=True)
        out[..., :3, :3] = np.asarray(self.rotation, dtype=np.float64).T @ out[..., :3, :3]
        out[..., :3, 3] = self.invert_points(out[..., :3, 3])
        return out

    def apply_box(self, box: "Box") -> "Box":
        """The axis-aligned bounds, in the normalized frame, of a box in original
        coordinates: exact without a rotation (every loader today)."""
        return Box.around(self.apply_points(box.corners()), box.enabled)

    def invert_box(self, box: "Box") -> "Box":
        """The axis-aligned bounds, in original coordinates, of a normalized-frame box."""
        return Box.around(self.invert_points(box.corners()), box.enabled)

    def to_json(self) -> dict:
        return {
            "scale": float(self.scale),
            "translation": [float(v) for v in np.asarray(self.translation).reshape(3)],
            "rotation": np.asarray(self.rotation, dtype=np.float64).tolist(),
        }

    @classmethod
    def from_json(cls, d: dict) -> "Normalization":
        return cls(float(d["scale"]), np.asarray(d["translation"], dtype=np.float64),
                   np.asarray(d.get("rotation", np.eye(3)), dtype=np.float64))


# ---- boxes -------------------------------------------------------------------------


def _vec3(v) -> tuple[float, float, float]:
    a = np.asarray(v, dtype=np.float64).reshape(-1)
    if a.shape != (3,):
        raise ValueError(f"a box corner needs 3 numbers, got {a.size}")
    return (float(a[0]), float(a[1]), float(a[2]))


@dataclass(frozen=True)
class Box:
    """An axis-aligned box [lo, hi] (inclusive), in whatever frame its user says. The
    viewer's crop box is one in the normalized frame (`enabled` says whether it crops);
    an export's crop is one in original coordinates. Frozen and hashable: the viewer
    keys its cropped-model cache on it."""

    lo: Vec3Like = (-1.0, -1.0, -1.0)  # stored as a tuple of 3 floats
    hi: Vec3Like = (1.0, 1.0, 1.0)
    enabled: bool = True

    def __post_init__(self):
        object.__setattr__(self, "lo", _vec3(self.lo))
        object.__setattr__(self, "hi", _vec3(self.hi))
        object.__setattr__(self, "enabled", bool(self.enabled))

    @classmethod
    def around(cls, points: Float[np.ndarray, "P 3"], enabled: bool = True) -> "Box":
        """The tightest box holding `points`."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        return cls(tuple(p.min(0)), tuple(p.max(0)), enabled)

    def corners(self) -> Float[np.ndarray, "8 3"]:
        lo, hi = self.lo, self.hi
        return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])

    def mask(self, means: Float[Tensor, "N 3"]) -> Bool[Tensor, " N"]:
        """Which points lie inside (compared in the points' own dtype)."""
        lo = torch.as_tensor(self.lo, dtype=means.dtype, device=means.device)
        hi = torch.as_tensor(self.hi, dtype=means.dtype, device=means.device)
        return ((means >= lo) & (means <= hi)).all(dim=-1)

    def to_json(self, normalization: Optional[Normalization] = None) -> dict:
        """The viewer's file (viewer_crop.json): the box in the normalized frame, plus
        (given the run's `Normalization`) in original coordinates, the frame splat.ply
        and exports are in."""
        d = {"enabled": self.enabled, "frame": "normalized",
             "min": [float(v) for v in self.lo], "max": [float(v) for v in self.hi]}
        if normalization is not None:
            orig = normalization.invert_box(self)
            d["original"] = {"min": list(orig.lo), "max": list(orig.hi)}
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Box":
        """Inverse of `to_json` (the normalized-frame box)."""
        return cls(tuple(float(v) for v in d["min"]), tuple(float(v) for v in d["max"]),
                   bool(d.get("enabled", False)))


def box_corners(lo, hi) -> Float[np.ndarray, "8 3"]:
    """The 8 corners of the axis-aligned box [lo, hi]."""
    return Box(lo, hi).corners()


__all__ = [
    "OPENCV_TO_OPENGL", "OPENGL_TO_OPENCV", "Box", "Normalization", "box_corners", "covariances",
    "focal_to_fov", "focus_point", "fov_to_focal", "look_at", "quat_multiply", "quat_to_rotmat", "rotmat_to_quat",
    "up_direction",
]
