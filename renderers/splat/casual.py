"""What the splat renderer does for casual captures (issue 12), in one object it calls
from its hooks: per-training-image appearance and pose corrections applied from
`Batch.image_idx`, the Mip-Splatting 3D filter kept in step with the Gaussians, and the
Gaussian cap. The training loop knows none of this; it sees parameter groups, extra
losses and renders.

Pose refinement default (`--pose-opt` unset): on where poses are known to be rough,
off where they come from a full SfM solve. Rough: nerfstudio `transforms.json` (phone
apps such as Polycam, Record3D, KIRI, or instant-ngp exports), video frames posed by
`splatlab process` (its process.json says `"kind": "video"`), and any scene whose loader
marks `meta["poses"] = "rough"` (`demo:noisy-poses`). COLMAP, Blender, LLFF and the
plain demo are taken as precise.

Test views are never corrected: no pose or colour is fitted to a test image. They
render from their given poses at the scene's own (average) appearance, so a reported
test PSNR is what a user rendering the model sees. Refined training poses are written to
the run (`refined_poses.json`), which exports and the viewer read in place of the
dataset's poses.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Optional

import torch
from jaxtyping import Float, Int
from torch import Tensor

from splatlab.renderers.base import ParamGroup

from .antialias import apply_3d_filter, filter_variance, sampling_intervals
from .appearance import make_appearance
from .pose import PoseDeltas, rigid_inverse

REFINED_POSES = "refined_poses.json"


def rough_poses(scene) -> tuple[bool, str]:
    """(whether the scene's poses are rough, why): the `--pose-opt` default."""
    if scene.meta.get("poses") == "rough":
        return True, "the scene marks its poses as rough"
    if scene.format == "nerfstudio":
        return True, "transforms.json poses (phone apps, other tools) are often rough"
    proc = Path(str(scene.root)) / "process.json"
    if proc.is_file():
        try:
            kind = json.loads(proc.read_text()).get("kind")
        except (OSError, ValueError, AttributeError):
            kind = None
        if kind == "video":
            return True, "video frames (rolling shutter, motion blur)"
    return False, f"{scene.format} poses come from a full solve"


class Casual:
    """Per-training-image corrections and the 3D filter of one splat model.

    `image_idx` values index the training views (0 .. num_train-1), as `Batch.image_idx`.
    """

    def __init__(self, cfg, num_train: int, extent: float, device: torch.device,
                 pose_opt: bool, antialias: bool):
        self.cfg = cfg
        self.appearance = make_appearance(cfg.appearance, num_train, cfg.bilateral_grid_xy,
                                          cfg.bilateral_grid_guidance)
        if self.appearance is not None:
            self.appearance.to(device)
        self.poses = PoseDeltas(num_train, extent).to(device) if pose_opt else None
        self.antialias = antialias
        self.train_cameras = None  # Cameras of the training views, for the 3D filter

    # ---- per-image corrections -------------------------------------------------------
    def refine_cameras(self, cameras, image_idx: Int[Tensor, " C"]):
        """Training cameras `cameras` (views `image_idx`) at their refined poses."""
        if self.poses is None:
            return cameras
        idx = image_idx.to(self.poses.deltas.device)
        return dataclasses.replace(cameras, camtoworlds=self.poses(cameras.camtoworlds, idx))

    def correct_colors(self, rgb: Float[Tensor, "C H W 3"], image_idx: Int[Tensor, " C"]) -> Tensor:
        if self.appearance is None:
            return rgb
        return self.appearance(rgb, image_idx.to(rgb.device))

    def param_groups(self) -> list[ParamGroup]:
        cfg, groups = self.cfg, []
        if self.appearance is not None:
            groups.append(ParamGroup("appearance", [self.appearance.deltas], cfg.appearance_lr,
                                     lr_final=0.01, warmup_steps=cfg.appearance_warmup))
        if self.poses is not None:
            groups.append(ParamGroup("poses", [self.poses.deltas], cfg.pose_opt_lr, lr_final=0.01,
                                     warmup_steps=cfg.pose_opt_warmup, weight_decay=cfg.pose_opt_reg))
        return groups

    def losses(self) -> dict[str, Tensor]:
        if self.appearance is None or self.cfg.appearance != "bilateral":
            return {}
        return {"bilateral_tv": self.cfg.bilateral_tv_weight * self.appearance.regularizer()}

    def refined_camtoworlds(self) -> Optional[Tensor]:
        """C 4 4 refined poses of all training views (normalized frame), or None."""
        if self.poses is None or self.train_cameras is None:
            return None
        with torch.no_grad():
            c2w = self.train_cameras.camtoworlds.to(self.poses.deltas.device)
            return self.poses(c2w, torch.arange(len(c2w), device=c2w.device)).cpu()

    # ---- the 3D filter -----------------------------------------------------------------
    @torch.no_grad()
    def filter_variance(self, means: Float[Tensor, "N 3"]) -> Optional[Tensor]:
        """Per-Gaussian variance of the 3D filter from the training views (refined poses)."""
        if not self.antialias or self.train_cameras is None:
            return None
        cams = self.train_cameras.to(means.device)
        c2w = self.refined_camtoworlds()
        c2w = cams.camtoworlds if c2w is None else c2w.to(means.device)
        iv = sampling_intervals(means.detach(), rigid_inverse(c2w), cams.Ks(),
                                cams.width.tolist(), cams.height.tolist())
        return filter_variance(iv)

    # ---- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        s: dict[str, Any] = {}
        if self.appearance is not None:
            s["appearance"] = self.appearance.deltas.detach().cpu()
        if self.poses is not None:
            s["poses"] = self.poses.deltas.detach().cpu()
        return s

    def load_state_dict(self, s: dict[str, Any]) -> None:
        with torch.no_grad():
            if self.appearance is not None and s.get("appearance") is not None:
                self.appearance.deltas.copy_(s["appearance"])
            if self.poses is not None and s.get("poses") is not None:
                self.poses.deltas.copy_(s["poses"])


def filtered(scales: Tensor, opacities: Tensor, variance: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """Activated (scales, opacities) with the 3D filter applied where there is one."""
    if variance is None:
        return scales, opacities
    return apply_3d_filter(scales, opacities, variance)


@torch.no_grad()
def baked_model(model, variance: Optional[Tensor]):
    """A SplatModel with the 3D filter folded into its scales and opacities (for files
    that other renderers read, which know nothing of the filter)."""
    from .model import SplatModel

    if variance is None:
        return model
    scales, opac = apply_3d_filter(model.scales, model.opacities, variance)
    splats = {k: v.detach() for k, v in model.splats.items()}
    splats["scales"] = torch.log(scales)
    splats["opacities"] = torch.logit(opac.clamp(1e-6, 1 - 1e-6))
    return SplatModel(splats, model.sh_degree)


__all__ = ["Casual", "REFINED_POSES", "baked_model", "filtered", "rough_poses"]
