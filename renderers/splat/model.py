"""The 3D Gaussian model: parameters, initialisation, and how to render it.

Parameters live in one `torch.nn.ParameterDict` named like gsplat's `simple_trainer`
(`means`, `scales` (log), `quats` (wxyz, unnormalized), `opacities` (logit), `sh0`
(N 1 3), `shN` (N K-1 3)) so gsplat's densification strategies operate on it directly.
No training loop lives here.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from splatlab.rasterizer import Backend, RenderMode, RenderOutput, rasterize
from splatlab.rasterizer.sh import SH_C0



def num_sh_bases(degree: int) -> int:
    return (degree + 1) ** 2


def rgb_to_sh(rgb: Tensor) -> Tensor:
    return (rgb - 0.5) / SH_C0


def sh_to_rgb(sh: Tensor) -> Tensor:
    return sh * SH_C0 + 0.5


def _knn_mean_dist(points: Tensor, k: int = 3, chunk: int = 4096) -> Tensor:
    """Mean distance to the k nearest other points (brute force, chunked)."""
    out = torch.empty(points.shape[0], dtype=points.dtype, device=points.device)
    for s in range(0, points.shape[0], chunk):
        d = torch.cdist(points[s : s + chunk], points)
        kk = min(k + 1, points.shape[0])
        vals = d.topk(kk, largest=False).values[:, 1:]  # drop self
        out[s : s + chunk] = vals.mean(-1) if vals.numel() else torch.ones_like(out[s : s + chunk])
    return out


class SplatModel(torch.nn.Module):
    def __init__(self, splats: dict[str, Tensor], sh_degree: int):
        super().__init__()
        self.splats = torch.nn.ParameterDict({k: torch.nn.Parameter(v) for k, v in splats.items()})
        self.sh_degree = int(sh_degree)  # the maximum degree the coefficients hold

    # ---- construction -------------------------------------------------------------
    @classmethod
    def from_points(
        cls,
        points: Float[Tensor, "N 3"],
        colors: Float[Tensor, "N 3"],
        sh_degree: int = 3,
        init_opacity: float = 0.1,
        init_scale: float = 1.0,
    ) -> "SplatModel":
        """Isotropic Gaussians at `points` (colours in [0,1]), sized by neighbour distance."""
        points = points.float()
        n = points.shape[0]
        dist = _knn_mean_dist(points).clamp_min(1e-7)
        scales = torch.log(dist * init_scale).unsqueeze(-1).repeat(1, 3)
        quats = torch.zeros(n, 4, device=points.device)
        quats[:, 0] = 1.0
        opac = torch.logit(torch.full((n,), init_opacity, device=points.device))
        sh = torch.zeros(n, num_sh_bases(sh_degree), 3, device=points.device)
        sh[:, 0] = rgb_to_sh(colors.float().clamp(0, 1))
        return cls(
            {"means": points, "scales": scales, "quats": quats, "opacities": opac,
             "sh0": sh[:, :1].contiguous(), "shN": sh[:, 1:].contiguous()},
            sh_degree,
        )

    @classmethod
    def random(
        cls, n: int, lo: Float[Tensor, "3"], hi: Float[Tensor, "3"], sh_degree: int = 3,
        generator: Optional[torch.Generator] = None, **kw,
    ) -> "SplatModel":
        """Uniform random points in the box [lo, hi] with random colours."""
        u = torch.rand(n, 3, generator=generator)
        pts = lo.float() + u * (hi.float() - lo.float())
        cols = torch.rand(n, 3, generator=generator)
        return cls.from_points(pts, cols, sh_degree, **kw)

    # ---- activated views ----------------------------------------------------------
    @property
    def num_gaussians(self) -> int:
        return int(self.splats["means"].shape[0])

    @property
    def means(self) -> Tensor:
        return self.splats["means"]

    @property
    def scales(self) -> Tensor:
        return torch.exp(self.splats["scales"])

    @property
    def opacities(self) -> Tensor:
        return torch.sigmoid(self.splats["opacities"])

    @property
    def quats(self) -> Tensor:
        return self.splats["quats"]

    @property
    def sh(self) -> Float[Tensor, "N K 3"]:
        return torch.cat([self.splats["sh0"], self.splats["shN"]], dim=1)

    def sh_upto(self, degree: int) -> Float[Tensor, "N K 3"]:
        """The SH coefficients a render at `degree` reads: no concatenation at degree 0
        and no unused higher bands (less memory traffic in the training loop)."""
        if degree <= 0:
            return self.splats["sh0"]
        k = num_sh_bases(degree)
        return torch.cat([self.splats["sh0"], self.splats["shN"][:, : k - 1]], dim=1)

    # ---- rendering ----------------------------------------------------------------
    def render(
        self,
        viewmats: Float[Tensor, "C 4 4"],
        Ks: Float[Tensor, "C 3 3"],
        width: int,
        height: int,
        *,
        sh_degree: Optional[int] = None,
        backgrounds: Optional[Float[Tensor, "C 3"]] = None,
        render_mode: RenderMode = "RGB",
        near_plane: float = 0.01,
        far_plane: float = 1e10,
        antialiased: bool = False,
        absgrad: bool = False,
        backend: Backend = "auto",
        filter_variance: Optional[Float[Tensor, " N"]] = None,
        activated: Optional[tuple[Tensor, Tensor]] = None,
        distributed: bool = False,
        isect_capacity=None,
    ) -> RenderOutput:
        """`filter_variance`: Mip-Splatting's per-Gaussian 3D filter (renderers/splat/antialias.py).
        `activated`: (self.scales, self.opacities) when the caller has them already.
        `distributed`: this model is one rank's shard; every rank renders its own cameras."""
        degree = self.sh_degree if sh_degree is None else min(int(sh_degree), self.sh_degree)
        scales, opacities = (self.scales, self.opacities) if activated is None else activated
        if filter_variance is not None:
            from .antialias import apply_3d_filter

            scales, opacities = apply_3d_filter(scales, opacities, filter_variance)
        return rasterize(
            self.means, self.quats, scales, opacities, self.sh_upto(degree),
            viewmats, Ks, width, height,
            near_plane=near_plane, far_plane=far_plane, sh_degree=degree,
            backgrounds=backgrounds, render_mode=render_mode, antialiased=antialiased,
            absgrad=absgrad, distributed=distributed, backend=backend, isect_capacity=isect_capacity,
        )

    # ---- (de)serialisation -------------------------------------------------------
    def state(self) -> dict:
        return {"sh_degree": self.sh_degree,
                "splats": {k: v.detach().cpu() for k, v in self.splats.items()}}

    @classmethod
    def from_state(cls, state: dict, device: torch.device | str = "cpu") -> "SplatModel":
        return cls({k: v.to(device) for k, v in state["splats"].items()}, state["sh_degree"])


def scene_init_points(points: Optional[np.ndarray], colors: Optional[np.ndarray],
                      lo: np.ndarray, hi: np.ndarray, n_random: int,
                      generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
    """The scene's own points (colours /255), or `n_random` uniform points in [lo, hi]."""
    if points is not None and len(points) > 0:
        pts = torch.as_tensor(np.asarray(points), dtype=torch.float32)
        if colors is None:
            cols = torch.full_like(pts, 0.5)
        else:
            cols = torch.as_tensor(np.asarray(colors), dtype=torch.float32) / 255.0
        return pts, cols
    u = torch.rand(n_random, 3, generator=generator)
    lo_t, hi_t = torch.as_tensor(lo, dtype=torch.float32), torch.as_tensor(hi, dtype=torch.float32)
    return lo_t + u * (hi_t - lo_t), torch.rand(n_random, 3, generator=generator)


__all__ = ["SplatModel", "num_sh_bases", "rgb_to_sh", "sh_to_rgb", "scene_init_points", "SH_C0"]
