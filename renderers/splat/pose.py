"""Learnable per-camera pose corrections (rotation and translation deltas).

Camera i renders from `camtoworld_i @ exp(xi_i)`: `xi_i` = (omega, v) is a twist in the
camera's own frame, mapped to a rigid transform by the exact SE(3) exponential, so every
refined pose is a proper rotation and translation whatever the optimizer does. `v` is
stored in units of the scene extent, so one learning rate suits rotation (radians) and
translation alike. Deltas start at zero (the given poses).
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor


def skew(w: Float[Tensor, "*B 3"]) -> Float[Tensor, "*B 3 3"]:
    x, y, z = w.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], -1).reshape(*w.shape[:-1], 3, 3)


def se3_exp(xi: Float[Tensor, "*B 6"]) -> Float[Tensor, "*B 4 4"]:
    """The SE(3) exponential of twists (omega, v): [[R, V v], [0, 1]] with R = exp([omega]x)
    (Rodrigues) and V the left Jacobian of SO(3). Taylor series near theta = 0 keep the
    value and gradient exact at the identity."""
    w, v = xi[..., :3], xi[..., 3:]
    theta2 = (w * w).sum(-1)[..., None, None]
    # Below theta = 0.1 the closed forms cancel badly in float32 (1 - cos, t - sin); their
    # series to theta^6 are exact there to float64 rounding.
    small = theta2 < 1e-2
    t2 = torch.where(small, torch.ones_like(theta2), theta2)  # safe for the large branch
    t = t2.sqrt()
    s1, s2, s3 = theta2, theta2 * theta2, theta2 * theta2 * theta2
    a = torch.where(small, 1 - s1 / 6 + s2 / 120 - s3 / 5040, torch.sin(t) / t)
    b = torch.where(small, 0.5 - s1 / 24 + s2 / 720 - s3 / 40320, (1 - torch.cos(t)) / t2)
    c = torch.where(small, 1 / 6 - s1 / 120 + s2 / 5040 - s3 / 362880, (t - torch.sin(t)) / (t2 * t))
    K = skew(w)
    K2 = K @ K
    eye = torch.eye(3, dtype=xi.dtype, device=xi.device).expand_as(K)
    R = eye + a * K + b * K2
    V = eye + b * K + c * K2
    top = torch.cat([R, (V @ v.unsqueeze(-1))], -1)
    bottom = torch.zeros(*xi.shape[:-1], 1, 4, dtype=xi.dtype, device=xi.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], -2)


class PoseDeltas(torch.nn.Module):
    """One twist per training camera; translation in units of `extent`."""

    def __init__(self, num_cameras: int, extent: float = 1.0):
        super().__init__()
        self.deltas = torch.nn.Parameter(torch.zeros(num_cameras, 6))
        self.extent = float(extent)

    def transforms(self, idx: Int[Tensor, " C"]) -> Float[Tensor, "C 4 4"]:
        xi = self.deltas[idx]
        scale = xi.new_tensor([1.0, 1.0, 1.0, self.extent, self.extent, self.extent])
        return se3_exp(xi * scale)

    def forward(self, camtoworlds: Float[Tensor, "C 4 4"], idx: Int[Tensor, " C"]) -> Float[Tensor, "C 4 4"]:
        """Refined camera-to-world matrices of training cameras `idx`."""
        return camtoworlds @ self.transforms(idx).to(camtoworlds.dtype)


def rigid_inverse(m: Float[Tensor, "*B 4 4"]) -> Float[Tensor, "*B 4 4"]:
    """Inverse of rigid transforms (R^T, -R^T t), exact and cheap."""
    R, t = m[..., :3, :3], m[..., :3, 3:]
    Rt = R.transpose(-1, -2)
    top = torch.cat([Rt, -Rt @ t], -1)
    return torch.cat([top, m[..., 3:, :]], -2)


def pose_errors(c2w: Float[Tensor, "C 4 4"], truth: Float[Tensor, "C 4 4"]) -> tuple[Tensor, Tensor]:
    """Per camera (rotation error in degrees, camera-centre distance)."""
    R = c2w[:, :3, :3].double().transpose(-1, -2) @ truth[:, :3, :3].double()
    cos = ((R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
    return torch.rad2deg(torch.arccos(cos)), (c2w[:, :3, 3].double() - truth[:, :3, 3].double()).norm(dim=-1)


__all__ = ["PoseDeltas", "pose_errors", "rigid_inverse", "se3_exp", "skew"]
