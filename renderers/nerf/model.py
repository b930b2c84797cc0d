"""`NerfRenderer`: the NeRF behind the renderer contract (renderers/base.py).

Two samplers (`arch["sampler"]`, resolved at build time and saved with the model):

- proposal (nerfacto): two proposal rounds (small hash-grid density fields) resample each
  ray towards surfaces, then the radiance field is evaluated at `nerf_samples` intervals and
  composited (rasterizer/volume.py). Training adds mip-NeRF 360's interlevel and distortion
  losses through `extra_losses`.
- occupancy (Instant-NGP, bounded scenes): rays march through the box at a fixed step,
  keeping samples in occupied cells of a grid that `train_render` refreshes from the field's
  density, and stop where they are opaque (occupancy.py); samples are composited packed.

The loop adds the photometric loss. No training loop lives here.
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

from splatlab.rasterizer.volume import composite, composite_packed, render_weights
from splatlab.renderers.base import Batch, ParamGroup, Rendered, Renderer

from .config import PRESETS, NerfConfig
from .field import DensityField, RadianceField, SceneBox
from .occupancy import OccupancyGrid, early_stop, march, march_step
from .sampler import (Rays, Spacing, box_near_far, camera_rays, distortion_loss, interlevel_loss,
                      pixel_grid, sample_pdf, uniform_bins)

# What `state_dict()["arch"]` holds: the primitives that rebuild the modules.
_ARCH_FROM_CFG = ("hash_levels", "hash_features", "hash_log2_size", "base_resolution", "hidden_dim",
                  "geo_features", "color_hidden_dim", "appearance_dim", "hash_backend", "bf16",
                  "proposal_samples_1", "proposal_samples_2", "nerf_samples", "proposal_levels",
                  "proposal_log2_size", "proposal_max_resolution_1", "proposal_max_resolution_2",
                  "proposal_anneal_steps", "render_chunk")
_OCC_KEYS = ("occ_resolution", "march_samples", "occ_threshold", "occ_update_every", "occ_warmup_steps",
             "occ_decay", "early_stop_eps")
_ARCH_FROM_CFG += _OCC_KEYS
# The fields' learning rate by sampler, for `lr` -1 (NerfConfig.lr says why).
DEFAULT_LR = {"proposal": 1e-3, "occupancy": 1e-2}
# Checkpoints from before the occupancy sampler lack its keys: they sampled with proposals.
_ARCH_DEFAULTS = {"sampler": "proposal", **{k: getattr(NerfConfig, k) for k in _OCC_KEYS}}


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
        self.arch = {**_ARCH_DEFAULTS, **arch}
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
        self.occupancy = a["sampler"] == "occupancy"
        # Occupancy: no proposal networks (nothing would train them), but a grid.
        self.proposals = torch.nn.ModuleList([] if self.occupancy else [
            DensityField(self.box, a["proposal_levels"], a["proposal_log2_size"], a[f"proposal_max_resolution_{k}"],
                         backend=a["hash_backend"], generator=generator)
            for k in (1, 2)
        ]).to(self._device)
        self.grid: Optional[OccupancyGrid] = None
        if self.occupancy:
            lo, hi = torch.tensor(a["lo"]), torch.tensor(a["hi"])
            self.grid = OccupancyGrid(lo, hi, a["occ_resolution"], a["occ_threshold"], a["occ_decay"],
                                      a["occ_warmup_steps"]).to(self._device)
            self.march_step, self.march_steps = march_step(lo, hi, a["march_samples"])
        self.samples_per_ray: Optional[float] = None  # of the last training step (occupancy)
        self.rays_last: Optional[int] = None  # rays of the last training step (occupancy)
        self.sample_budget = 0  # field samples a step aims at (0: fixed rays); setup_training
        self.max_rays = 0
        self.step = 0  # the last training step seen (proposal annealing)
        # A host float: reading box.radius back from the GPU every step would synchronise.
        self._radius = 0.5 * max(h - l for l, h in zip(a["lo"], a["hi"]))

    # ---- construction and state -------------------------------------------------------------
    @classmethod
    def build(cls, scene, cfg: NerfConfig, device) -> "NerfRenderer":
        bounded, lo, hi = scene_box(scene, cfg)
        radius = 0.5 * float(np.max(hi - lo))
        arch = {k: getattr(cfg, k) for k in _ARCH_FROM_CFG}
        if cfg.sampler == "occupancy" and not bounded:
            raise ValueError("the occupancy sampler needs a bounded scene (a box); this one is unbounded: "
                             "use --sampler proposal (or auto), or --scene-mode bounded")
        arch["sampler"] = cfg.sampler if cfg.sampler != "auto" else ("occupancy" if bounded else "proposal")
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
        if self.grid is not None:
            return {"field": self.field, "occupancy": self.grid}
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
        """Composite R rays. Returns rgb R 3, alpha R 1, depth R 1 (camera z), and for the
        proposal sampler the bins and weights of every round (for the losses)."""
        bg = None
        if background is not None:
            R = rays.origins.shape[0]
            bg = background.reshape(-1, 3).float().expand(R, 3) if background.numel() == 3 else background.reshape(R, 3)
        if self.occupancy:
            return self._render_marched(rays, image_idx, bg, train)
        return self._render_proposal(rays, image_idx, bg, train)

    def _render_marched(self, rays: Rays, image_idx: Optional[Tensor], bg: Optional[Tensor],
                        train: bool) -> dict[str, Any]:
        """Occupancy sampler: march, drop what lies behind opaque samples, then the field with
        gradients on the rest, composited packed. Three host syncs (the march's step count and the
        two packings)."""
        R = rays.origins.shape[0]
        a, step = self.arch, self.march_step
        near, far, hit = box_near_far(rays, self.box.lo, self.box.hi, a["near_plane"])
        ray_idx, t = march(rays, near, far, hit, self.grid, step, self.march_steps, jitter=train)
        with self._autocast():
            pts = rays.origins[ray_idx] + rays.dirs[ray_idx] * t[:, None]
            if a["early_stop_eps"] > 0 and ray_idx.numel() > 0:
                keep = early_stop(ray_idx, pts, R, self.field.density, step, a["early_stop_eps"])
                ray_idx, t, pts = ray_idx[keep], t[keep], pts[keep]
            sigma, rgb = self.field(pts, rays.dirs[ray_idx], None if image_idx is None else image_idx[ray_idx])
        if train:
            self.samples_per_ray = ray_idx.numel() / max(R, 1)  # a host count: no sync
            self.rays_last = R
        out = composite_packed(sigma.float(), rgb.float(), t - 0.5 * step, t + 0.5 * step, ray_idx, R, bg)
        return {"rgb": out.rgb, "alpha": out.alpha, "depth": out.depth * rays.z_per_t[:, None]}

    def _render_proposal(self, rays: Rays, image_idx: Optional[Tensor], bg: Optional[Tensor],
                         train: bool) -> dict[str, Any]:
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
        """R rays laid out as C=1, H=1, W=R; the proposal sampler's per-round bins and weights
        ride in extras. The occupancy grid is refreshed first every `occ_update_every` steps."""
        self.step = int(step)
        if self.grid is not None and step % max(int(self.arch["occ_update_every"]), 1) == 0:
            with self._autocast():
                self.grid.update(step, self.field.density, self.march_step)
        cams = batch.cameras
        i = batch.image_idx.to(self._device)
        c2w = cams.camtoworlds.to(self._device).float()[i]
        rays = camera_rays(c2w, cams.fx.to(self._device).float()[i], cams.fy.to(self._device).float()[i],
                           cams.cx.to(self._device).float()[i], cams.cy.to(self._device).float()[i],
                           batch.pixels.to(self._device).float())
        bg = batch.background if batch.background is not None else self.background
        o = self.render_rays(rays, i, None if bg is None else bg.to(self._device), train=True)
        R = rays.origins.shape[0]
        extras = {k: o[k] for k in ("bins", "weights", "prop_bins", "prop_weights") if k in o}
        return Rendered(o["rgb"].reshape(1, 1, R, 3), o["alpha"].reshape(1, 1, R, 1),
                        o["depth"].reshape(1, 1, R, 1), extras)

    # ---- training hooks -------------------------------------------------------------------------
    def field_lr(self, cfg: NerfConfig) -> float:
        """`cfg.lr`, or for -1 the sampler's default (DEFAULT_LR)."""
        return float(cfg.lr) if cfg.lr > 0 else DEFAULT_LR[self.arch["sampler"]]

    def param_groups(self, cfg: NerfConfig) -> list[ParamGroup]:
        field_params = [p for n, p in self.field.named_parameters() if not n.startswith("appearance.")]
        lr = self.field_lr(cfg)
        groups = [ParamGroup("field", field_params, lr, cfg.lr_final, cfg.warmup_steps)]
        if not self.occupancy:
            groups.append(ParamGroup("proposals", list(self.proposals.parameters()), lr, cfg.lr_final,
                                     cfg.warmup_steps))
        if self.field.appearance is not None:
            groups.append(ParamGroup("appearance", list(self.field.appearance.parameters()),
                                     cfg.lr_appearance, cfg.lr_final, cfg.warmup_steps))
        return groups

    def setup_training(self, cfg: NerfConfig, scene) -> None:
        self.loss_weights = (float(cfg.interlevel_weight), float(cfg.distortion_weight))
        if cfg.samples_per_batch < 0:
            raise ValueError(f"--samples-per-batch must be 0 (fixed rays) or positive, got {cfg.samples_per_batch}")
        self.sample_budget = int(cfg.samples_per_batch) if self.occupancy else 0
        self.max_rays = max(int(cfg.rays_per_batch), self.sample_budget)

    def rays_wanted(self, current: int) -> int:
        """Occupancy with `samples_per_batch`: the rays whose samples (at the last step's samples
        per ray) make the budget, as Instant-NGP sizes its batches, in [256, max(rays_per_batch,
        budget)] and rounded to 256 (fewer distinct allocation sizes)."""
        if not self.sample_budget or not self.samples_per_ray:
            return current
        n = self.sample_budget / self.samples_per_ray
        return int(min(max(round(n / 256) * 256, 256), self.max_rays))

    def extra_losses(self, step: int, out: Rendered, batch: Batch) -> dict[str, Tensor]:
        if self.occupancy:
            return {}
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
        s: dict[str, Any] = {"hash grid": f"{L} x 2^{int(round(math.log2(T)))}", "parameters": self.num_parameters()}
        if self.grid is not None:  # what rays_per_batch buys: samples per step = rays x samples/ray
            s["occupied"] = f"{100 * self.grid.occupied_fraction():.1f}%"
            if self.samples_per_ray is not None:
                s["samples/ray"] = f"{self.samples_per_ray:.1f}"
            if self.sample_budget and self.rays_last is not None:
                s["rays/step"] = self.rays_last
        return s

    def metrics(self) -> dict[str, Any]:
        return {"num_parameters": self.num_parameters(), "max_resolution": self.arch["max_resolution"],
                "scene_mode": "bounded" if self.box.bounded else "unbounded", "sampler": self.arch["sampler"]}

    def live_copy(self) -> "NerfRenderer":
        """A snapshot on the same device (no host round trip): the viewer renders it while
        the optimizers keep editing the original."""
        new = copy.copy(self)
        new.arch = dict(self.arch)
        with torch.no_grad():
            new.field, new.proposals = copy.deepcopy(self.field), copy.deepcopy(self.proposals)
            new.grid = copy.deepcopy(self.grid)  # the grid changes in place as training goes on
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


__all__ = ["DEFAULT_LR", "NerfRenderer", "auto_max_resolution", "scene_box"]
