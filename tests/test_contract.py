"""The renderer contract is real: a second method written here (a coloured voxel grid
rendered by plain torch ray marching, trained on random rays) is registered into
RENDERERS and goes through the same `train`, `splatlab eval`, `splatlab export` and the
viewer's frame renderer with no edit to app/. And the refactor kept the files it must:
a run folder and checkpoint in the previous layout still load and render identically,
and splat.ply bytes equal the PLY writer's own."""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from splatlab.app.errors import UserError
from splatlab.renderers import RENDERERS
from splatlab.renderers.base import Batch, ParamGroup, Rendered, Renderer, TrainConfig


# ---- a tiny second method ----------------------------------------------------------------
@dataclass
class VoxelConfig(TrainConfig):
    grid: int = 12
    """Voxels per side."""
    half: float = 1.6
    """Half-size of the cube the grid fills (normalized frame)."""
    samples: int = 24
    """Samples per ray."""
    lr: float = 0.2
    """Learning rate of the grid."""
    rays_per_batch: int = 512
    """Rays per training step."""


def _rays(cameras, image_idx, pixels):
    """World-space origins and unit directions (R 3) of pixel centres `pixels` (R 2)."""
    c2w = cameras.camtoworlds[image_idx]
    x = (pixels[:, 0] - cameras.cx[image_idx]) / cameras.fx[image_idx]
    y = (pixels[:, 1] - cameras.cy[image_idx]) / cameras.fy[image_idx]
    d = (c2w[:, :3, :3] @ torch.stack([x, y, torch.ones_like(x)], -1)[..., None])[..., 0]
    return c2w[:, :3, 3], F.normalize(d, dim=-1)


class VoxelRenderer(Renderer):
    name: ClassVar[str] = "voxel"
    config_cls: ClassVar[type] = VoxelConfig
    presets: ClassVar[dict] = {"default": ("a few hundred steps", VoxelConfig(steps=300)),
                               "cpu": ("what the test runs", VoxelConfig(steps=12))}
    batch_kind: ClassVar[str] = "rays"
    exports: ClassVar[tuple[str, ...]] = ("cameras",)

    def __init__(self, density, color, half: float, samples: int):
        self.density, self.color, self.half, self.samples = density, color, half, samples

    @classmethod
    def build(cls, scene, cfg: VoxelConfig, device) -> "VoxelRenderer":
        g = torch.Generator().manual_seed(cfg.seed)
        n = cfg.grid
        density = (torch.randn(1, 1, n, n, n, generator=g) * 0.1 - 1.0).to(device).requires_grad_()
        color = (torch.randn(1, 3, n, n, n, generator=g) * 0.1).to(device).requires_grad_()
        return cls(density, color, cfg.half, cfg.samples)

    def state_dict(self) -> dict[str, Any]:
        return {"density": self.density.detach().cpu(), "color": self.color.detach().cpu(),
                "half": self.half, "samples": self.samples}

    @classmethod
    def from_state(cls, state, device="cpu") -> "VoxelRenderer":
        return cls(state["density"].to(device).requires_grad_(), state["color"].to(device).requires_grad_(),
                   float(state["half"]), int(state["samples"]))

    @property
    def device(self):
        return self.density.device

    def march(self, origins, dirs, background) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rgb R 3, alpha R 1, depth R 1) by alpha compositing `samples` points per ray."""
        t = torch.linspace(0.5, 7.0, self.samples, device=origins.device)
        pts = origins[:, None] + dirs[:, None] * t[None, :, None]  # R S 3
        grid = (pts / self.half).reshape(1, 1, 1, -1, 3)  # grid_sample wants x y z in [-1, 1]
        inside = ((pts.abs() <= self.half).all(-1)).float()
        sigma = F.softplus(F.grid_sample(self.density, grid, align_corners=True).reshape(-1, self.samples)) * inside
        rgb = torch.sigmoid(F.grid_sample(self.color, grid, align_corners=True).reshape(3, -1, self.samples)).permute(1, 2, 0)
        a = 1 - torch.exp(-sigma * (t[1] - t[0]) * 4.0)
        trans = torch.cumprod(torch.cat([torch.ones_like(a[:, :1]), 1 - a[:, :-1] + 1e-10], -1), -1)
        w = a * trans
        acc = w.sum(-1, keepdim=True)
        bg = torch.zeros_like(rgb[:, 0]) if background is None else background.expand(len(w), 3)
        return (w[..., None] * rgb).sum(1) + (1 - acc) * bg, acc, (w * t).sum(-1, keepdim=True)

    def render(self, cameras, *, background=None, with_depth=False) -> Rendered:
        cameras = cameras.to(self.device)
        outs = []
        for c in range(len(cameras)):
            W, H = int(cameras.width[c]), int(cameras.height[c])
            ys, xs = torch.meshgrid(torch.arange(H, device=self.device), torch.arange(W, device=self.device),
                                    indexing="ij")
            pix = torch.stack([xs, ys], -1).reshape(-1, 2).float() + 0.5
            o, d = _rays(cameras, torch.full((H * W,), c, device=self.device), pix)
            rgb, acc, depth = self.march(o, d, None if background is None else background[:1])
            outs.append((rgb.reshape(H, W, 3), acc.reshape(H, W, 1), depth.reshape(H, W, 1)))
        rgb, acc, depth = (torch.stack(x) for x in zip(*outs))
        return Rendered(rgb=rgb, alpha=acc, depth=depth if with_depth else None)

    def train_render(self, batch: Batch, step: int) -> Rendered:
        o, d = _rays(batch.cameras, batch.image_idx, batch.pixels)
        rgb, acc, _ = self.march(o, d, batch.background)
        return Rendered(rgb=rgb[None, None], alpha=acc[None, None])

    def param_groups(self, cfg: VoxelConfig) -> list[ParamGroup]:
        return [ParamGroup("grid", [self.density, self.color], cfg.lr, lr_final=0.5, eps=1e-8)]

    def stats(self) -> dict[str, Any]:
        return {"voxels": int(self.density.numel())}

    def metrics(self) -> dict[str, Any]:
        return {"num_voxels": int(self.density.numel())}

    def live_copy(self) -> "VoxelRenderer":
        return VoxelRenderer(self.density.detach().clone(), self.color.detach().clone(), self.half, self.samples)


@pytest.fixture
def voxel(monkeypatch):
    monkeypatch.setitem(RENDERERS, "voxel", VoxelRenderer)
    return VoxelRenderer


def test_a_second_method_trains_evals_exports_and_views_through_the_generic_code(voxel, tmp_path, capsys):
    from splatlab.app import runs
    from splatlab.app.cli import main
    from splatlab.app.config import parse_train_args
    from splatlab.app.events import EventBus, StepDone
    from splatlab.app.train import train
    from splatlab.viewer.render import RenderSettings, ViewCamera, render_frame, rotmat_to_quat

    out = tmp_path / "vox"
    cfg, resume = parse_train_args(["--method", "voxel", "--preset", "cpu", "--output", str(out),
                                    "--downscale", "4", "--log-every", "4", "--checkpoint-every", "6",
                                    "--no-save-renders"])
    assert isinstance(cfg, VoxelConfig) and cfg.rays_per_batch == 512 and cfg.steps == 12 and resume is None
    assert cfg.method == "voxel" and cfg.preset == "cpu"
    steps: list[StepDone] = []
    bus = EventBus()
    bus.subscribe(steps.append, StepDone)
    result = train(cfg, bus=bus)
    assert result.reason == "done" and result.step == 12
    assert [e.step for e in steps] == [4, 6, 8, 12] and steps[0].stats == {"voxels": 12**3}
    assert steps[-1].loss < steps[0].loss, [e.loss for e in steps]  # random rays, one grid: it learns
    assert set(steps[0].lrs) == {"grid"} and steps[-1].lrs["grid"] < cfg.lr  # the schedule ran

    saved = json.loads((out / "config.json").read_text())
    assert saved["method"] == "voxel" and saved["preset"] == "cpu" and saved["rays_per_batch"] == 512
    m = json.loads((out / "metrics.json").read_text())
    assert m["num_voxels"] == 12**3 and m["method"] == "voxel" and "num_gaussians" not in m
    assert not (out / "splat.ply").exists()  # the method declared no artefact
    ck = runs.load_checkpoint(runs.latest_checkpoint(out))
    assert ck["method"] == "voxel" and set(ck["model"]) == {"density", "color", "half", "samples"}

    # eval re-renders the test views through the registry and reproduces metrics.json
    capsys.readouterr()
    assert main(["eval", str(out)]) == 0
    text = capsys.readouterr().out
    assert "voxel" in text and "1,728 voxels" in text
    psnr_now = float(next(line.split()[1] for line in text.splitlines() if line.startswith("psnr")))
    assert abs(psnr_now - m["psnr"]) < 1e-3

    # export: a format the method supports works, the others give one clean line
    assert main(["export", str(out), "--format", "ply", "--output", str(tmp_path / "x.ply")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "voxel model cannot be exported as ply" in err and "supports: cameras" in err
    assert not (tmp_path / "x.ply").exists()
    assert main(["export", str(out), "--format", "cameras", "--output", str(tmp_path / "cams.json")]) == 0

    # the viewer renders a frame of it (no viewer code knows the method)
    loaded = runs.load_target(out)
    assert loaded.method == "voxel" and isinstance(loaded.renderer, VoxelRenderer)
    c2w = loaded.cameras().camtoworlds[0].double().numpy()
    cam = ViewCamera.from_viser(rotmat_to_quat(c2w[:3, :3]), c2w[:3, 3], 0.8, 32, 24)
    for output in ("RGB", "Depth", "Alpha"):
        img = render_frame(loaded.renderer, cam, 32, 24, RenderSettings(output=output))
        assert img.shape == (24, 32, 3) and img.dtype == np.uint8 and img.std() > 0, output


def test_rays_sampler_gathers_the_right_pixels():
    """Every sampled ray's colour is the image's pixel under it, across images."""
    from splatlab.app.data import make_sampler
    from splatlab.scenes import load_scene

    scene = load_scene(None, downscale=4)
    torch.manual_seed(0)
    s = make_sampler("rays", scene, torch.device("cpu"), seed=0, rays_per_batch=300)
    b = s.next(0)
    assert b.kind == "rays" and b.gt.shape == (300, 3) and b.pixels.shape == (300, 2)
    assert len(set(b.image_idx.tolist())) > 20  # drawn across the training images
    for r in range(300):
        i, (x, y) = int(b.image_idx[r]), b.pixels[r].tolist()
        want = scene.images[scene.train_idx[i]][int(y - 0.5), int(x - 0.5)] / 255.0
        np.testing.assert_allclose(b.gt[r].numpy(), want, atol=1e-6)


def test_unknown_method_is_one_clean_line(tmp_path, capsys):
    from splatlab.app.cli import main

    assert main(["train", "--method", "nope", "--output", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unknown method 'nope'" in err and "splat" in err


# ---- the previous format still loads ------------------------------------------------------
def _old_run(run: Path):
    """A run folder + checkpoint exactly as the previous commit's `save_checkpoint` wrote
    them (version 1, no "method", strategy state beside the model)."""
    from splatlab.app.runs import atomic_torch_save, atomic_write_json, checkpoint_path, scene_to_json
    from splatlab.renderers.splat import SplatModel
    from splatlab.renderers.splat.strategies import DefaultStrategy
    from splatlab.scenes import load_scene

    scene = load_scene(None, downscale=4)
    g = torch.Generator().manual_seed(3)
    model = SplatModel.from_points(torch.as_tensor(scene.points[:400]).float(),
                                   torch.rand(400, 3, generator=g), sh_degree=1, init_opacity=0.6)
    optimizers = {k: torch.optim.Adam([{"params": [p], "lr": 1e-3, "name": k}], eps=1e-15)
                  for k, p in model.splats.items()}
    model.render(scene.cameras[0].viewmats(), scene.cameras[0].Ks(), 40, 30).rgb.mean().backward()
    for o in optimizers.values():
        o.step()
    strategy_state = DefaultStrategy().initialize_state(scene_scale=scene.extent * 1.1)
    old_config = {  # the previous TrainConfig's fields (no "preset", "overwrite")
        "data": None, "method": "splat", "output": str(run), "viewer": False, "viewer_port": 8080,
        "device": "cpu", "seed": 42, "steps": 30, "downscale": 4, "test_every": 8,
        "random_background": False, "sh_degree": 1, "sh_degree_interval": 1000,
        "init_num_points": 100000, "init_max_points": 400, "init_extent": 3.0, "init_opacity": 0.1,
        "init_scale": 1.0, "lr_means": 1.6e-4, "lr_means_final": 0.01, "lr_scales": 5e-3,
        "lr_quats": 1e-3, "lr_opacities": 5e-2, "lr_sh0": 2.5e-3, "lr_shN": 2.5e-3 / 20,
        "ssim_lambda": 0.2, "strategy": "default", "refine_start": 500, "refine_stop": 15000,
        "refine_every": 100, "reset_every": 3000, "grow_grad2d": 0.0002, "grow_scale3d": 0.01,
        "prune_opa": 0.005, "prune_scale3d": 0.1, "absgrad": False, "cap_max": 1000000,
        "noise_lr": 5e5, "opacity_reg": 0.0, "scale_reg": 0.0, "log_every": 100,
        "checkpoint_every": 5000, "keep_checkpoints": 3, "eval_every": 0, "save_renders": True,
    }
    ckpt = {
        "version": 1, "step": 20, "model": model.state(),
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "strategy_state": {k: v for k, v in strategy_state.items()},
        "config": old_config, "normalization": scene.normalization.to_json(), "train_seconds": 1.5,
        "rng": {"torch": torch.get_rng_state(), "cuda": None, "python": random.getstate()},
    }
    atomic_write_json(run / "config.json", old_config)
    atomic_write_json(run / "scene.json", scene_to_json(scene))
    atomic_torch_save(checkpoint_path(run, 20), ckpt)
    return scene, model


def test_previous_run_folder_and_checkpoint_load_and_render_identically(tmp_path):
    from splatlab.app import runs
    from splatlab.app.config import config_from_json, parse_train_args
    from splatlab.renderers.splat import SplatConfig, SplatRenderer

    run = tmp_path / "old"
    scene, model = _old_run(run)
    loaded = runs.load_target(run)
    assert loaded.method == "splat" and isinstance(loaded.renderer, SplatRenderer) and loaded.step == 20
    cams = scene.cameras[scene.test_idx[0]]
    want = model.render(cams.viewmats(), cams.Ks(), 40, 30).rgb
    got = loaded.renderer.render(cams).rgb
    assert torch.equal(got, want)
    cfg = config_from_json(json.loads((run / "config.json").read_text()))
    assert isinstance(cfg, SplatConfig) and cfg.preset is None and cfg.steps == 30
    # --resume reads it too: the strategy state moved into the renderer's state
    cfg, resume = parse_train_args(["--resume", str(run)])
    assert cfg.method == "splat" and resume == run
    ck = runs.load_checkpoint(runs.latest_checkpoint(run))
    assert ck["model"]["strategy_state"]["scene_scale"] == pytest.approx(scene.extent * 1.1)


def test_splat_ply_bytes_are_the_writers_own(tmp_path):
    """`SplatRenderer.write_outputs` (what the loop calls) writes exactly the bytes of the
    PLY writer (renderers/splat/io.write_ply, the pre-refactor path), in original coordinates."""
    from splatlab.renderers.splat import SplatModel, SplatRenderer
    from splatlab.renderers.splat.io import write_ply
    from splatlab.scenes.types import Normalization

    g = torch.Generator().manual_seed(7)
    model = SplatModel.random(300, torch.tensor([-1.0, -1, -1]), torch.tensor([1.0, 1, 1]), sh_degree=2, generator=g)
    norm = Normalization(scale=0.5, translation=np.array([0.1, -0.2, 0.3]))
    write_ply(model, tmp_path / "direct.ply", normalization=norm)
    (tmp_path / "run").mkdir()
    written = SplatRenderer(model).write_outputs(tmp_path / "run", norm)
    assert written == [tmp_path / "run" / "splat.ply"]
    assert written[0].read_bytes() == (tmp_path / "direct.ply").read_bytes()


def test_live_hookup_never_blocks_a_handler_and_holds_between_steps():
    """The viewer's pause is a flag: the event handler returns at once while paused, and
    the loop's between-steps `hold` waits with the stopwatch stopped until resume."""
    import threading
    import time

    from splatlab.app.events import ModelUpdated
    from splatlab.app.live import LiveHookup
    from splatlab.app.train import StopFlag, Stopwatch
    from splatlab.renderers.splat import SplatModel, SplatRenderer
    from splatlab.viewer import LiveFeed

    r = SplatRenderer(SplatModel.random(20, torch.tensor([-1.0, -1, -1]), torch.tensor([1.0, 1, 1]), sh_degree=0))
    feed = LiveFeed()
    hook = LiveHookup(feed, interval_s=0.0)
    feed.pause()
    t = time.monotonic()
    hook(ModelUpdated(5, r))
    assert time.monotonic() - t < 0.5
    snap, stats, _ = feed.latest()
    assert snap is not r and stats["step"] == 5  # a detached snapshot was published
    watch = Stopwatch(torch.device("cpu"))
    watch.start()
    threading.Timer(0.4, feed.resume).start()
    t = time.monotonic()
    hook.hold(r, 6, watch, StopFlag())
    waited = time.monotonic() - t
    assert waited >= 0.35 and watch.now() < 0.2 and not feed.is_paused()


def test_coarse_to_fine_schedule_and_limits():
    from splatlab.app.data import ImageSampler
    from splatlab.scenes import load_scene

    s = ImageSampler(load_scene(None, downscale=4), torch.device("cpu"), seed=0, coarse_to_fine=10)
    # 1/4 for the first half, 1/2 for the second, then full size ...
    assert [s.scale_at(k, 720, 1280) for k in (0, 4, 5, 9, 10, 1000)] == [4, 4, 2, 2, 1, 1]
    # ... never below 32 pixels on the short side
    assert [s.scale_at(0, h, 1000) for h in (200, 127, 64, 63)] == [4, 2, 2, 1]
    with pytest.raises(UserError, match="coarse-to-fine"):
        ImageSampler(load_scene(None, downscale=4), torch.device("cpu"), seed=0, coarse_to_fine=-1)


def test_coarse_to_fine_batches_are_area_averaged_with_scaled_intrinsics():
    """The coarse steps' ground truth is the full image area-averaged, the camera's
    intrinsics scaled to that size (one Cameras object per view and factor), masks keep
    only coarse pixels whose every fine pixel counted; later steps are untouched."""
    from splatlab.app.data import ImageSampler
    from splatlab.scenes import load_scene

    scene = load_scene("demo:distractor")  # 160 x 120, masks on some views
    s = ImageSampler(scene, torch.device("cpu"), seed=3, masks=True, coarse_to_fine=6)
    full = ImageSampler(scene, torch.device("cpu"), seed=3, masks=True)
    seen_mask = False
    for step in range(8):
        b, ref = s.next(step), full.next(step)
        i = int(b.image_idx)
        assert i == int(ref.image_idx)
        if step >= 6:
            assert b.cameras is s.cameras[i] and torch.equal(b.gt, ref.gt)
            continue
        # 120 // 4 < 32: this scene coarsens by 2 only
        assert b.gt.shape == (1, 60, 80, 3)
        want = ref.gt.reshape(1, 60, 2, 80, 2, 3).mean((2, 4))
        torch.testing.assert_close(b.gt, want, atol=1e-6, rtol=0)
        c, rc = b.cameras, ref.cameras
        assert int(c.width[0]) == 80 and int(c.height[0]) == 60
        torch.testing.assert_close(c.fx, rc.fx / 2)
        torch.testing.assert_close(c.cx, rc.cx / 2)
        assert torch.equal(c.camtoworlds, rc.camtoworlds)
        assert s.next(step).cameras is c  # cached: renderers key their per-view work on it
        if ref.mask is not None:
            seen_mask = True
            want_m = ref.mask.reshape(1, 60, 2, 80, 2, 1).all(4).all(2)
            assert torch.equal(b.mask, want_m)
    assert seen_mask
