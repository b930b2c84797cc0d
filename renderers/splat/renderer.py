"""`SplatRenderer`: 3D Gaussian splatting behind the renderer contract (renderers/base.py).

It wraps a `SplatModel` (the parameters, named as gsplat's strategies expect) and, while
training, a densification strategy whose running state checkpoints with the model, and
the casual-capture pieces (casual.py): per-image appearance and pose corrections applied
from `Batch.image_idx`, the antialiased mode with its 3D filter, the Gaussian cap.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from splatlab.rasterizer.optim import hand_visibility
from splatlab.renderers.base import Batch, ParamGroup, Rendered, Renderer

from .casual import REFINED_POSES, Casual, baked_model, rough_poses
from .config import PRESETS, SplatConfig
from .model import SplatModel, scene_init_points, sh_to_rgb


# SPLATLAB_ISECT=capacity: training renders intersect tiles without the per-step host read
# (rasterizer/isect.py); "exact" (the default) keeps gsplat's.
ISECT_ENV = "SPLATLAB_ISECT"


def init_model(cfg: SplatConfig, scene, extent: float, device) -> SplatModel:
    """From the scene's points, or `init_num_points` uniform in a box of the scene's size."""
    g = torch.Generator().manual_seed(cfg.seed)
    half = cfg.init_extent * extent
    lo, hi = (np.full(3, -half), np.full(3, half)) if scene.bounds is None else scene.bounds
    pts, cols = scene_init_points(scene.points, scene.point_colors, lo, hi,
                                  cfg.init_num_points, generator=g)
    if 0 < cfg.init_max_points < len(pts):
        keep = torch.randperm(len(pts), generator=g)[: cfg.init_max_points]
        pts, cols = pts[keep], cols[keep]
    return SplatModel.from_points(pts.to(device), cols.to(device), cfg.sh_degree,
                                  init_opacity=cfg.init_opacity, init_scale=cfg.init_scale)


def _state_to(state: dict[str, Any], device) -> dict[str, Any]:
    """A strategy state with its tensors moved (to "cpu" for a checkpoint)."""
    return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in state.items()}


def scene_extent(scene) -> float:
    """gsplat's scene_scale: the camera spread, with a margin."""
    return scene.extent * 1.1


class SplatRenderer(Renderer):
    name: ClassVar[str] = "splat"
    config_cls: ClassVar[type] = SplatConfig
    presets: ClassVar[dict] = PRESETS
    batch_kind: ClassVar[str] = "image"
    exports: ClassVar[tuple[str, ...]] = ("ply", "splat", "ply-compressed", "spz", "points", "mesh",
                                          "cameras", "html")
    file_suffixes: ClassVar[tuple[str, ...]] = (".ply", ".spz")

    def __init__(self, model: SplatModel, *, render_sh_degree: Optional[int] = None,
                 near_plane: float = 0.01, far_plane: float = 1e10, antialias: bool = False,
                 filter_variance: Optional[Tensor] = None):
        self.model = model
        self.render_sh_degree = render_sh_degree  # None: the model's full degree
        self.near_plane, self.far_plane = near_plane, far_plane
        # --antialias: gsplat's antialiased mode and the 3D filter's per-Gaussian variance,
        # part of the model (every render uses them, so they are saved with it).
        self.antialias = antialias
        self.filter_variance = filter_variance
        self.casual: Optional[Casual] = None  # training only (setup_training)
        self._casual_state: dict = {}  # checkpointed corrections waiting for setup_training
        self._cap = 1 << 62
        # Training state (setup_training); a resumed strategy state waits here until then.
        self._cfg: Optional[SplatConfig] = None
        self._strategy = None
        self._ops = None  # the strategy module (loads gsplat's strategy classes), set up for training
        self._strategy_state: Optional[dict] = None
        self._extent = 1.0
        self._checked = False
        self._views: dict[int, tuple] = {}  # training Cameras -> what a render needs of them
        self._shard: Optional[tuple[int, int]] = None  # (rank, processes) when sharded (shard.py)
        self._isect = None  # training renders' IsectCapacity (SPLATLAB_ISECT=capacity, CUDA)

    # ---- construction and state -------------------------------------------------------
    @classmethod
    def build(cls, scene, cfg: SplatConfig, device) -> "SplatRenderer":
        return cls(init_model(cfg, scene, scene_extent(scene), device))

    def state_dict(self) -> dict[str, Any]:
        state = self.model.state()  # {"sh_degree", "splats"}: the previous checkpoint's "model"
        if self._strategy_state is not None:
            state["strategy_state"] = _state_to(self._strategy_state, "cpu")
        state["antialias"] = bool(self.antialias)
        if self.filter_variance is not None:
            state["filter_variance"] = self.filter_variance.detach().cpu()
        corrections = self.casual.state_dict() if self.casual is not None else self._casual_state
        if corrections:
            state["corrections"] = corrections
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any], device="cpu") -> "SplatRenderer":
        fv = state.get("filter_variance")
        r = cls(SplatModel.from_state(state, device), antialias=bool(state.get("antialias", False)),
                filter_variance=None if fv is None else fv.to(device))
        if state.get("strategy_state") is not None:
            r._strategy_state = _state_to(state["strategy_state"], r.device)
        r._casual_state = dict(state.get("corrections") or {})
        return r

    @classmethod
    def from_file(cls, path: Path, device="cpu") -> "SplatRenderer":
        """A 3DGS PLY (INRIA, gsplat, nerfstudio, splatlab layouts) or an SPZ."""
        from .io import read_ply, read_spz

        read = read_spz if Path(path).suffix.lower() == ".spz" else read_ply
        return cls(read(path).to(device))

    @property
    def device(self) -> torch.device:
        return self.model.means.device

    # ---- rendering ---------------------------------------------------------------------
    def _render(self, cameras, background, with_depth: bool, sh_degree: Optional[int],
                absgrad: bool = False):
        # Sizes first, from wherever they live (the training sampler keeps them on the host,
        # so reading them never waits for the GPU); inv_ex: no error check, no sync.
        width, height = int(cameras.width[0]), int(cameras.height[0])
        if cameras.camtoworlds.device != self.device:
            cameras = cameras.to(self.device)
        viewmats = torch.linalg.inv_ex(cameras.camtoworlds).inverse
        return self.model.render(
            viewmats, cameras.Ks(), width, height,
            sh_degree=sh_degree, backgrounds=background,
            render_mode="RGB+ED" if with_depth else "RGB",
            near_plane=self.near_plane, far_plane=self.far_plane, absgrad=absgrad,
            antialiased=self.antialias, filter_variance=self.filter_variance,
            distributed=self._shard is not None,
        )

    @staticmethod
    def _rendered(out, with_depth: bool) -> Rendered:
        return Rendered(rgb=out.rgb, alpha=out.alphas,
                        depth=out.colors[..., 3:4] if with_depth else None, extras={"info": out.info})

    def render(self, cameras, *, background: Optional[Float[Tensor, "C 3"]] = None,
               with_depth: bool = False) -> Rendered:
        """Cameras of one image size (the rasterizer renders a batch at one W x H). A sharded
        renderer renders collectively: every rank calls it, each with its own cameras."""
        out = self._render(cameras, background, with_depth, self.render_sh_degree)
        return self._rendered(out, with_depth)

    def _train_view(self, cameras) -> tuple:
        """(cameras on the device, viewmats or None, Ks, width, height) of a training
        sampler's Cameras, computed once per Cameras object (the sampler hands the same one
        for a view every epoch): no per-step matrix inverse, Ks assembly or size read.
        viewmats is None when poses are refined (they change every step)."""
        hit = self._views.get(id(cameras))
        if hit is not None and hit[0] is cameras:
            return hit[1:]
        if len(self._views) > 4096:  # not a sampler's fixed views: do not grow without bound
            self._views.clear()
        width, height = int(cameras.width[0]), int(cameras.height[0])
        cams = cameras if cameras.camtoworlds.device == self.device else cameras.to(self.device)
        viewmats = None if self.casual.poses is not None else torch.linalg.inv_ex(cams.camtoworlds).inverse
        hit = (cameras, cams, viewmats, cams.Ks(), width, height)
        self._views[id(cameras)] = hit
        return hit[1:]

    def train_render(self, batch: Batch, step: int) -> Rendered:
        """The training views at their refined poses, their renders under their own colour
        correction (both per `batch.image_idx`, when those options are on)."""
        cfg = self._cfg
        degree = min(step // max(cfg.sh_degree_interval, 1), cfg.sh_degree)
        cams, viewmats, Ks, width, height = self._train_view(batch.cameras)
        if viewmats is None:
            refined = self.casual.refine_cameras(cams, batch.image_idx)
            viewmats = torch.linalg.inv_ex(refined.camtoworlds).inverse
        # Activated once: the render and the regularisers (extra_losses) share them.
        activated = (self.model.scales, self.model.opacities)
        out = self.model.render(
            viewmats, Ks, width, height, sh_degree=degree, backgrounds=batch.background,
            render_mode="RGB", near_plane=self.near_plane, far_plane=self.far_plane,
            absgrad=cfg.absgrad, antialiased=self.antialias, filter_variance=self.filter_variance,
            activated=activated, distributed=self._shard is not None, isect_capacity=self._isect,
        )
        r = self._rendered(out, False)
        r.extras["activated"] = activated
        r.rgb = self.casual.correct_colors(r.rgb, batch.image_idx)
        return r

    # ---- training hooks ----------------------------------------------------------------
    def setup_training(self, cfg: SplatConfig, scene) -> None:
        from . import strategy as strat  # gsplat's strategy classes load with it

        self._cfg, self._ops = cfg, strat
        self._extent = scene_extent(scene)
        self._strategy = strat.make_strategy(
            cfg.strategy, refine_start=cfg.refine_start, refine_stop=cfg.refine_stop,
            refine_every=cfg.refine_every, reset_every=cfg.reset_every,
            grow_grad2d=cfg.grow_grad2d, grow_scale3d=cfg.grow_scale3d, prune_opa=cfg.prune_opa,
            prune_scale3d=cfg.prune_scale3d, absgrad=cfg.absgrad, cap_max=cfg.cap_max,
            noise_lr=cfg.noise_lr, reset_opacities=cfg.opacity_reset,
            reset_at_start=cfg.opacity_reset and scene.background is not None,
        )
        if self._strategy_state is None:
            self._strategy_state = strat.initial_state(self._strategy, self._extent)
        self._setup_casual(cfg, scene)
        if os.environ.get(ISECT_ENV, "exact") == "capacity" and self.device.type == "cuda":
            from splatlab.rasterizer.isect import IsectCapacity

            self._isect = IsectCapacity()

    def _setup_casual(self, cfg: SplatConfig, scene) -> None:
        from .budget import gaussian_cap

        rough, why = rough_poses(scene)
        pose_opt = rough if cfg.pose_opt is None else bool(cfg.pose_opt)
        self._pose_choice = ("set by --pose-opt" if cfg.pose_opt is not None
                             else f"default: {why}")
        self.casual = Casual(cfg, len(scene.train_idx), self._extent, self.device,
                             pose_opt=pose_opt, antialias=cfg.antialias)
        self.casual.train_cameras = scene.cameras[scene.train_idx]
        self.casual.load_state_dict(self._casual_state)
        self._train_names = [scene.images.names[i] for i in scene.train_idx]
        self._train_idx = list(scene.train_idx)
        self.antialias = bool(cfg.antialias)
        self.filter_variance = self.casual.filter_variance(self.model.means)
        self._cap = gaussian_cap(cfg.max_gaussians, self.device)
        if cfg.strategy == "mcmc":
            self._strategy.cap_max = min(self._strategy.cap_max, self._cap)

    def param_groups(self, cfg: SplatConfig) -> list[ParamGroup]:
        """One group per splat tensor, named as gsplat's strategies edit them; eps=1e-15 as
        3DGS (the tiny gradients of far-away Gaussians still move them)."""
        p, sel = self.model.splats, bool(cfg.selective_adam)
        kw = dict(selective=sel, sharded=True)  # each rank's own rows when sharded (shard.py)
        return [
            ParamGroup("means", [p["means"]], cfg.lr_means * self._extent, lr_final=cfg.lr_means_final, **kw),
            ParamGroup("scales", [p["scales"]], cfg.lr_scales, **kw),
            ParamGroup("quats", [p["quats"]], cfg.lr_quats, **kw),
            ParamGroup("opacities", [p["opacities"]], cfg.lr_opacities, **kw),
            ParamGroup("sh0", [p["sh0"]], cfg.lr_sh0, **kw),
            ParamGroup("shN", [p["shN"]], cfg.lr_shN, **kw),
        ] + self.casual.param_groups()

    def _splat_optimizers(self, optimizers: dict) -> dict:
        """The optimizers of the splat tensors only: gsplat's strategies edit exactly those
        (and check that there are no others)."""
        return {k: optimizers[k] for k in self.model.splats.keys()}

    def before_backward(self, step: int, out: Rendered, optimizers: dict) -> None:
        optimizers = self._splat_optimizers(optimizers)
        if not self._checked:
            self._strategy.check_sanity(self.model.splats, optimizers)
            self._checked = True
        self._ops.pre_backward(self._strategy, self.model.splats, optimizers, self._strategy_state,
                           step, out.extras["info"])
        if self._cfg.selective_adam:
            # Selective Adam's mask for this step: Gaussians on screen in any camera (C N 2 radii).
            hand_visibility(optimizers, (out.extras["info"]["radii"] > 0).all(-1))

    def after_step(self, step: int, out: Rendered, optimizers: dict) -> Optional[str]:
        from .budget import enforce_cap

        optimizers = self._splat_optimizers(optimizers)
        n_before = self.model.num_gaussians
        lr_means = optimizers["means"].param_groups[0]["lr"]
        self._ops.post_backward(self._strategy, self.model.splats, optimizers, self._strategy_state,
                            step, out.extras["info"], lr_means)
        if self._cfg.strategy != "mcmc":  # MCMC stays within its cap_max itself
            enforce_cap(self.model.splats, optimizers, self._strategy_state, self._cap)
        n = self.model.num_gaussians
        if self.antialias and (n != n_before or (step + 1) % max(self._cfg.refine_every, 1) == 0):
            # The filter follows the Gaussians (new ones, moved ones, refined poses).
            self.filter_variance = self.casual.filter_variance(self.model.means)
        if n == n_before:
            return None
        where = "" if self._shard is None else f"rank {self._shard[0]}'s shard: "
        return f"{where}{n_before:,} -> {n:,} Gaussians"

    def extra_losses(self, step: int, out: Rendered, batch: Batch) -> dict[str, Tensor]:
        cfg, losses = self._cfg, {}
        act = out.extras.get("activated")
        scales, opacities = act if act is not None else (self.model.scales, self.model.opacities)
        if cfg.opacity_reg > 0:
            losses["opacity_reg"] = cfg.opacity_reg * opacities.mean()
        if cfg.scale_reg > 0:
            losses["scale_reg"] = cfg.scale_reg * scales.mean()
        losses.update(self.casual.losses())
        return losses

    # ---- several processes (shard.py) --------------------------------------------------
    def shard(self, rank: int, size: int) -> None:
        """Keep this rank's share of the Gaussians (after `setup_training`); from now on
        renders are collective. Caps are divided between the shards."""
        from .shard import take_shard

        if self._cfg is not None and self._cfg.absgrad:
            raise ValueError("--absgrad is not available with several processes (gsplat's "
                             "distributed renderer has no absgrad); drop it")
        take_shard(self, rank, size)
        self._shard = (rank, size)
        if self._cfg is not None:
            if self._cfg.max_gaussians > 0:
                self._cap = max(self._cap // size, 1)
            if self._cfg.strategy == "mcmc":
                self._strategy.cap_max = max(min(self._cfg.cap_max // size, self._cap), 1)

    def gathered(self) -> Optional["SplatRenderer"]:
        """Collective: the whole model on rank 0 (None on the other ranks)."""
        from .shard import gather

        return gather(self) if self._shard is not None else self

    # ---- reporting and outputs ---------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        s: dict[str, Any] = {"Gaussians": self.model.num_gaussians}
        if self._isect is not None and self._isect.overflows:
            s["isect overflows"] = self._isect.overflows
        return s

    def metrics(self) -> dict[str, Any]:
        m: dict[str, Any] = {"num_gaussians": self.model.num_gaussians, "antialias": self.antialias}
        if self.casual is not None:
            m["appearance"] = self._cfg.appearance
            m["pose_opt"] = self.casual.poses is not None
            m["pose_opt_choice"] = self._pose_choice
        if self._isect is not None:
            self._isect.poll()
            m["isect_overflows"] = self._isect.overflows
        return m

    def write_outputs(self, run_dir: Path, normalization) -> list[Path]:
        """splat.ply (the 3D filter baked in: other renderers know nothing of it) and, when
        poses were refined, refined_poses.json (normalized frame, as scene.json)."""
        import json

        from splatlab.scenes.files import atomic_write_bytes

        from .io import write_ply

        path = Path(run_dir) / "splat.ply"
        write_ply(baked_model(self.model, self.filter_variance), path, normalization=normalization)
        written = [path]
        c2w = None if self.casual is None else self.casual.refined_camtoworlds()
        if c2w is not None:
            doc = {"frame": "normalized", "axes": "opencv", "train_idx": self._train_idx,
                   "image_names": self._train_names, "camtoworlds": c2w.double().tolist()}
            atomic_write_bytes(Path(run_dir) / REFINED_POSES, (json.dumps(doc) + "\n").encode())
            written.append(Path(run_dir) / REFINED_POSES)
        return written

    def live_copy(self) -> "SplatRenderer":
        """Detached clones of the raw parameters: the optimizers update them in place."""
        with torch.no_grad():
            splats = {k: v.detach().clone() for k, v in self.model.splats.items()}
        fv = None if self.filter_variance is None else self.filter_variance.detach().clone()
        return SplatRenderer(SplatModel(splats, self.model.sh_degree), antialias=self.antialias,
                             filter_variance=fv)

    # ---- optional capabilities (renderers/base.py) -------------------------------------
    @property
    def sh_degree(self) -> int:
        return self.model.sh_degree

    def with_render_options(self, sh_degree: Optional[int] = None, near_plane: float = 0.01,
                            far_plane: float = 1e10) -> "SplatRenderer":
        """The same model (shared tensors) rendered at another SH degree / clip range."""
        return SplatRenderer(self.model, render_sh_degree=sh_degree, near_plane=near_plane,
                             far_plane=far_plane, antialias=self.antialias,
                             filter_variance=self.filter_variance)

    def centers(self) -> Float[Tensor, "N 3"]:
        return self.model.means.detach()

    def cropped(self, lo, hi) -> "SplatRenderer":
        """Only the Gaussians whose means lie inside the box [lo, hi] (normalized frame)."""
        m = self.model.means.detach()
        lo_t = torch.as_tensor(lo, dtype=m.dtype, device=m.device)
        hi_t = torch.as_tensor(hi, dtype=m.dtype, device=m.device)
        keep = ((m >= lo_t) & (m <= hi_t)).all(-1)
        model = SplatModel({k: v.detach()[keep] for k, v in self.model.splats.items()},
                           self.model.sh_degree)
        fv = None if self.filter_variance is None else self.filter_variance.detach()[keep]
        return SplatRenderer(model, render_sh_degree=self.render_sh_degree,
                             near_plane=self.near_plane, far_plane=self.far_plane,
                             antialias=self.antialias, filter_variance=fv)

    def browser_splats(self) -> dict[str, np.ndarray]:
        """The activated Gaussians as plain arrays for the browser (viewer/browser.py):
        centers N 3, quats N 4 (wxyz), scales N 3, opacities N, rgbs N 3 (colour only:
        SH DC -> RGB; the browser has no view dependence)."""
        m = baked_model(self.model, self.filter_variance)
        with torch.no_grad():
            return {
                "centers": m.means.detach().double().cpu().numpy(),
                "quats": m.quats.detach().double().cpu().numpy(),
                "scales": m.scales.detach().double().cpu().numpy(),
                "opacities": m.opacities.detach().double().cpu().numpy().reshape(-1),
                "rgbs": sh_to_rgb(m.splats["sh0"].detach()[:, 0]).double().cpu().numpy(),
            }


__all__ = ["SplatRenderer", "init_model", "scene_extent"]
