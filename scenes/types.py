"""The one typed Scene that every format loader produces.

Conventions (see rasterizer/CONVENTIONS.md): camera-to-world matrices use OpenCV camera
axes (+x right, +y down, +z forward), in the *normalized* scene frame. `Normalization`
maps original dataset coordinates to that frame, so exports can go back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Optional

import numpy as np
import torch
from jaxtyping import Float, Int, UInt8
from torch import Tensor

# Re-exported: loaders and callers have always found these here; they live in geometry.
from .errors import SceneError  # noqa: F401 - re-exported: callers find it here
from .geometry import Normalization, look_at  # noqa: F401


@dataclass
class Cameras:
    """C pinhole cameras (after any undistortion), OpenCV axes, in the normalized frame."""

    camtoworlds: Float[Tensor, "C 4 4"]
    fx: Float[Tensor, " C"]
    fy: Float[Tensor, " C"]
    cx: Float[Tensor, " C"]
    cy: Float[Tensor, " C"]
    width: Int[Tensor, " C"]
    height: Int[Tensor, " C"]
    # The model the dataset declared (e.g. "SIMPLE_RADIAL"), and its distortion
    # parameters (k1 k2 k3 k4 p1 p2, zeros where absent). Images handed out by
    # `ImageSet` are already undistorted to the pinhole intrinsics above.
    model: str = "PINHOLE"
    distortion: Optional[Float[Tensor, "C 6"]] = None

    def __len__(self) -> int:
        return int(self.camtoworlds.shape[0])

    def __getitem__(self, idx) -> "Cameras":
        if isinstance(idx, int):
            idx = [idx]
        idx = torch.as_tensor(idx, dtype=torch.long)
        return dataclasses.replace(
            self,
            camtoworlds=self.camtoworlds[idx],
            fx=self.fx[idx], fy=self.fy[idx], cx=self.cx[idx], cy=self.cy[idx],
            width=self.width[idx], height=self.height[idx],
            distortion=None if self.distortion is None else self.distortion[idx],
        )

    def to(self, device) -> "Cameras":
        return dataclasses.replace(
            self,
            **{
                f.name: getattr(self, f.name).to(device)
                for f in dataclasses.fields(self)
                if isinstance(getattr(self, f.name), Tensor)
            },
        )

    def viewmats(self) -> Float[Tensor, "C 4 4"]:
        """World-to-camera matrices (what the rasterizer takes)."""
        return torch.linalg.inv(self.camtoworlds)

    def Ks(self) -> Float[Tensor, "C 3 3"]:
        K = torch.zeros(len(self), 3, 3, dtype=self.fx.dtype, device=self.fx.device)
        K[:, 0, 0], K[:, 1, 1] = self.fx, self.fy
        K[:, 0, 2], K[:, 1, 2] = self.cx, self.cy
        K[:, 2, 2] = 1.0
        return K

    def scaled(self, factor: float) -> "Cameras":
        """Intrinsics for images resized by `factor` (e.g. 0.5 for half size)."""
        w = torch.round(self.width.double() * factor).long()
        h = torch.round(self.height.double() * factor).long()
        # Sizes may live on the host while the intrinsics are on a GPU (training cameras).
        dev = self.fx.device
        sx, sy = (w.double() / self.width.double()).to(dev), (h.double() / self.height.double()).to(dev)
        return dataclasses.replace(
            self,
            fx=(self.fx.double() * sx).to(self.fx.dtype), fy=(self.fy.double() * sy).to(self.fy.dtype),
            cx=(self.cx.double() * sx).to(self.cx.dtype), cy=(self.cy.double() * sy).to(self.cy.dtype),
            width=w, height=h,
        )


@dataclass
class Mesh:
    """A triangle mesh, in the *normalized* frame (the demo keeps its ground truth here)."""

    vertices: Float[np.ndarray, "V 3"]
    faces: Int[np.ndarray, "F 3"]


class ImageSet:
    """Lazily loaded, cached RGB images (uint8 H W 3), already undistorted and downscaled
    to match `Scene.cameras`. `loader(i)` does the real work and returns uint8 H W 3 or
    H W 4 (alpha kept; compositing happens here, with `background`). `masks(i)`, where the
    dataset has masks (nerfstudio `mask_path`, COLMAP `masks/`), returns uint8 H W processed
    like the image: 0 = ignore the pixel, 255 = use it."""

    def __init__(
        self,
        names: list[str],
        loader: Callable[[int], UInt8[np.ndarray, "H W _"]],
        background: Optional[tuple[float, float, float]] = None,
        cache: bool = True,
        masks: Optional[Callable[[int], UInt8[np.ndarray, "H W"]]] = None,
    ):
        self.names = list(names)
        self._loader = loader
        self._masks = masks
        self._mask_cache: dict[int, np.ndarray] = {}
        self.background = background
        self._cache: dict[int, np.ndarray] = {}
        self._use_cache = cache
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.names)

    def load_rgba(self, i: int) -> UInt8[np.ndarray, "H W _"]:
        with self._lock:
            hit = self._cache.get(i)
        if hit is not None:
            return hit
        img = self._loader(i)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=-1)
        if self._use_cache:
            with self._lock:
                self._cache[i] = img
        return img

    def __getitem__(self, i: int) -> UInt8[np.ndarray, "H W 3"]:
        img = self.load_rgba(i)
        if img.shape[-1] == 4:
            rgb = img[..., :3].astype(np.float32)
            a = img[..., 3:4].astype(np.float32) / 255.0
            bg = np.asarray(self.background if self.background is not None else (0.0, 0.0, 0.0), np.float32)
            img = np.clip(rgb * a + 255.0 * bg * (1.0 - a) + 0.5, 0, 255).astype(np.uint8)
        return img

    def alpha(self, i: int) -> Optional[UInt8[np.ndarray, "H W"]]:
        img = self.load_rgba(i)
        return img[..., 3] if img.shape[-1] == 4 else None

    @property
    def has_masks(self) -> bool:
        return self._masks is not None

    def mask(self, i: int) -> Optional[UInt8[np.ndarray, "H W"]]:
        """Image i's mask (0 = ignore, 255 = use), or None when the dataset has none."""
        if self._masks is None:
            return None
        with self._lock:
            hit = self._mask_cache.get(i)
        if hit is None:
            hit = self._masks(i)
            if self._use_cache:
                with self._lock:
                    self._mask_cache[i] = hit
        return hit


@dataclass
class Scene:
    """Everything a trainer, viewer or exporter needs to know about a capture."""

    name: str
    format: str  # "colmap" | "nerfstudio" | "blender" | "llff" | "demo" | "images"
    root: Path
    cameras: Cameras  # all images, indexed like `images`
    images: ImageSet
    train_idx: list[int]
    test_idx: list[int]
    normalization: Normalization = field(default_factory=Normalization)
    # Initial points (normalized frame) and their colours, where the format has them.
    points: Optional[Float[np.ndarray, "P 3"]] = None
    point_colors: Optional[UInt8[np.ndarray, "P 3"]] = None
    # Background colour the images were composited on (synthetic scenes), in [0, 1].
    background: Optional[tuple[float, float, float]] = None
    warnings: list[str] = field(default_factory=list)
    # Ground-truth geometry in the normalized frame, where known (the demo scene).
    mesh: Optional[Mesh] = None
    # Where the content lies (normalized frame, lo and hi corners), when the format says so
    # and has no points: random initial Gaussians go there instead of a box sized by the cameras.
    bounds: Optional[tuple[Float[np.ndarray, "3"], Float[np.ndarray, "3"]]] = None
    # Facts about the files as they are on disk, for `splatlab info` (plain JSON values):
    # "source_sizes" [[w, h], ...] per image before any undistortion/downscale,
    # "camera_models" {model: count}, "image_dir" the folder the pixels come from; where they
    # apply: "layout" (COLMAP: which folder layout was found, e.g. "dense/0"), "model_dir",
    # "masks" (the masks folder), "depth_files" (nerfstudio depth_file_path per image, or None;
    # not loaded), "load_args" (the format/images/colmap_path the scene was loaded with).
    meta: dict = field(default_factory=dict)

    @property
    def extent(self) -> float:
        """Radius of the camera centres around their mean (normalized frame), the scale
        that learning rates and densification thresholds are relative to."""
        centers = self.cameras.camtoworlds[:, :3, 3].double()
        return float((centers - centers.mean(0)).norm(dim=-1).max().clamp_min(1e-6))

    def split(self, name: str) -> list[int]:
        return {"train": self.train_idx, "test": self.test_idx}[name]

    def fingerprint(self) -> str:
        """A short stable id of the inputs (for caches)."""
        h = hashlib.sha1()
        h.update(str(self.root.resolve()).encode())
        h.update(self.cameras.camtoworlds.numpy().tobytes())
        for n in self.images.names:
            h.update(n.encode())
        return h.hexdigest()[:16]
