"""Model <-> plain arrays for the viewer: the live feed's activated tensors as a
renderable model, crop-box filtering, and the browser-side splat arrays."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from splatlab.renderers.common import box_corners, quat_to_rotmat
from splatlab.renderers.splat import SplatModel, sh_to_rgb


def model_from_activated(splats: dict[str, Tensor], sh_degree: int) -> SplatModel:
    """LiveFeed splats (activated: scales, opacities in [0, 1], sh N K 3) -> SplatModel.
    Inverting the activations costs one pass over N, done once per published version."""
    eps = 1e-6
    sh = splats["sh"]
    raw = {
        "means": splats["means"],
        "quats": splats["quats"],
        "scales": torch.log(splats["scales"].clamp_min(1e-12)),
        "opacities": torch.logit(splats["opacities"].clamp(eps, 1 - eps)),
        "sh0": sh[:, :1],
        "shN": sh[:, 1:],
    }
    return SplatModel({k: v.detach() for k, v in raw.items()}, sh_degree)


@dataclass(frozen=True)
class CropBox:
    """Axis-aligned box in the model's (normalized) frame; Gaussians whose means lie
    outside are hidden when `enabled`."""

    enabled: bool = False
    lo: tuple[float, float, float] = (-1.0, -1.0, -1.0)
    hi: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def to_json(self, normalization=None) -> dict:
        """The box in the normalized frame, plus (given the run's `Normalization`) the
        box in original dataset coordinates, the frame splat.ply and exports are in."""
        d = {"enabled": self.enabled, "frame": "normalized",
             "min": [float(v) for v in self.lo], "max": [float(v) for v in self.hi]}
        if normalization is not None:
            orig = normalization.invert_points(box_corners(self.lo, self.hi))
            # Exact when the normalization has no rotation (every loader today); else the
            # axis-aligned bounds of the rotated box.
            d["original"] = {"min": [float(v) for v in orig.min(0)], "max": [float(v) for v in orig.max(0)]}
        return d

    @classmethod
    def from_json(cls, d: dict) -> "CropBox":
        return cls(bool(d.get("enabled", False)), tuple(float(v) for v in d["min"]),
                   tuple(float(v) for v in d["max"]))

    def mask(self, means: Tensor) -> Tensor:
        lo = torch.as_tensor(self.lo, dtype=means.dtype, device=means.device)
        hi = torch.as_tensor(self.hi, dtype=means.dtype, device=means.device)
        return ((means >= lo) & (means <= hi)).all(-1)


def crop_model(model: SplatModel, crop: Optional[CropBox]) -> SplatModel:
    if crop is None or not crop.enabled:
        return model
    keep = crop.mask(model.means.detach())
    return SplatModel({k: v.detach()[keep] for k, v in model.splats.items()}, model.sh_degree)


def quats_scales_to_covariances(quats: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """N 4 (wxyz, any norm), N 3 scales -> N 3 3 covariances R diag(s^2) R^T."""
    R = quat_to_rotmat(quats)
    M = R * scales[:, None, :]
    return M @ M.transpose(0, 2, 1)


def browser_splats(model: SplatModel) -> dict[str, np.ndarray]:
    """Arrays for viser's add_gaussian_splats: colour only (SH DC -> RGB), no view dependence."""
    with torch.no_grad():
        return {
            "centers": model.means.detach().float().cpu().numpy(),
            "covariances": quats_scales_to_covariances(
                model.quats.detach().double().cpu().numpy(), model.scales.detach().double().cpu().numpy()
            ).astype(np.float32),
            "rgbs": sh_to_rgb(model.splats["sh0"].detach()[:, 0]).clamp(0, 1).float().cpu().numpy(),
            "opacities": model.opacities.detach().float().cpu().numpy()[:, None],
        }


__all__ = ["model_from_activated", "CropBox", "crop_model", "browser_splats", "quats_scales_to_covariances"]
