"""Helpers for the export/PLY/render/mesh tests: run folders built by hand (a model, a
checkpoint, scene.json per app/runs.py), so these tests need no training."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from splatlab.app import runs
from splatlab.renderers.splat import SplatModel
from splatlab.scenes.types import Normalization


def demo_scene(**kw):
    from splatlab.scenes.demo import load

    return load(**kw)


def random_rotation(seed: int) -> np.ndarray:
    g = np.random.default_rng(seed)
    q, _ = np.linalg.qr(g.normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def demo_model(scene, sh_degree: int = 3, sh_noise: float = 0.3, seed: int = 0) -> SplatModel:
    """Gaussians on the demo's surface points, fairly opaque, with random higher SH so a
    frame change that mishandles SH shows in renders."""
    g = torch.Generator().manual_seed(seed)
    model = SplatModel.from_points(torch.as_tensor(scene.points).float(),
                                   torch.as_tensor(scene.point_colors).float() / 255.0,
                                   sh_degree=sh_degree, init_opacity=0.8)
    with torch.no_grad():
        shN = model.splats["shN"]
        shN.copy_(sh_noise * torch.randn(shN.shape, generator=g))
        q = model.splats["quats"]
        q.copy_(torch.randn(q.shape, generator=g) * 0.5 + torch.tensor([1.0, 0, 0, 0]))
        model.splats["scales"].add_(torch.randn(model.splats["scales"].shape, generator=g) * 0.3)
    return model


def write_run(run_dir: Path, model: SplatModel, scene, normalization: Normalization | None = None,
              step: int = 0) -> Path:
    """A run folder per app/runs.py; `normalization` overrides the scene's (the model and
    cameras stay in the normalized frame, only the way back to "original" changes)."""
    run_dir = Path(run_dir)
    norm = normalization or scene.normalization
    sj = runs.scene_to_json(dataclasses.replace(scene, normalization=norm))
    runs.atomic_write_json(run_dir / "config.json", {"preset": "test"})
    runs.atomic_write_json(run_dir / "scene.json", sj)
    runs.atomic_torch_save(runs.checkpoint_path(run_dir, step), {
        "version": 1, "step": step, "model": model.state(), "optimizers": {}, "strategy_state": {},
        "config": {}, "normalization": norm.to_json(),
    })
    return run_dir


def render(model: SplatModel, cams, background=None):
    bg = None if background is None else torch.tensor([list(background)] * len(cams), dtype=torch.float32)
    with torch.no_grad():
        return model.render(cams.viewmats(), cams.Ks(), int(cams.width[0]), int(cams.height[0]),
                            backgrounds=bg).rgb


def cameras_to_original(cams, norm: Normalization):
    """Cameras in the normalized frame -> the same cameras in original coordinates."""
    from splatlab.app.exporters.cameras import camtoworlds_original

    c2w = camtoworlds_original(cams.camtoworlds.double().numpy(), norm)
    return dataclasses.replace(cams, camtoworlds=torch.as_tensor(c2w, dtype=torch.float32))


def read_json(p: Path) -> dict:
    return json.loads(Path(p).read_text())
