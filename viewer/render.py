"""Pure functions between a browser camera and a rendered frame (no viser in here).

viser reports a client camera as `wxyz` (R_world_camera) and `position`, with OpenCV
axes (+z look, -y up, +x right): the same convention as our camera-to-world matrices,
so c2w = [R(wxyz) | position] with no axis flip. `fov` is the *vertical* field of view.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np
import torch

from splatlab.scenes.geometry import fov_to_focal, quat_to_rotmat, rotmat_to_quat
from splatlab.scenes.types import Cameras

Output = Literal["RGB", "Depth", "Alpha"]
OUTPUTS: tuple[Output, ...] = ("RGB", "Depth", "Alpha")


@dataclass(frozen=True)
class ViewCamera:
    """A browser camera: c2w (4 4, OpenCV axes), vertical fov (radians), aspect W/H."""

    c2w: np.ndarray
    fov_y: float
    aspect: float

    @classmethod
    def from_viser(cls, wxyz, position, fov: float, image_width: int, image_height: int) -> "ViewCamera":
        """Raises ValueError for a degenerate camera (NaN pose, fov outside (0, pi), no size)."""
        wxyz = np.asarray(wxyz, dtype=np.float64)
        position = np.asarray(position, dtype=np.float64)
        if wxyz.shape != (4,) or position.shape != (3,):
            raise ValueError(f"camera pose has wrong shape: wxyz {wxyz.shape}, position {position.shape}")
        if not (np.isfinite(wxyz).all() and np.isfinite(position).all()) or np.linalg.norm(wxyz) < 1e-8:
            raise ValueError("camera pose is not finite")
        fov = float(fov)
        if not (math.isfinite(fov) and 1e-4 < fov < math.pi - 1e-4):
            raise ValueError(f"camera fov {fov!r} is outside (0, pi)")
        if not (image_width and image_height) or image_width <= 0 or image_height <= 0:
            raise ValueError(f"camera image size {image_width}x{image_height} is empty")
        aspect = float(image_width) / float(image_height)
        if not (math.isfinite(aspect) and 1e-3 < aspect < 1e3):
            raise ValueError(f"camera aspect {aspect!r} is degenerate")
        c2w = np.eye(4)
        c2w[:3, :3] = quat_to_rotmat(wxyz)
        c2w[:3, 3] = position
        return cls(c2w, fov, aspect)


def frame_size(aspect: float, max_res: int, scale: float = 1.0) -> tuple[int, int]:
    """(W, H) with the long side max_res * scale (at least 16 px), keeping the aspect."""
    long_side = max(16, int(round(max_res * min(max(scale, 0.0), 1.0))))
    if aspect >= 1.0:
        return long_side, max(8, int(round(long_side / aspect)))
    return max(8, int(round(long_side * aspect))), long_side


def intrinsics(fov_y: float, width: int, height: int) -> np.ndarray:
    """3 3 pinhole K for a vertical fov, square pixels, centred principal point."""
    fy = fov_to_focal(fov_y, height)
    return np.array([[fy, 0.0, 0.5 * width], [0.0, fy, 0.5 * height], [0.0, 0.0, 1.0]])


# Turbo colormap, Mikhailov's polynomial fit (Google, 2019): no matplotlib needed.
_TURBO_R = (0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943)
_TURBO_G = (0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604)
_TURBO_B = (0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973)


def turbo(x: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> float RGB in [0, 1] (shape + (3,))."""
    x = np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0)
    powers = np.stack([x**i for i in range(6)], -1)
    rgb = np.stack([powers @ np.asarray(c, np.float32) for c in (_TURBO_R, _TURBO_G, _TURBO_B)], -1)
    return np.clip(rgb, 0.0, 1.0)


def colorize_depth(depth: np.ndarray, alpha: np.ndarray, background: np.ndarray) -> np.ndarray:
    """H W depth (expected depth) and H W alpha -> H W 3 float: turbo over the robust
    (2nd..98th percentile) range of covered pixels, blended onto `background` by alpha."""
    covered = alpha > 0.2
    if covered.any():
        lo, hi = np.percentile(depth[covered], [2, 98])
    else:
        lo, hi = 0.0, 1.0
    t = (depth - lo) / max(hi - lo, 1e-6)
    a = alpha[..., None]
    return turbo(t) * a + np.asarray(background, np.float32) * (1 - a)


@dataclass
class RenderSettings:
    output: Output = "RGB"
    max_res: int = 1024
    sh_degree: int = 3
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)  # in [0, 1]
    near: float = 0.01
    far: float = 1000.0


def view_cameras(cam: ViewCamera, width: int, height: int, device) -> Cameras:
    """The browser camera as one `Cameras` (normalized frame) on `device`."""
    K = intrinsics(cam.fov_y, width, height)
    f32 = lambda v: torch.tensor([float(v)], dtype=torch.float32, device=device)  # noqa: E731
    return Cameras(
        camtoworlds=torch.as_tensor(cam.c2w, dtype=torch.float32, device=device)[None],
        fx=f32(K[0, 0]), fy=f32(K[1, 1]), cx=f32(K[0, 2]), cy=f32(K[1, 2]),
        width=torch.tensor([width]), height=torch.tensor([height]),
    )


def render_frame(renderer, cam: ViewCamera, width: int, height: int, settings: RenderSettings) -> np.ndarray:
    """Render `renderer` (any `Renderer`) from `cam` at width x height -> uint8 H W 3.

    Tensors go to the renderer's own device (gsplat on CUDA, the reference on CPU). The
    SH degree and clip range apply to renderers that offer `with_render_options`."""
    device = renderer.device
    options = getattr(renderer, "with_render_options", None)
    if options is not None:
        renderer = options(sh_degree=settings.sh_degree, near_plane=float(settings.near),
                           far_plane=float(settings.far))
    bg = np.asarray(settings.background, np.float32)
    with torch.no_grad():
        out = renderer.render(view_cameras(cam, width, height, device),
                              background=torch.as_tensor(bg, device=device)[None],
                              with_depth=settings.output == "Depth")
    alpha = out.alpha[0, ..., 0].float().cpu().numpy()
    if settings.output == "RGB":
        img = out.rgb[0].float().cpu().numpy()
    elif settings.output == "Alpha":
        img = np.repeat(alpha[..., None], 3, axis=-1)
    else:
        img = colorize_depth(out.depth[0, ..., 0].float().cpu().numpy(), alpha, bg)
    return (np.clip(np.nan_to_num(img), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


class AdaptiveResolution:
    """Picks the render scale while the camera moves, from measured frame time.

    A frame's time (render plus JPEG encode) is close to linear in pixels, so it keeps an
    EMA of seconds per pixel and asks for as many pixels as fit the frame budget: 1 /
    target_fps less the EMA of the `overhead` between frames that no size changes (the
    worker's loop, waiting for the GIL while the previous frame is sent), so that sent
    frames, not renders, keep the rate. A fixed cost per frame inside the render (launches)
    makes small frames dearer per pixel than the fit says; the sizes still converge to
    where a frame takes the budget (the EMA is then linear in itself, with factor
    0.7 + 0.3 * fixed cost / budget < 1), as long as that cost is under the budget.
    `min_scale` of the long side (1/16: 1/256 of the pixels) keeps the rate for a renderer
    up to ~250 budgets a full frame (a NeRF on CPU; a splat on GPU needs none of it).
    When the camera has been still for `settle_s`, the full-resolution frame is due.
    """

    def __init__(self, target_fps: float = 12.0, settle_s: float = 0.3,
                 min_scale: float = 1.0 / 16, first_scale: float = 0.125):
        self.target_fps = target_fps
        self.settle_s = settle_s
        self.min_scale = min_scale
        self.first_scale = first_scale
        self.s_per_px: Optional[float] = None
        self.overhead = 0.0

    def observe(self, seconds: float, pixels: int, overhead: Optional[float] = None) -> None:
        """A frame of `pixels` took `seconds` (render + encode), after `overhead` seconds
        between the previous moving frame and this one (None: not measured)."""
        v = seconds / max(pixels, 1)
        self.s_per_px = v if self.s_per_px is None else 0.7 * self.s_per_px + 0.3 * v
        if overhead is not None and math.isfinite(overhead):
            self.overhead = 0.7 * self.overhead + 0.3 * max(overhead, 0.0)

    def moving_scale(self, full_pixels: int) -> float:
        """Scale (0..1] of the long side for a frame while moving."""
        if self.s_per_px is None:
            return self.first_scale
        # At least a quarter of the frame time stays for the frame itself.
        budget = max(1.0 / self.target_fps - self.overhead, 0.25 / self.target_fps)
        budget_px = budget / self.s_per_px
        return float(min(1.0, max(self.min_scale, math.sqrt(budget_px / max(full_pixels, 1)))))

    def is_still(self, last_move: float, now: Optional[float] = None) -> bool:
        return ((time.monotonic() if now is None else now) - last_move) >= self.settle_s


__all__ = [
    "ViewCamera", "RenderSettings", "AdaptiveResolution", "render_frame", "view_cameras", "frame_size",
    "intrinsics", "turbo", "colorize_depth", "quat_to_rotmat", "rotmat_to_quat", "OUTPUTS",
]
