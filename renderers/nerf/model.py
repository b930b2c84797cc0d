"""`NerfRenderer`: the NeRF behind the renderer contract (renderers/base.py).

Per ray: two proposal rounds (small hash-grid density fields) resample the ray towards
surfaces, then the radiance field is evaluated at `nerf_samples` intervals and composited
(rasterizer/volume.py). Training adds the interlevel and distortion losses of mip-NeRF 360
through `extra_losses`; the loop adds the photometric loss. No training loop lives here.
"""

from __future__ import annotations

import contextlib
import copy
import math
from typing import Any, ClassVar, Optional

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from splatlab.rasterizer.volume import composite, render_weights
from splatlab.renderers.base import Batch, ParamGroup, Rendered, Renderer

from .config import PRESETS, NerfConfig
from .field import DensityField, RadianceField, SceneBox
from .sampler import (Rays, Spacing, box_near_far, camera_rays, distortion_loss, interlevel_loss,
                      pixel_grid, sample_pdf, uniform_bins)

# What `state_dict()["arch"]` holds: the primitives that rebuild the modules.
_ARCH_FROM_CFG = ("hash_levels", "hash_features", "hash_log2_size", "base_resolution", "hidden_dim",
                  "geo_features", "color_hidden_dim", "appearance_dim", "hash_backend", "bf16",
                  "proposal_samples_1", "proposal_samples_2", "nerf_samples", "proposal_levels",
                  "proposal_log2_size", "proposal_max_resolution_1", "proposal_max_resolution_2",
                  "proposal_anneal_steps", "render_chunk")


def scene_box(scene, cfg: NerfConfig) -> tuple[bool, np.ndarray, np.ndarray]:
    """(bounded, lo, hi) in the normalized frame.

    bounded: the scene's own bounds, else its points' box, else a cube around the
    cameras' look-at region; grown by `box_margin`. unbounded: the cube of the camera
    spread around the cameras' centre (nerfacto's normalisation), the contraction's unit."""
    bounded = cfg.scene_mode == "bounded" or (cfg.scene_mode == "auto" and scene.background is not None)
    centers = scene.cameras.camtoworlds[scene.train_idx, :3, 3].double().numpy()
    if bounded:
        if scene.bounds is not None:
            lo, hi = (np.asarray(b, np.float64) for b in scene.bounds)
        elif scene.points is not None and len(scene.points) >= 8:
            lo, hi = np.min(scene.points, 0), np.max(scene.points, 0)
        else:
            c = centers.mean(0)
            r = 0.5 * float(np.linalg.norm(centers - c, axis=-1).max())
            lo, hi = c - r, c + r
        pad = cfg.box_margin * float(np.linalg.norm(hi - lo))
        return True, lo - pad, hi + pad
    c = centers.mean(0)
    r = max(float(np.linalg.norm(centers - c, axis=-1).max()), 1e-3)
    return False, c - r, c + r


def auto_max_resolution(scene, lo: np.ndarray, hi: np.ndarray, bounded: bool, cap: int, base: int,
                        cells_per_pixel: float = 1.0) -> int:
    """`cells_per_pixel` grid cells per pixel footprint at the cameras' mean distance to the
    box centre: much finer cells cannot be seen, coarser ones blur. Unbounded: the foreground
    cube fills half of the contracted grid."""
    cams = scene.cameras[scene.train_idx]
    center = 0.5 * (lo + hi)
    dist = float(np.linalg.norm(cams.camtoworlds[:, :3, 3].double().numpy() - center, axis=-1).mean())
    focal = float(torch.cat([cams.fx, cams.fy]).double().mean())
    footprint = max(dist, 1e-6) / max(focal, 1e-6)
    side = float(np.max(hi - lo))
    res = cells_per_pixel * (side / footprint if bounded else 2.0 * side / footprint)
    return int(min(max(res, 2 * base), cap))


class NerfRenderer(Renderer):
    name: ClassVar[str] = "nerf"
    config_cls: ClassVar[type] = NerfConfig
    presets: ClassVar[dict] = PRESETS
    batch_kind: ClassVar[str] = "rays"
    exports: ClassVar[tuple[str, ...]] = ("mesh", "points", "cameras")

    def __init__(self, arch: dict[str, Any], device: torch.device | str = "cpu",
                 generator: Optional[torch.Generator] = None):
        self.arch = dict(arch)
        a = self.arch
        self._device = torch.device(device)
        self.box = SceneBox(a["bounded"], torch.tensor(a["lo"]), torch.tensor(a["hi"])).to(self._device)
        self.field = RadianceField(
            self.box, levels=a["hash_levels"], features=a["hash_features"],
            log2_table_size=a["hash_log2_size"], base_resolution=a["base_resolution"],
            max_resolution=a["max_resolution"], hidden=a["hidden_dim"], geo_features=a["geo_features"],
            color_hidden=a["color_hidden_dim"], num_images=a["num_images"],
            appearance_dim=a["appearance_dim"], backend=a["hash_backend"], generator=generator,
        ).to(self._device)
        self.proposals = torch.nn.ModuleList([
            DensityField(self.box, a["proposal_levels"], a["proposal_log2_size"], a[f"proposal_max_resolution_{k}"],
                         backend=a["hash_backend"], generator=generator)
            for k in (1, 2)
        ]).to(self._device)
        self.step = 0  # the last training step seen (proposal annealing)
        # A host float: reading box.radius back from the GPU every step would synchronise.
        self._radius = 0.5 * max(h - l for l, h in zip(a["lo"], a["hi"]))

    # ---- construction and state -------------------------------------------------------------
    @classmethod
    def build(cls, scene, cfg: NerfConfig, device) -> "NerfRenderer":
        bounded, lo, hi = scene_box(scene, cfg)
        radius = 0.5 * float(np.max(hi - lo))
        arch = {k: getattr(cfg, k) for k in _ARCH_FROM_CFG}
        if arch["appearance_dim"] < 0:  # auto: lighting varies in real captures, not in synthetic ones
            arch["appearance_dim"] = 0 if bounded else 32
        arch.update(
            bounded=bounded, lo=[float(v) for v in lo], hi=[float(v) for v in hi],
            max_resolution=auto_max_resolution(scene, lo, hi, bounded, cfg.max_resolution, cfg.base_resolution,
                                               cfg.cells_per_pixel),
            num_images=len(scene.train_idx),
            background=None if scene.background is None else [float(v) for v in scene.background],
            near_plane=float(cfg.near_plane * radius), far_plane=float(cfg.far_plane * radius),
        )
        return cls(arch, device, torch.Generator().manual_seed(cfg.seed))

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"field": self.field, "proposals": self.proposals}

    def state_dict(self) -> dict[str, Any]:
        return {"arch": dict(self.arch), "step": int(self.step),
                "params": {k: {n: t.detach().cpu() for n, t in m.state_dict().items()}
                           for k, m in self.modules().items()}}

    @classmethod
    def from_state(cls, state: dict[str, Any], device: torch.device | str = "cpu") -> "NerfRenderer":
        r = cls(state["arch"], device)
        for k, m in r.modules().items():
            m.load_state_dict(state["params"][k])
        r.step = int(state.get("step", 0))
        return r

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def background(self) -> Optional[Tensor]:
        bg = self.arch.get("background")
        return None if bg is None else torch.tensor(bg, dtype=torch.float32, device=self._device)

    # ---- rendering ------------------------------------------------------------------------------
    def _autocast(self):
        if self._device.type == "cuda" and self.arch["bf16"]:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _spacing(self, rays: Rays) -> tuple[Spacing, Optional[Tensor]]:
        R = rays.origins.shape[0]
        if self.box.bounded:
            near, far, hit = box_near_far(rays, self.box.lo, self.box.hi, self.arch["near_plane"])
            return Spacing(near, far, None), hit
        near = torch.full((R,), self.arch["near_plane"], device=rays.origins.device)
        far = torch.full((R,), self.arch["far_plane"], device=rays.origins.device)
        return Spacing(near, far, self._radius), None

    def _anneal(self, train: bool) -> float:
        """nerfacto's schedule: proposal weights ** a with a rising from 0 (flat) to 1."""
        n = self.arch["proposal_anneal_steps"]
        if not train or n <= 0:
            return 1.0
        x = min(self.step / n, 1.0)
        return (10 * x) / (9 * x + 1)

    def render_rays(self, rays: Rays, image_idx: Optional[Tensor], background: Optional[Tensor],
                    train: bool) -> dict[str, Any]:
        """Composite R rays. Returns rgb R 3, alpha R 1, depth R 1 (camera z), and the bins
        and weights of every round (for the losses)."""
        R, dev = rays.origins.shape[0], rays.origins.device
        spacing, _ = self._spacing(rays)
        counts = [self.arch["proposal_samples_1"], self.arch["proposal_samples_2"], self.arch["nerf_samples"]]
        bins = uniform_bins(R, counts[0], jitter=train, device=dev)
        prop_bins, prop_weights = [], []
        anneal = self._anneal(train)
        with self._autocast():
            for k, prop in enumerate(self.proposals):
                t = spacing.to_t(bins)
                pts = rays.origins[:, None] + rays.dirs[:, None] * (0.5 * (t[:, 1:] + t[:, :-1]))[..., None]
                sigma = prop.density(pts.reshape(-1, 3)).float().reshape(R, -1)
                w, _ = render_weights(sigma, t[:, 1:] - t[:, :-1])
                prop_bins.append(bins)
                prop_weights.append(w)
                bins = sample_pdf(bins, w.detach().clamp_min(0) ** anneal, counts[k + 1], jitter=train)
            t = spacing.to_t(bins)
            mids = 0.5 * (t[:, 1:] + t[:, :-1])
            S = mids.shape[1]
            pts = rays.origins[:, None] + rays.dirs[:, None] * mids[..., None]
            dirs = rays.dirs[:, None].expand(-1, S, -1).reshape(-1, 3)
            idx = None if image_idx is None else image_idx[:, None].expand(-1, S).reshape(-1)
            sigma, rgb = self.field(pts.reshape(-1, 3), dirs, idx)
        bg = None
        if background is not None:
            bg = background.reshape(-1, 3).float().expand(R, 3) if background.numel() == 3 else background.reshape(R, 3)
        out = composite(sigma.float().reshape(R, S), rgb.float().reshape(R, S, 3), t[:, :-1], t[:, 1:], bg)
        return {"rgb": out.rgb, "alpha": out.alpha, "depth": out.depth * rays.z_per_t[:, None],
                "bins": bins, "weights": out.weights, "prop_bins": prop_bins, "prop_weights": prop_weights}

    def render(self, cameras, *, background: Optional[Float[Tensor, "C 3"]] = None,
               with_depth: bool = False) -> Rendered:
        """Whole images, in chunks of `render_chunk` rays, without gradients. Test and novel
        views use the mean appearance embedding."""
        cams = cameras.to(self._device)
        rgbs, alphas, depths = [], [], []
        chunk = max(int(self.arch["render_chunk"]), 1)
        for c in range(len(cams)):
            w, h = int(cams.width[c]), int(cams.height[c])
            pix = pixel_grid(w, h, self._device)
            bg = self.background if background is None else background[c]
            parts: dict[str, list] = {"rgb": [], "alpha": [], "depth": []}
            with torch.no_grad():
                for s in range(0, pix.shape[0], chunk):
                    p = pix[s : s + chunk]
                    n = p.shape[0]
                    rays = camera_rays(cams.camtoworlds[c : c + 1].float().expand(n, 4, 4),
                                       cams.fx[c].float().expand(n), cams.fy[c].float().expand(n),
                                       cams.cx[c].float().expand(n), cams.cy[c].float().expand(n), p)
                    o = self.render_rays(rays, None, bg, train=False)
                    for k in parts:
                        parts[k].append(o[k])
            rgbs.append(torch.cat(parts["rgb"]).reshape(h, w, 3))
            alphas.append(torch.cat(parts["alpha"]).reshape(h, w, 1))
            depths.append(torch.cat(parts["depth"]).reshape(h, w, 1))
        return Rendered(torch.stack(rgbs).clamp(0, 1), torch.stack(alphas),
                        torch.stack(depths) if with_depth else None)

    def train_render(self, batch: Batch, step: int) -> Rendered:
        """R rays laid out as C=1, H=1, W=R; the per-round bins and weights ride in extras."""
        self.step = int(step)
        cams = batch.cameras
        i = batch.image_idx.to(self._device)
        c2w = cams.camtoworlds.to(self._device).float()[i]
        rays = camera_rays(c2w, cams.fx.to(self._device).float()[i], cams.fy.to(self._device).float()[i],
                           cams.cx.to(self._device).float()[i], cams.cy.to(self._device).float()[i],
                           batch.pixels.to(self._device).float())
        bg = batch.background if batch.background is not None else self.background
        o = self.render_rays(rays, i, None if bg is None else bg.to(self._device), train=True)
        R = rays.origins.shape[0]
        extras = {k: o[k] for k in ("bins", "weights", "prop_bins", "prop_weights")}
        return Rendered(o["rgb"].reshape(1, 1, R, 3), o["alpha"].reshape(1, 1, R, 1),
                        o["depth"].reshape(1, 1, R, 1), extras)

    # ---- training hooks -------------------------------------------------------------------------
    def param_groups(self, cfg: NerfConfig) -> list[ParamGroup]:
        field_params = [p for n, p in self.field.named_parameters() if not n.startswith("appearance.")]
        groups = [
            ParamGroup("field", field_params, cfg.lr, cfg.lr_final, cfg.warmup_steps),
            ParamGroup("proposals", list(self.proposals.parameters()), cfg.lr, cfg.lr_final, cfg.warmup_steps),
        ]
        if self.field.appearance is not None:
            groups.append(ParamGroup("appearance", list(self.field.appearance.parameters()),
                                     cfg.lr_appearance, cfg.lr_final, cfg.warmup_steps))
        return groups

    def setup_training(self, cfg: NerfConfig, scene) -> None:
        self.loss_weights = (float(cfg.interlevel_weight), float(cfg.distortion_weight))

    def extra_losses(self, step: int, out: Rendered, batch: Batch) -> dict[str, Tensor]:
        w_inter, w_dist = getattr(self, "loss_weights", (1.0, 0.002))
        e = out.extras
        losses = {}
        if w_inter > 0:
            losses["interlevel"] = w_inter * sum(
                interlevel_loss(e["bins"], e["weights"], b, w) for b, w in zip(e["prop_bins"], e["prop_weights"]))
        if w_dist > 0:
            losses["distortion"] = w_dist * distortion_loss(e["bins"], e["weights"])
        return losses

    # ---- reporting ------------------------------------------------------------------------------
    def num_parameters(self) -> int:
        return sum(p.numel() for m in self.modules().values() for p in m.parameters())

    def stats(self) -> dict[str, Any]:
        L, T, F = self.field.grid.table.shape
        return {"hash grid": f"{L} x 2^{int(round(math.log2(T)))}", "parameters": self.num_parameters()}

    def metrics(self) -> dict[str, Any]:
        return {"num_parameters": self.num_parameters(), "max_resolution": self.arch["max_resolution"],
                "scene_mode": "bounded" if self.box.bounded else "unbounded"}

    def live_copy(self) -> "NerfRenderer":
        """A snapshot on the same device (no host round trip): the viewer renders it while
        the optimizers keep editing the original."""
        new = copy.copy(self)
        new.arch = dict(self.arch)
        with torch.no_grad():
            new.field, new.proposals = copy.deepcopy(self.field), copy.deepcopy(self.proposals)
        for m in (new.field, new.proposals):
            for p in m.parameters():
                p.grad = None
                p.requires_grad_(False)
        return new

    # ---- geometry (mesh export) -----------------------------------------------------------------
    def mesh_box(self) -> tuple[np.ndarray, np.ndarray]:
        """The region a mesh is extracted from (normalized frame): the box, or the
        uncontracted foreground cube of an unbounded scene."""
        return np.asarray(self.arch["lo"], np.float64), np.asarray(self.arch["hi"], np.float64)

    @torch.no_grad()
    def density_at(self, x: Float[Tensor, "N 3"], chunk: int = 1 << 18) -> Float[Tensor, " N"]:
        """The radiance field's density at points (normalized frame), in chunks."""
        out = []
        with self._autocast():
            for s in range(0, x.shape[0], chunk):
                out.append(self.field.density(x[s : s + chunk].to(self._device).float()).float())
        return torch.cat(out) if out else x.new_zeros(0)

    @torch.no_grad()
    def color_at(self, x: Float[Tensor, "N 3"], normals: Float[Tensor, "N 3"], chunk: int = 1 << 18) -> Float[Tensor, "N 3"]:
        """Colour seen looking against `normals` (towards the surface), mean appearance."""
        out = []
        with self._autocast():
            for s in range(0, x.shape[0], chunk):
                _, rgb = self.field(x[s : s + chunk].to(self._device).float(),
                                    -normals[s : s + chunk].to(self._device).float())
                out.append(rgb.float())
        return torch.cat(out) if out else x.new_zeros(0, 3)


__all__ = ["NerfRenderer", "auto_max_resolution", "scene_box"]
