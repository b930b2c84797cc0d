"""Model <-> plain arrays for the viewer: the live feed's activated tensors as a
renderable model, crop-box filtering (the box is `scenes.geometry.Box`), and the
browser-side splat arrays."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor

from splatlab.renderers.splat import SplatModel, sh_to_rgb
from splatlab.scenes.geometry import Box, covariances


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


def crop_model(model: SplatModel, crop: Optional[Box]) -> SplatModel:
    """The Gaussians whose means lie in `crop` (normalized frame), when it is enabled."""
    if crop is None or not crop.enabled:
        return model
    keep = crop.mask(model.means.detach())
    return SplatModel({k: v.detach()[keep] for k, v in model.splats.items()}, model.sh_degree)


def browser_splats(model: SplatModel) -> dict[str, np.ndarray]:
    """Arrays for viser's add_gaussian_splats: colour only (SH DC -> RGB), no view dependence."""
    with torch.no_grad():
        return {
            "centers": model.means.detach().float().cpu().numpy(),
            "covariances": covariances(
                model.quats.detach().double().cpu().numpy(), model.scales.detach().double().cpu().numpy()
            ).astype(np.float32),
            "rgbs": sh_to_rgb(model.splats["sh0"].detach()[:, 0]).clamp(0, 1).float().cpu().numpy(),
            "opacities": model.opacities.detach().float().cpu().numpy()[:, None],
        }


__all__ = ["model_from_activated", "crop_model", "browser_splats"]
