"""Camera paths for `splatlab render`: an orbit, a smooth pass through the training
cameras, or a JSON file. All return `Cameras` in the run's normalized frame (OpenCV axes).

JSON path schema (`--path my_path.json`), coordinates in the dataset's ORIGINAL frame
(what `splatlab export` writes), camera-to-world matrices with OpenCV axes (+x right,
+y down, +z forward) unless `"convention": "opengl"` (nerfstudio/Blender: +y up, +z back):

    {
      "convention": "opencv",           # optional: "opencv" (default) | "opengl"
      "width": 640, "height": 480,      # optional defaults for every frame
      "fps": 30,                        # optional: used when --fps is not given
      "frames": [
        {"camtoworld": [[r00, r01, r02, tx], [..], [..], [0, 0, 0, 1]],
         "fx": 500.0, "fy": 500.0,      # pixels; or "fov_y_deg": 50 (square pixels)
         "cx": 320.0, "cy": 240.0,      # optional: default the image centre
         "width": 640, "height": 480}   # optional per frame (all frames must agree)
      ]
    }

A bare list of such frames is accepted too. `--width/--height` rescale the intrinsics.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from splatlab.scenes.geometry import (
    OPENGL_TO_OPENCV, focus_point, fov_to_focal, look_at, quat_to_rotmat, rotmat_to_quat, up_direction,
)

from .errors import UserError


def _cameras(c2w: np.ndarray, fx, fy, cx, cy, width: int, height: int):
    from splatlab.scenes.types import Cameras

    n = len(c2w)
    full = lambda v: torch.as_tensor(np.broadcast_to(np.asarray(v, np.float64), (n,)).copy(), dtype=torch.float32)  # noqa: E731
    return Cameras(
        camtoworlds=torch.as_tensor(np.asarray(c2w), dtype=torch.float32),
        fx=full(fx), fy=full(fy), cx=full(cx), cy=full(cy),
        width=torch.full((n,), int(width), dtype=torch.long),
        height=torch.full((n,), int(height), dtype=torch.long),
    )


def _out_size(cams, width: Optional[int], height: Optional[int]) -> tuple[int, int, float]:
    """Output size and the factor from the first camera's pixels to the output's."""
    w0, h0 = int(cams.width[0]), int(cams.height[0])
    if width is None and height is None:
        return w0, h0, 1.0
    if width is None:
        width = max(1, round(w0 * height / h0))
    if height is None:
        height = max(1, round(h0 * width / w0))
    return int(width), int(height), width / w0


def orbit(cams, frames: int, width: Optional[int] = None, height: Optional[int] = None):
    """A full circle around the scene centre (the cameras' focus point) at the cameras'
    mean height along their mean up vector, at their mean horizontal distance, looking at
    the centre. Intrinsics: the first camera's focal length, rescaled to the output."""
    c2w = cams.camtoworlds.double().numpy()
    up = up_direction(c2w)
    if up is None:
        raise UserError("cannot orbit: the cameras' up directions cancel out")
    centre = focus_point(c2w)
    rel = c2w[:, :3, 3] - centre
    h = float((rel @ up).mean())
    horiz = rel - np.outer(rel @ up, up)
    radius = float(np.linalg.norm(horiz, axis=-1).mean())
    if radius < 1e-9:
        raise UserError("cannot orbit: the cameras sit on the scene's up axis")
    e1 = horiz.mean(0) if np.linalg.norm(horiz.mean(0)) > 1e-6 * radius else horiz[0]
    e1 = e1 - (e1 @ up) * up
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    a = 2 * np.pi * np.arange(frames) / frames
    eye = centre + h * up + radius * (np.cos(a)[:, None] * e1 + np.sin(a)[:, None] * e2)
    W, H, f = _out_size(cams, width, height)
    return _cameras(look_at(eye, centre, up), float(cams.fx[0]) * f, float(cams.fy[0]) * f,
                    W / 2.0, H / 2.0, W, H)


def _slerp(q0: np.ndarray, q1: np.ndarray, t: float) -> np.ndarray:
    dot = float(q0 @ q1)
    if dot > 0.9995:
        q = q0 + t * (q1 - q0)
        return q / np.linalg.norm(q)
    th = math.acos(max(-1.0, min(1.0, dot)))
    return (math.sin((1 - t) * th) * q0 + math.sin(t * th) * q1) / math.sin(th)


def _catmull_rom(p0, p1, p2, p3, t: float) -> np.ndarray:
    """Uniform Catmull-Rom between p1 and p2 (passes through every key)."""
    t2, t3 = t * t, t * t * t
    return 0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                  + (-p0 + 3 * p1 - 3 * p2 + p3) * t3)


def interpolate(cams, frames: int, width: Optional[int] = None, height: Optional[int] = None):
    """A smooth path through the given cameras in order: Catmull-Rom positions, slerped
    rotations, linearly blended focal lengths; frame 0 is the first camera, the last
    frame the last camera."""
    c2w = cams.camtoworlds.double().numpy()
    n = len(c2w)
    if n < 2:
        raise UserError("interpolate needs at least two cameras")
    qs = [rotmat_to_quat(c2w[i, :3, :3]) for i in range(n)]
    for i in range(1, n):  # shortest arcs
        if qs[i] @ qs[i - 1] < 0:
            qs[i] = -qs[i]
    pos = c2w[:, :3, 3]
    W, H, f = _out_size(cams, width, height)
    fx, fy = cams.fx.double().numpy() * f, cams.fy.double().numpy() * f
    out = np.tile(np.eye(4), (frames, 1, 1))
    ofx, ofy = np.empty(frames), np.empty(frames)
    for k in range(frames):
        s = (n - 1) * k / max(frames - 1, 1)
        i = min(int(s), n - 2)
        t = s - i
        p = [pos[max(i - 1, 0)], pos[i], pos[i + 1], pos[min(i + 2, n - 1)]]
        out[k, :3, 3] = _catmull_rom(*p, t)
        out[k, :3, :3] = quat_to_rotmat(_slerp(qs[i], qs[i + 1], t))
        ofx[k], ofy[k] = (1 - t) * fx[i] + t * fx[i + 1], (1 - t) * fy[i] + t * fy[i + 1]
    return _cameras(out, ofx, ofy, W / 2.0, H / 2.0, W, H)


def from_json(path: Path, normalization, width: Optional[int] = None,
              height: Optional[int] = None) -> tuple[object, Optional[float]]:
    """Cameras (normalized frame) from a JSON path file (schema above), and its fps."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError("camera path file not found", path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"invalid JSON ({e})", path) from None
    top = data if isinstance(data, dict) else {}
    frames = data.get("frames") if isinstance(data, dict) else data
    if not isinstance(frames, list) or not frames:
        raise UserError("camera path needs a non-empty list of frames", path)
    conv = top.get("convention", "opencv")
    if conv not in ("opencv", "opengl"):
        raise UserError(f"convention must be 'opencv' or 'opengl', got {conv!r}", path)
    c2w, fx, fy, cx, cy, sizes = [], [], [], [], [], set()
    for i, fr in enumerate(frames):
        try:
            m = np.asarray(fr["camtoworld"], dtype=np.float64)
            if m.shape == (3, 4):
                m = np.vstack([m, [0, 0, 0, 1]])
            if m.shape != (4, 4) or not np.isfinite(m).all():
                raise ValueError("camtoworld must be a finite 4x4 (or 3x4) matrix")
            w, h = int(fr.get("width", top.get("width", 0))), int(fr.get("height", top.get("height", 0)))
            if w <= 0 or h <= 0:
                raise ValueError("width and height are needed (per frame or at the top)")
            if "fov_y_deg" in fr:
                fyi = fov_to_focal(math.radians(float(fr["fov_y_deg"])), h)
                fxi = fyi
            else:
                fxi, fyi = float(fr["fx"]), float(fr.get("fy", fr["fx"]))
            cx.append(float(fr.get("cx", w / 2))), cy.append(float(fr.get("cy", h / 2)))
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"frame {i}: {e if not isinstance(e, KeyError) else f'missing {e}'}", path) from None
        if conv == "opengl":
            m = m @ OPENGL_TO_OPENCV
        c2w.append(m), fx.append(fxi), fy.append(fyi), sizes.add((w, h))
    if len(sizes) > 1:
        raise UserError(f"all frames must share one image size, got {sorted(sizes)}", path)
    (w, h), = sizes
    c2w = normalization.apply_c2w(np.stack(c2w))
    cams = _cameras(c2w, fx, fy, cx, cy, w, h)
    if width is not None or height is not None:
        W, H, _ = _out_size(cams, width, height)
        cams = _rescale(cams, W, H)
    fps = top.get("fps")
    return cams, (float(fps) if fps is not None else None)


def _rescale(cams, W: int, H: int):
    import dataclasses

    sx, sy = W / float(cams.width[0]), H / float(cams.height[0])
    return dataclasses.replace(cams, fx=cams.fx * sx, fy=cams.fy * sy, cx=cams.cx * sx, cy=cams.cy * sy,
                               width=torch.full_like(cams.width, W), height=torch.full_like(cams.height, H))


PATHS = {"orbit": orbit, "interpolate": interpolate}

__all__ = ["PATHS", "orbit", "interpolate", "from_json", "focus_point"]
