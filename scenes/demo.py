"""The built-in demo scene: procedural, seeded, generated in-process (no downloads).

A few analytic primitives (two spheres, a box, a capped cylinder) stand on a finite
square ground, all with procedural textures (checkers, stripes, value noise) and fixed
Lambertian shading with hard shadows, so colours are view-independent and multi-view
training has signal. Views are ray-cast exactly in numpy (2x2 supersampled), lazily, one
image at a time, from cameras on a hemisphere around the objects. Rays that miss every
primitive get the constant `BACKGROUND` colour, which the scene reports in
`Scene.background`.

World frame: +z up, ground at z = 0, objects within about [-1.5, 1.5]^2 x [0, 0.9],
cameras at radius 3.2 looking at (0, 0, 0.3). Normalization is the identity.
`Scene.mesh` tessellates exactly the rendered surfaces (faces hidden against the ground
are left out); `Scene.points` are surface points seen by random training pixels, with
their rendered colour, standing in for SfM points.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .geometry import Normalization, fov_to_focal, look_at
from .types import Cameras, ImageSet, Mesh, Scene, SceneError

NAME = "demo"
BACKGROUND = (0.62, 0.72, 0.86)
LIGHT = np.array([0.45, 0.3, 0.84]) / np.linalg.norm([0.45, 0.3, 0.84])
AMBIENT = 0.38
GROUND_HALF = 1.5
ORBIT_RADIUS = 3.2
LOOK_AT = np.array([0.0, 0.0, 0.3])
FOV_X_DEG = 55.0  # the default horizontal field of view of the orbit's cameras


# ---- procedural textures ----------------------------------------------------------
def _hash3(i: np.ndarray, j: np.ndarray, k: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per integer lattice point."""
    h = (i * 73856093) ^ (j * 19349663) ^ (k * 83492791) ^ (seed * 2654435761)
    h = (h ^ (h >> 13)) * 1274126177
    h = h ^ (h >> 16)
    return (h & 0xFFFF).astype(np.float64) / 65536.0


def value_noise(p: np.ndarray, freq: float, seed: int) -> np.ndarray:
    """Trilinear value noise in [0, 1] at points p (R 3)."""
    q = p * freq
    q0 = np.floor(q).astype(np.int64)
    f = q - q0
    f = f * f * (3 - 2 * f)  # smoothstep, so the noise has no visible lattice creases
    out = np.zeros(len(p))
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                w = (f[:, 0] if dx else 1 - f[:, 0]) * (f[:, 1] if dy else 1 - f[:, 1]) * (f[:, 2] if dz else 1 - f[:, 2])
                out += w * _hash3(q0[:, 0] + dx, q0[:, 1] + dy, q0[:, 2] + dz, seed)
    return out


def _mix(a, b, t: np.ndarray) -> np.ndarray:
    return np.asarray(a)[None] * (1 - t[:, None]) + np.asarray(b)[None] * t[:, None]


def _noisy(rgb: np.ndarray, p: np.ndarray, seed: int, amount: float = 0.25) -> np.ndarray:
    n = 0.65 * value_noise(p, 6.0, seed) + 0.35 * value_noise(p, 17.0, seed + 1)
    return np.clip(rgb * (1 - amount + 2 * amount * n[:, None]), 0, 1)


# ---- primitives: intersect, normal, albedo, tessellate -----------------------------
def _grid(n_u: int, n_v: int, closed_u: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) in [0,1]^2 grid vertices and the triangles joining them."""
    nu = n_u if closed_u else n_u + 1
    u, v = np.meshgrid(np.arange(nu) / n_u, np.arange(n_v + 1) / n_v, indexing="xy")
    idx = np.arange(nu * (n_v + 1)).reshape(n_v + 1, nu)
    a = idx[:-1, :]
    b = np.roll(idx, -1, axis=1)[:-1, :] if closed_u else idx[:-1, 1:]
    a = a if closed_u else a[:, :-1]
    c, d = a + nu, b + nu
    faces = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)])
    return np.stack([u.ravel(), v.ravel()], -1), faces


@dataclass
class Ground:
    half: float = GROUND_HALF

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            t = -o[:, 2] / d[:, 2]
        p = o + t[:, None] * d
        ok = (t > 1e-6) & (np.abs(p[:, 0]) <= self.half) & (np.abs(p[:, 1]) <= self.half)
        return np.where(ok, t, np.inf)

    def normal(self, p: np.ndarray) -> np.ndarray:
        return np.broadcast_to(np.array([0.0, 0.0, 1.0]), p.shape).copy()

    def albedo(self, p: np.ndarray) -> np.ndarray:
        check = ((np.floor(p[:, 0] / 0.3) + np.floor(p[:, 1] / 0.3)) % 2).astype(np.float64)
        rgb = _mix((0.85, 0.82, 0.74), (0.35, 0.33, 0.3), check)
        return _noisy(rgb, p, seed=1)

    def tessellate(self) -> tuple[np.ndarray, np.ndarray]:
        uv, f = _grid(60, 60)
        xy = (uv * 2 - 1) * self.half
        return np.concatenate([xy, np.zeros((len(xy), 1))], 1), f


@dataclass
class Sphere:
    center: tuple[float, float, float]
    radius: float
    colors: tuple[tuple[float, float, float], tuple[float, float, float]]
    seed: int

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        oc = o - np.asarray(self.center)
        b = (oc * d).sum(-1)
        c = (oc * oc).sum(-1) - self.radius**2
        disc = b * b - c
        s = np.sqrt(np.maximum(disc, 0))
        t0, t1 = -b - s, -b + s
        t = np.where(t0 > 1e-6, t0, t1)
        return np.where((disc >= 0) & (t > 1e-6), t, np.inf)

    def normal(self, p: np.ndarray) -> np.ndarray:
        return (p - np.asarray(self.center)) / self.radius

    def albedo(self, p: np.ndarray) -> np.ndarray:
        n = self.normal(p)
        lon = np.arctan2(n[:, 1], n[:, 0])
        lat = np.arcsin(np.clip(n[:, 2], -1, 1))
        stripes = (np.floor(lon / (np.pi / 6)) + np.floor(lat / (np.pi / 8))) % 2
        return _noisy(_mix(self.colors[0], self.colors[1], stripes), p, self.seed)

    def tessellate(self) -> tuple[np.ndarray, np.ndarray]:
        uv, f = _grid(64, 32, closed_u=True)
        lon, lat = uv[:, 0] * 2 * np.pi, (uv[:, 1] - 0.5) * np.pi
        n = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], -1)
        return np.asarray(self.center) + self.radius * n, f


@dataclass
class Box:
    """Axis-aligned box resting on the ground (its bottom face is hidden, so not meshed)."""

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    seed: int

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        lo, hi = np.asarray(self.lo), np.asarray(self.hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / d
            ta, tb = (lo - o) * inv, (hi - o) * inv
        ta, tb = np.nan_to_num(ta, nan=-np.inf), np.nan_to_num(tb, nan=np.inf)
        tmin = np.minimum(ta, tb).max(-1)
        tmax = np.maximum(ta, tb).min(-1)
        t = np.where(tmin > 1e-6, tmin, tmax)
        return np.where((tmax >= tmin) & (t > 1e-6), t, np.inf)

    def normal(self, p: np.ndarray) -> np.ndarray:
        lo, hi = np.asarray(self.lo), np.asarray(self.hi)
        dist = np.concatenate([np.abs(p - lo), np.abs(p - hi)], -1)  # R 6
        face = dist.argmin(-1)
        n = np.zeros_like(p)
        n[np.arange(len(p)), face % 3] = np.where(face < 3, -1.0, 1.0)
        return n

    def albedo(self, p: np.ndarray) -> np.ndarray:
        q = np.floor((p - np.asarray(self.lo)) / 0.12)
        check = (q.sum(-1) % 2).astype(np.float64)
        return _noisy(_mix((0.2, 0.35, 0.8), (0.92, 0.92, 0.95), check), p, self.seed)

    def tessellate(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = np.asarray(self.lo), np.asarray(self.hi)
        verts, faces = [], []
        uv, f = _grid(12, 12)
        for axis in range(3):
            for side in (0, 1):
                if axis == 2 and side == 0:
                    continue  # bottom face lies on the ground
                a, b = [k for k in range(3) if k != axis]
                v = np.zeros((len(uv), 3))
                v[:, a] = lo[a] + uv[:, 0] * (hi[a] - lo[a])
                v[:, b] = lo[b] + uv[:, 1] * (hi[b] - lo[b])
                v[:, axis] = hi[axis] if side else lo[axis]
                faces.append(f + sum(len(x) for x in verts))
                verts.append(v)
        return np.concatenate(verts), np.concatenate(faces)


@dataclass
class Cylinder:
    """Vertical cylinder standing on the ground, with a top cap."""

    center: tuple[float, float]
    radius: float
    height: float
    seed: int
    colors: tuple[tuple[float, float, float], tuple[float, float, float]] = ((0.15, 0.6, 0.25), (0.95, 0.85, 0.3))

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        c = np.asarray(self.center)
        ox, oy = o[:, 0] - c[0], o[:, 1] - c[1]
        a = d[:, 0] ** 2 + d[:, 1] ** 2
        b = ox * d[:, 0] + oy * d[:, 1]
        cc = ox**2 + oy**2 - self.radius**2
        disc = b * b - a * cc
        s = np.sqrt(np.maximum(disc, 0))
        with np.errstate(divide="ignore", invalid="ignore"):
            t0, t1 = (-b - s) / a, (-b + s) / a
        ts = np.inf * np.ones(len(o))
        for t in (t1, t0):  # t0 last, so it wins when both are valid
            z = o[:, 2] + t * d[:, 2]
            ok = (disc >= 0) & (a > 1e-12) & (t > 1e-6) & (z >= 0) & (z <= self.height)
            ts = np.where(ok, np.minimum(ts, t), ts)
        with np.errstate(divide="ignore", invalid="ignore"):
            tc = (self.height - o[:, 2]) / d[:, 2]
        pc = o + tc[:, None] * d
        cap = (tc > 1e-6) & ((pc[:, 0] - c[0]) ** 2 + (pc[:, 1] - c[1]) ** 2 <= self.radius**2)
        return np.where(cap, np.minimum(ts, tc), ts)

    def normal(self, p: np.ndarray) -> np.ndarray:
        c = np.asarray(self.center)
        side = np.stack([p[:, 0] - c[0], p[:, 1] - c[1], np.zeros(len(p))], -1) / self.radius
        top = np.abs(p[:, 2] - self.height) < 1e-7 * max(1.0, self.height)
        side[top] = (0.0, 0.0, 1.0)
        return side

    def albedo(self, p: np.ndarray) -> np.ndarray:
        c = np.asarray(self.center)
        ang = np.arctan2(p[:, 1] - c[1], p[:, 0] - c[0])
        bands = (np.floor(p[:, 2] / 0.1) + np.floor(ang / (np.pi / 5))) % 2
        return _noisy(_mix(self.colors[0], self.colors[1], bands), p, self.seed)

    def tessellate(self) -> tuple[np.ndarray, np.ndarray]:
        c = np.asarray(self.center)
        uv, f = _grid(64, 16, closed_u=True)
        ang = uv[:, 0] * 2 * np.pi
        side = np.stack([c[0] + self.radius * np.cos(ang), c[1] + self.radius * np.sin(ang), uv[:, 1] * self.height], -1)
        # Top cap: concentric rings, so vertices stay roughly evenly spread.
        uv2, f2 = _grid(64, 8, closed_u=True)
        r = self.radius * (1 - uv2[:, 1])
        ang2 = uv2[:, 0] * 2 * np.pi
        cap = np.stack([c[0] + r * np.cos(ang2), c[1] + r * np.sin(ang2), np.full(len(r), self.height)], -1)
        return np.concatenate([side, cap]), np.concatenate([f, f2 + len(side)])


def primitives() -> list:
    return [
        Ground(),
        Sphere((0.55, 0.35, 0.42), 0.42, ((0.85, 0.2, 0.15), (0.98, 0.8, 0.2)), seed=2),
        Sphere((-0.2, -0.75, 0.22), 0.22, ((0.55, 0.25, 0.7), (0.9, 0.9, 0.9)), seed=3),
        Box((-0.85, -0.25, 0.0), (-0.3, 0.3, 0.55), seed=4),
        Cylinder((0.1, 0.95), 0.22, 0.85, seed=5),
    ]


# ---- ray casting ------------------------------------------------------------------
def raycast(
    origins: np.ndarray, dirs: np.ndarray, prims: Optional[list] = None,
    casters: Optional[list] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact first hits of rays (R 3, unit dirs). Returns (t R with inf on a miss, rgb R 3 in
    [0, 1], the background where missed). `casters` (default: `prims`) cast the shadows."""
    t, rgb, _ = _raycast(origins, dirs, prims, casters)
    return t, rgb


def _raycast(origins, dirs, prims=None, casters=None):
    """raycast, plus the index into `prims` of what each ray hit (-1: nothing)."""
    prims = primitives() if prims is None else prims
    casters = prims if casters is None else casters
    ts = np.stack([p.intersect(origins, dirs) for p in prims], 0)  # P R
    which = ts.argmin(0)
    t = ts[which, np.arange(len(origins))]
    rgb = np.broadcast_to(np.asarray(BACKGROUND), (len(origins), 3)).copy()
    hit = np.isfinite(t)
    pts = origins + np.where(hit, t, 0)[:, None] * dirs
    for k, prim in enumerate(prims):
        m = hit & (which == k)
        if not m.any():
            continue
        p, n = pts[m], prim.normal(pts[m])
        n = np.where(((n * dirs[m]).sum(-1) > 0)[:, None], -n, n)
        lam = np.clip(n @ LIGHT, 0, None)
        # Hard shadows: the light is directional, so a shadow ray is the same for every view.
        so = p + 1e-4 * n
        sd = np.broadcast_to(LIGHT, so.shape)
        shadow = np.stack([q.intersect(so, sd) for q in casters], 0).min(0) < np.inf
        lam = np.where(shadow, 0.0, lam)
        rgb[m] = prim.albedo(p) * (AMBIENT + (1 - AMBIENT) * lam)[:, None]
    return t, rgb, np.where(hit, which, -1)


def orbit_camtoworlds(num_views: int) -> np.ndarray:
    """OpenCV camera-to-world matrices on a golden-angle spiral over a hemisphere band
    (elevations 12..62 degrees), all looking at LOOK_AT."""
    i = np.arange(num_views) + 0.5
    elev = np.deg2rad(12 + 50 * (i / num_views))
    azim = i * np.pi * (3 - np.sqrt(5))
    eye = LOOK_AT + ORBIT_RADIUS * np.stack([np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim), np.sin(elev)], -1)
    return look_at(eye, LOOK_AT, up=(0.0, 0.0, 1.0))


def camera_rays(c2w: np.ndarray, fx: float, fy: float, cx: float, cy: float, width: int, height: int, ss: int = 1):
    """World-space rays through ss x ss sub-pixel samples of every pixel (pixel centres at +0.5)."""
    off = (np.arange(ss) + 0.5) / ss
    u = (np.arange(width)[:, None] + off[None]).ravel()
    v = (np.arange(height)[:, None] + off[None]).ravel()
    uu, vv = np.meshgrid(u, v, indexing="xy")  # (H ss) (W ss)
    d_cam = np.stack([(uu - cx) / fx, (vv - cy) / fy, np.ones_like(uu)], -1).reshape(-1, 3)
    d = d_cam @ c2w[:3, :3].T
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    return np.broadcast_to(c2w[:3, 3], d.shape).copy(), d


def render_view(
    cameras: Cameras, i: int, ss: int = 2, prims: Optional[list] = None,
    casters: Optional[list] = None, c2w: Optional[np.ndarray] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact render of camera i: (rgb float H W 3 in [0, 1], z-depth H W with inf where
    the ray misses, from the centre sample of each pixel when ss is odd, else the mean).
    `c2w` (4 4) overrides the camera's pose (the demo's true pose when it reports a noisy one)."""
    rgb, z, _ = _render(cameras, i, ss, prims, casters, c2w)
    return rgb, z


def _render(cameras, i, ss, prims=None, casters=None, c2w=None):
    """render_view, plus the index of the primitive each sub-sample hit (H ss W ss, -1: none)."""
    prims = primitives() if prims is None else prims
    c2w = cameras.camtoworlds[i].double().numpy() if c2w is None else np.asarray(c2w, np.float64)
    fx, fy, cx, cy = (float(getattr(cameras, k)[i]) for k in ("fx", "fy", "cx", "cy"))
    w, h = int(cameras.width[i]), int(cameras.height[i])
    o, d = camera_rays(c2w, fx, fy, cx, cy, w, h, ss)
    t, rgb, which = _raycast(o, d, prims, casters)
    which = which.reshape(h * ss, w * ss)
    z = t * (d @ c2w[:3, 2])
    rgb = rgb.reshape(h, ss, w, ss, 3).mean((1, 3))
    z = z.reshape(h, ss, w, ss).mean((1, 3))
    return rgb, z, which


def mesh() -> Mesh:
    verts, faces = [], []
    for prim in primitives():
        v, f = prim.tessellate()
        faces.append(f + sum(len(x) for x in verts))
        verts.append(v)
    return Mesh(vertices=np.concatenate(verts).astype(np.float64), faces=np.concatenate(faces).astype(np.int64))


def sample_points(cameras: Cameras, views: list[int], num: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Surface points seen through random pixels of `views`, with their rendered colour."""
    rng = np.random.default_rng(seed)
    per = int(np.ceil(2 * num / max(len(views), 1)))
    P, C = [], []
    for i in views:
        c2w = cameras.camtoworlds[i].double().numpy()
        w, h = int(cameras.width[i]), int(cameras.height[i])
        px = rng.uniform(0, w, per)
        py = rng.uniform(0, h, per)
        d = np.stack([(px - float(cameras.cx[i])) / float(cameras.fx[i]),
                      (py - float(cameras.cy[i])) / float(cameras.fy[i]), np.ones(per)], -1) @ c2w[:3, :3].T
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        o = np.broadcast_to(c2w[:3, 3], d.shape)
        t, rgb = raycast(o, d)
        hit = np.isfinite(t)
        P.append(o[hit] + t[hit, None] * d[hit])
        C.append(rgb[hit])
    P, C = np.concatenate(P), np.concatenate(C)
    keep = rng.permutation(len(P))[:num]
    return P[keep], np.clip(C[keep] * 255 + 0.5, 0, 255).astype(np.uint8)


# ---- casual-capture variants ------------------------------------------------------
# `demo:<variant>`: the same scene with one defect of casual captures, for the trainer's
# options against them (appearance, pose refinement, masks, anti-aliasing). Test views
# are always clean; what a variant changes is recorded in `Scene.meta["demo_variant"]`.
VARIANTS = {
    "exposure": "per-image exposure (+-0.7 stops) and white-balance gains on the training views",
    "noisy-poses": "training poses rotated 1 degree and shifted 1% of the extent (true poses in meta)",
    "distractor": "a passer-by (about a third of the frame, somewhere else in each) in 3 of 4 "
                  "training views, covered by masks; test views never show it",
    "zoom": "test views at a quarter of the training resolution (anti-aliased ground truth)",
}
POSE_NOISE_DEG = 1.0
POSE_NOISE_EXTENT = 0.01
ZOOM_OUT = 4


def split_name(path) -> tuple[str, Optional[str]]:
    """"demo" -> ("demo", None); "demo:zoom" -> ("demo", "zoom")."""
    name = NAME if path is None else str(path)
    base, _, variant = name.partition(":")
    return base, (variant or None)


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues: rotation by `angle` (radians) about the unit `axis`."""
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def perturb_poses(c2w: np.ndarray, idx: list[int], extent: float, seed: int) -> np.ndarray:
    """C 4 4 poses with those in `idx` rotated POSE_NOISE_DEG about a random axis (about
    the camera centre) and moved POSE_NOISE_EXTENT * extent in a random direction."""
    rng = np.random.default_rng(seed)
    out = np.array(c2w, dtype=np.float64, copy=True)
    for i in idx:
        axis, shift = rng.normal(size=3), rng.normal(size=3)
        R = _rotation(axis / np.linalg.norm(axis), np.deg2rad(POSE_NOISE_DEG))
        out[i, :3, :3] = R @ out[i, :3, :3]
        out[i, :3, 3] += POSE_NOISE_EXTENT * extent * shift / np.linalg.norm(shift)
    return out


def exposure_gains(num: int, train_idx: list[int], seed: int) -> np.ndarray:
    """C 3 colour gains: exposure times white balance per training view, normalised to a
    mean of 1 per channel over the training views (so the mean look is the true one);
    test views keep gain 1."""
    rng = np.random.default_rng(seed)
    g = (2.0 ** rng.uniform(-0.7, 0.7, num))[:, None] * np.exp(rng.normal(0, 0.12, (num, 3)))
    out = np.ones((num, 3))
    out[train_idx] = g[train_idx] / g[train_idx].mean(0)
    return out


# The passer-by: a person-sized opaque figure (body and head) 1.3-1.8 units in front of
# the camera (the scene spans ~3.3 units across at the orbit's distance), so it hides
# about a third of the frame (15-50%, mean 34% of the 42 views at 80x60), its centre
# anywhere in the middle three quarters of the width. It stands clear of the scene's
# objects and casts no shadow, so its masks cover exactly what it changes.
PERSON_RADIUS = 0.35
PERSON_HEIGHT = 1.5
PERSON_DISTANCE = (1.3, 1.8)
PERSON_COLORS = ((0.95, 0.1, 0.75), (0.1, 0.85, 0.9))


def _footprints() -> list[tuple[np.ndarray, float]]:
    """(xy centre, radius) of a circle around each object on the ground."""
    out = []
    for p in primitives():
        if isinstance(p, (Sphere, Cylinder)):
            out.append((np.asarray(p.center[:2]), p.radius))
        elif isinstance(p, Box):
            lo, hi = np.asarray(p.lo[:2]), np.asarray(p.hi[:2])
            out.append(((lo + hi) / 2, float(np.linalg.norm(hi - lo)) / 2))
    return out


def distractor_views(train_idx: list[int]) -> list[int]:
    """The training views the passer-by walks through: 3 of every 4."""
    return [i for k, i in enumerate(train_idx) if k % 4 != 3]


def distractor(i: int, eye: np.ndarray) -> list:
    """The transient object of training view i seen from `eye`: a person (a capped
    cylinder and a ball for the head) between the camera and the scene, somewhere else in
    every view, seeded by the view."""
    rng = np.random.default_rng(1000 + i)
    eye = np.asarray(eye, np.float64)
    to_eye = eye[:2] - LOOK_AT[:2]
    u = to_eye / np.linalg.norm(to_eye)
    side = np.array([-u[1], u[0]])
    footprints = _footprints()
    for _ in range(100):
        dist = rng.uniform(*PERSON_DISTANCE)
        half_width = dist * np.tan(np.deg2rad(0.5 * FOV_X_DEG))
        x, y = eye[:2] - dist * u + rng.uniform(-0.75, 0.75) * half_width * side
        if all(np.hypot(x - c[0], y - c[1]) > r + PERSON_RADIUS for c, r in footprints):
            break
    r, h = PERSON_RADIUS, PERSON_HEIGHT
    return [Cylinder((float(x), float(y)), r, h, seed=9, colors=PERSON_COLORS),
            Sphere((float(x), float(y), h + 0.5 * r), 0.65 * r, PERSON_COLORS[::-1], seed=10)]


# ---- format interface -------------------------------------------------------------
def sniff(path) -> bool:
    """`demo` or `demo:<variant>` (unknown variants too, so that load names the choices),
    unless a file or folder of that name exists."""
    return path is None or (split_name(path)[0] == NAME and not Path(str(path)).exists())


def load(
    path=None,
    *,
    downscale: int = 1,
    test_every: int = 8,
    background: Optional[tuple[float, float, float]] = None,
    width: int = 160,
    height: int = 120,
    num_views: int = 64,
    num_points: int = 4000,
    fov_x_deg: float = FOV_X_DEG,
    supersample: int = 2,
    seed: int = 0,
) -> Scene:
    """The demo scene, or a casual-capture variant of it when `path` is `demo:<variant>`
    (VARIANTS). `downscale` divides width/height; `background` is ignored beyond
    reporting (the demo's background is part of the scene), `seed` picks the initial points."""
    base, variant = split_name(path)
    if variant is not None and variant not in VARIANTS:
        raise SceneError(str(path), f"unknown demo variant {variant!r}; choose one of: "
                         + ", ".join(f"demo:{v}" for v in VARIANTS))
    if downscale < 1 or width < 8 or height < 8 or num_views < 2:
        raise SceneError(NAME, f"bad demo settings: downscale={downscale} width={width} height={height} views={num_views}")
    if background is not None and tuple(background) != BACKGROUND:
        raise SceneError(NAME, f"the demo renders on its own background {BACKGROUND}; it cannot be changed")
    w, h = max(8, round(width / downscale)), max(8, round(height / downscale))
    fx = fov_to_focal(np.deg2rad(fov_x_deg), w)
    C = num_views
    true_c2w = orbit_camtoworlds(C)
    cams = Cameras(
        camtoworlds=torch.from_numpy(true_c2w).float(),
        fx=torch.full((C,), fx), fy=torch.full((C,), fx),
        cx=torch.full((C,), w / 2.0), cy=torch.full((C,), h / 2.0),
        width=torch.full((C,), w, dtype=torch.long), height=torch.full((C,), h, dtype=torch.long),
        model="PINHOLE",
    )
    test_idx = [i for i in range(C) if test_every > 0 and i % test_every == 0]
    train_idx = [i for i in range(C) if i not in set(test_idx)]
    pts, cols = sample_points(cams, train_idx, num_points, seed)  # true geometry and colour
    meta: dict = {}
    ss = [supersample] * C
    gains = None
    transient: dict[int, list] = {}
    if variant == "zoom":
        small = cams.scaled(1.0 / ZOOM_OUT)
        test = torch.zeros(C, dtype=torch.bool)
        test[test_idx] = True
        for k in ("fx", "fy", "cx", "cy", "width", "height"):
            setattr(cams, k, torch.where(test, getattr(small, k), getattr(cams, k)))
        for i in test_idx:
            ss[i] = supersample * ZOOM_OUT  # the same sample density per unit of scene as training
        meta["demo_variant"] = {"name": variant, "test_zoom_out": ZOOM_OUT}
    elif variant == "noisy-poses":
        centers = true_c2w[:, :3, 3]
        extent = float(np.linalg.norm(centers - centers.mean(0), axis=-1).max())
        cams.camtoworlds = torch.from_numpy(perturb_poses(true_c2w, train_idx, extent, seed + 7)).float()
        meta["demo_variant"] = {"name": variant, "rotation_deg": POSE_NOISE_DEG,
                                "translation": POSE_NOISE_EXTENT * extent}
        meta["true_camtoworlds"] = true_c2w.tolist()
        meta["poses"] = "rough"  # what a trainer reads to refine poses by default
    elif variant == "exposure":
        gains = exposure_gains(C, train_idx, seed + 11)
        meta["demo_variant"] = {"name": variant}
        meta["exposure_gains"] = gains.tolist()
    elif variant == "distractor":
        transient = {i: distractor(i, true_c2w[i, :3, 3]) for i in distractor_views(train_idx)}
        meta["demo_variant"] = {"name": variant, "distractor": "person",
                                "height": PERSON_HEIGHT + 1.15 * PERSON_RADIUS, "width": 2 * PERSON_RADIUS}
        meta["distractor_views"] = sorted(transient)

    def loader(i: int) -> np.ndarray:
        prims = primitives()
        extra = transient.get(i, [])
        # A passer-by casts no shadow: its masks cover exactly what it hides.
        rgb, _ = render_view(cams, i, ss=ss[i], prims=prims + extra, casters=prims,
                             c2w=true_c2w[i])
        if gains is not None:
            rgb = np.clip(rgb * gains[i], 0, 1)
        return np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)

    def mask(i: int) -> np.ndarray:
        """uint8 H W (ImageSet's masks: 255 = use the pixel, 0 = ignore it): 0 where any
        sub-sample sees the distractor; all 255 in views without it."""
        wi, hi = int(cams.width[i]), int(cams.height[i])
        if i not in transient:
            return np.full((hi, wi), 255, np.uint8)
        prims = primitives()
        _, _, which = _render(cams, i, ss[i], prims + transient[i], prims, true_c2w[i])
        hit = (which >= len(prims)).reshape(hi, ss[i], wi, ss[i]).any((1, 3))
        return np.where(hit, 0, 255).astype(np.uint8)

    scene = Scene(
        name=NAME if variant is None else f"{NAME}-{variant}",
        format=NAME,
        root=Path(NAME if variant is None else f"{NAME}:{variant}"),
        cameras=cams,
        images=ImageSet([f"demo_{i:03d}.png" for i in range(C)], loader,
                        masks=mask if variant == "distractor" else None),
        train_idx=train_idx,
        test_idx=test_idx,
        normalization=Normalization(),
        points=pts.astype(np.float64),
        point_colors=cols,
        background=BACKGROUND,
        mesh=mesh(),
        meta=meta,
    )
    return scene
