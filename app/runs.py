"""The run folder contract, shared by train, eval, export, render and view.

A run folder holds:
    config.json        resolved TrainConfig (plain JSON of primitives)
    scene.json         where the data came from, its normalization, split and cameras
    checkpoints/       step_XXXXXXX.pt (atomic; the newest is the one to resume/load)
    splat.ply          final model, INRIA 3DGS layout, ORIGINAL dataset coordinates
    metrics.json       test metrics
    log.jsonl          one JSON object per logged event
    renders/test/      per-view test renders

A checkpoint is a `torch.save` dict: {"version": 1, "step": int, "model": SplatModel.state(),
"optimizers": {name: state_dict}, "strategy_state": dict, "config": dict,
"normalization": Normalization.to_json()}.

`load_target(path)` accepts a run folder, a checkpoint file, any 3DGS PLY or an SPZ.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from splatlab.renderers.common import atomic_write_bytes

from .errors import UserError

CHECKPOINT_DIR = "checkpoints"


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def atomic_torch_save(path: Path, obj: Any) -> None:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"step_{step:07d}.pt"


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    ckpts = sorted((Path(run_dir) / CHECKPOINT_DIR).glob("step_*.pt"))
    return ckpts[-1] if ckpts else None


def is_run_dir(path: Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / "config.json").exists()


def scene_to_json(scene) -> dict:
    """Enough of a Scene to rebuild its cameras without the dataset (exports, viewer)."""
    cams = scene.cameras
    return {
        "name": scene.name,
        "format": scene.format,
        "root": str(scene.root),
        "normalization": scene.normalization.to_json(),
        "background": None if scene.background is None else [float(c) for c in scene.background],
        "train_idx": [int(i) for i in scene.train_idx],
        "test_idx": [int(i) for i in scene.test_idx],
        "image_names": list(scene.images.names),
        "cameras": {
            "camtoworlds": cams.camtoworlds.double().numpy().tolist(),
            "fx": cams.fx.double().tolist(), "fy": cams.fy.double().tolist(),
            "cx": cams.cx.double().tolist(), "cy": cams.cy.double().tolist(),
            "width": cams.width.tolist(), "height": cams.height.tolist(),
            "model": cams.model,
        },
        "points": None if scene.points is None else int(len(scene.points)),
    }


def cameras_from_json(d: dict):
    import torch

    from splatlab.scenes.types import Cameras

    c = d["cameras"]
    f32 = lambda k: torch.tensor(c[k], dtype=torch.float32)  # noqa: E731
    return Cameras(
        camtoworlds=torch.tensor(c["camtoworlds"], dtype=torch.float32),
        fx=f32("fx"), fy=f32("fy"), cx=f32("cx"), cy=f32("cy"),
        width=torch.tensor(c["width"], dtype=torch.long),
        height=torch.tensor(c["height"], dtype=torch.long),
        model=c.get("model", "PINHOLE"),
    )


@dataclass
class Loaded:
    """A model ready to render, whatever it was loaded from."""

    model: Any  # SplatModel, in the normalized frame
    normalization: Any  # Normalization: normalized = scale * R @ original + t
    kind: str  # "run" | "checkpoint" | "ply"
    path: Path
    run_dir: Optional[Path] = None
    scene_json: Optional[dict] = None  # cameras etc., when loaded from a run
    config: Optional[dict] = None
    step: Optional[int] = None

    def cameras(self):
        """The run's cameras (normalized frame), or None for a bare PLY."""
        return None if self.scene_json is None else cameras_from_json(self.scene_json)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError("file not found", path) from None
    except json.JSONDecodeError as e:
        raise UserError(f"invalid JSON ({e.msg} at line {e.lineno})", path) from None


def load_checkpoint(path: Path, device="cpu") -> dict:
    import torch

    try:
        return torch.load(path, map_location=device, weights_only=False)
    except FileNotFoundError:
        raise UserError("checkpoint not found", path) from None
    except Exception as e:  # corrupt / truncated / not a checkpoint
        raise UserError(f"not a readable splatlab checkpoint ({type(e).__name__})", path) from None


def load_target(path: Path | str, device="cpu") -> Loaded:
    """A run folder, a checkpoint (.pt) or a 3DGS .ply -> Loaded."""
    from splatlab.renderers.splat import SplatModel
    from splatlab.scenes.types import Normalization

    path = Path(path)
    if not path.exists():
        raise UserError("no such run folder, checkpoint or PLY", path)
    if path.is_dir():
        if not is_run_dir(path):
            raise UserError("not a splatlab run folder (no config.json)", path)
        ckpt = latest_checkpoint(path)
        if ckpt is None:
            raise UserError("run folder has no checkpoints yet", path / CHECKPOINT_DIR)
        loaded = load_target(ckpt, device)
        loaded.kind, loaded.path = "run", path
        return loaded
    if path.suffix == ".pt":
        ck = load_checkpoint(path, device)
        if not isinstance(ck, dict) or "model" not in ck:
            raise UserError("not a splatlab checkpoint (no model in it)", path)
        run_dir = path.parent.parent if path.parent.name == CHECKPOINT_DIR else None
        scene_json = None
        if run_dir is not None and (run_dir / "scene.json").exists():
            scene_json = _read_json(run_dir / "scene.json")
        return Loaded(
            model=SplatModel.from_state(ck["model"], device),
            normalization=Normalization.from_json(ck.get("normalization") or {"scale": 1.0, "translation": [0, 0, 0]}),
            kind="checkpoint", path=path, run_dir=run_dir, scene_json=scene_json,
            config=ck.get("config"), step=ck.get("step"),
        )
    if path.suffix.lower() == ".ply":
        from splatlab.renderers.splat.io import read_ply  # PLY import lives with the model

        model = read_ply(path).to(device)
        # A PLY is in original coordinates: identity normalization.
        return Loaded(model=model, normalization=Normalization(), kind="ply", path=path)
    if path.suffix.lower() == ".spz":
        from splatlab.renderers.splat.io import read_spz

        # Read back into the PLY's frame (original coordinates): identity normalization.
        return Loaded(model=read_spz(path).to(device), normalization=Normalization(), kind="spz", path=path)
    raise UserError("expected a run folder, a .pt checkpoint, a .ply or a .spz file", path)

