"""What the browser gets when it draws the splats itself (`--client-splats`, the HTML export).

viser's WebGL splat renderer (1.1) has three limits that made our pages look worse than
server renders; each is worked around here, on our side of `add_gaussian_splats`:

- It packs each covariance's 6 terms as float16. In a splatlab scene (normalized to
  about unit size) most trained Gaussians are < 0.01 wide, so their covariances (< 1e-4)
  fall into float16's subnormal range or to zero, and a thin Gaussian's small eigenvalue
  is lost in the rounding of its large ones: the decoded matrix is no longer the
  Gaussian's (often not even positive definite), drawn as a dark needle. We scale the
  scene by `k` (the node's scale undoes it on the GPU, exactly) so a typical Gaussian is
  ~1 wide, and widen the thin axis of the few Gaussians whose float16 covariance would
  still be wrong, just enough that it is right.
- It sorts the splats back to front in a web worker; a page opened from a file
  (file://) is an opaque origin that cannot start that worker (Chromium), so the splats
  are drawn in the order given. We give them sorted back to front for the initial
  camera, which is then exact for the first view and close for nearby ones.
- One NaN or infinite centre spoils the sorter's depth range for every splat, so
  non-finite Gaussians are dropped (with a count).

Colours are the SH DC term (view-independent), as viser's splats have no SH.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from splatlab.scenes.geometry import quat_to_rotmat

FP16_MAX = 65504.0
# In the scaled frame (typical Gaussian ~1 wide): the widest a Gaussian may be (its
# variance must stay a finite float16) and the narrowest (its variance a normal one).
MAX_SCALE = math.sqrt(FP16_MAX) / 2
MIN_SCALE = 2.0 ** -6.5  # variance 2**-13 > float16's smallest normal, 2**-14
# How far (as a factor) a decoded eigenvalue (a variance) may be from the true one before
# the axis is widened: 1.5 is ~22% in width, invisible on a thin axis; beyond that a
# float16 covariance turns into another shape (or none: an indefinite matrix).
EIG_TOLERANCE = 1.5
_TRIU = (np.array([0, 0, 0, 1, 1, 2]), np.array([0, 1, 2, 1, 2, 2]))


@dataclass
class BrowserSplats:
    """Arrays for viser's `add_gaussian_splats` (centres already multiplied by 1/`scale`)
    plus the node `scale` that undoes it; `dropped` non-finite Gaussians, `widened`
    Gaussians whose thin axis was widened to survive float16."""

    centers: np.ndarray  # N 3 float32
    covariances: np.ndarray  # N 3 3 float32
    rgbs: np.ndarray  # N 3 float32 in [0, 1]
    opacities: np.ndarray  # N 1 float32 in [0, 1]
    scale: float
    dropped: int
    widened: int

    def arrays(self) -> dict[str, np.ndarray]:
        return {"centers": self.centers, "covariances": self.covariances, "rgbs": self.rgbs,
                "opacities": self.opacities}


def _covariances(R: np.ndarray, s: np.ndarray) -> np.ndarray:
    """N 3 3 rotations, N 3 scales -> N 3 3 covariances R diag(s^2) R^T (float64)."""
    M = R * s[:, None, :]
    return M @ M.transpose(0, 2, 1)


def fp16_roundtrip(cov: np.ndarray) -> np.ndarray:
    """N 3 3 covariances as viser's client decodes them: upper triangle through float16."""
    t = cov[:, _TRIU[0], _TRIU[1]].astype(np.float16).astype(np.float64)
    out = np.empty_like(cov)
    out[:, _TRIU[0], _TRIU[1]] = t
    out[:, _TRIU[1], _TRIU[0]] = t
    return out


def fp16_faithful(R: np.ndarray, s: np.ndarray) -> np.ndarray:
    """N bools: the float16-decoded covariance has every eigenvalue within a factor
    EIG_TOLERANCE of the true one (so the browser draws this Gaussian's shape, not another)."""
    with np.errstate(over="ignore", invalid="ignore"):
        dec = fp16_roundtrip(_covariances(R, s))
    ok = np.isfinite(dec).all(axis=(1, 2))
    ev = np.full(s.shape, np.nan)
    if ok.any():
        ev[ok] = np.linalg.eigvalsh(dec[ok])
    true = np.sort(s * s, axis=1)
    with np.errstate(invalid="ignore"):
        return ok & ((ev >= true / EIG_TOLERANCE) & (ev <= true * EIG_TOLERANCE)).all(axis=1)


def fp16_safe_scales(R: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scales (N 3, scaled frame) -> (scales whose float16 covariance is faithful, N bools
    changed). Clamps to [MIN_SCALE, MAX_SCALE], then widens the thin axes of the rest
    towards the widest (anisotropy at most 1024, 512, ... 1), the least that works."""
    clipped = np.clip(s, MIN_SCALE, MAX_SCALE)
    changed = (clipped != s).any(axis=1)
    s = clipped
    bad = ~fp16_faithful(R, s)
    for ratio in 2.0 ** -np.arange(10, -1, -1):
        if not bad.any():
            break
        idx = np.nonzero(bad)[0]
        s[idx] = np.maximum(s[idx], s[idx].max(axis=1, keepdims=True) * ratio)
        changed[idx] = True
        bad[idx] = ~fp16_faithful(R[idx], s[idx])
    return s, changed


def browser_splats(arrays: dict[str, np.ndarray], view_c2w: Optional[np.ndarray] = None) -> BrowserSplats:
    """A renderer's `browser_splats()` arrays (centers N 3, quats N 4 wxyz, scales N 3,
    opacities N, rgbs N 3; activated) as viser's WebGL splats (see module doc). `view_c2w`
    (4 4, OpenCV axes) is the camera the page opens at: the splats are ordered back to
    front for it."""
    means, quats, scales, opac, rgbs = (
        np.asarray(arrays[k], dtype=np.float64) for k in ("centers", "quats", "scales", "opacities", "rgbs"))
    opac = opac.reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):
        keep = (np.isfinite(means).all(1) & np.isfinite(quats).all(1) & (np.linalg.norm(quats, axis=1) > 1e-12)
                & np.isfinite(scales).all(1) & (scales > 0).all(1) & np.isfinite(opac) & np.isfinite(rgbs).all(1))
    dropped = int((~keep).sum())
    means, quats, scales, opac, rgbs = means[keep], quats[keep], scales[keep], opac[keep], rgbs[keep]
    if view_c2w is not None and len(means):
        depth = (means - view_c2w[:3, 3]) @ view_c2w[:3, 2]
        order = np.argsort(-depth, kind="stable")  # farthest first
        means, quats, scales, opac, rgbs = means[order], quats[order], scales[order], opac[order], rgbs[order]
    # k brings the median Gaussian to unit size; the node scale 1/k undoes it exactly.
    typical = float(np.median(scales.max(axis=1))) if len(scales) else 1.0
    k = 1.0 / typical if math.isfinite(typical) and typical > 0 else 1.0
    R = quat_to_rotmat(quats) if len(quats) else np.zeros((0, 3, 3))
    s, changed = fp16_safe_scales(R, scales * k)
    return BrowserSplats(
        centers=(means * k).astype(np.float32),
        covariances=_covariances(R, s).astype(np.float32),
        rgbs=np.clip(rgbs, 0.0, 1.0).astype(np.float32),
        opacities=np.clip(opac, 0.0, 1.0).astype(np.float32)[:, None],
        scale=1.0 / k, dropped=dropped, widened=int(changed.sum()),
    )


def add_splats(scene, name: str, arrays: dict[str, np.ndarray],
               view_c2w: Optional[np.ndarray] = None) -> BrowserSplats:
    """`browser_splats` onto a viser scene API as node `name`."""
    b = browser_splats(arrays, view_c2w)
    scene.add_gaussian_splats(name, **b.arrays(), scale=b.scale)
    return b


def initial_view(c2w: np.ndarray, fov_y: float, target: np.ndarray) -> dict:
    """The viewer's start camera for a training camera c2w (OpenCV axes): where it is,
    looking along its axis at the depth of `target` (the scene centre), its own up and
    vertical fov. Keys match viser's `initial_camera` fields."""
    fwd = c2w[:3, 2]
    dist = max(float(np.dot(target - c2w[:3, 3], fwd)), 1e-3)
    return {"position": tuple(float(v) for v in c2w[:3, 3]),
            "look_at": tuple(float(v) for v in c2w[:3, 3] + fwd * dist),
            "up": tuple(float(v) for v in -c2w[:3, 1]), "fov": float(fov_y)}


def set_initial_camera(ic, view: dict) -> None:
    for key in ("position", "look_at", "up", "fov"):
        setattr(ic, key, view[key])


__all__ = ["BrowserSplats", "browser_splats", "add_splats", "fp16_faithful", "fp16_safe_scales",
           "fp16_roundtrip", "initial_view", "set_initial_camera"]
