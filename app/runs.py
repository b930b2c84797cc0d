"""The run folder contract, shared by train, eval, export, render and view.

A run folder holds:
    config.json        resolved TrainConfig (plain JSON of primitives)
    scene.json         where the data came from, its normalization, split and cameras
    checkpoints/       step_XXXXXXX.pt (atomic; the newest is the one to resume/load)
    splat.ply          final model, INRIA 3DGS layout, ORIGINAL dataset coordinates
    metrics.json       test metrics
    log.jsonl          one JSON object per logged event
    renders/test/      per-view test renders

A checkpoint is a `torch.save` dict of tensors and primitives only (read back with
`weights_only=True`): {"version": 2, "method": str, "preset": str|None, "step": int,
"model": renderer.state_dict(), "optimizers": {group name: state_dict}, "config": dict,
"normalization": Normalization.to_json(), "train_seconds": float, "rng": {...}}.
Version 1 (no "method": a splat run) kept the strategy state beside the model, under
"strategy_state"; `load_checkpoint` reads both.

`load_target(path)` accepts a run folder, a checkpoint file or a model file a renderer
opens (a 3DGS PLY or an SPZ). The method is read from the checkpoint, never guessed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from splatlab.scenes.files import atomic_write_bytes

from .errors import UserError

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_VERSION = 2
# What a run folder holds that splatlab wrote (what --overwrite may remove).
RUN_FILES = ("config.json", "scene.json", "log.jsonl", "metrics.json", "splat.ply", "viewer_crop.json",
             "refined_poses.json")
# Training poses a method refined (pose refinement), which exports and the viewer use in
# place of scene.json's: {"train_idx": [...], "camtoworlds": [[4x4], ...]}, normalized frame.
REFINED_POSES = "refined_poses.json"


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


LATEST = "latest"


def update_latest(run_dir: Path) -> Optional[Path]:
    """Point `runs/latest` at `run_dir` (a relative symlink, swapped in atomically) when the
    run folder is directly under a folder named `runs`; never replaces anything that is not
    a symlink. Returns the link, or None when there is none to keep."""
    import os
    import secrets

    run_dir = Path(run_dir)
    parent = run_dir.parent
    if parent.name != "runs" or run_dir.name == LATEST:
        return None
    link = parent / LATEST
    if link.exists() and not link.is_symlink():
        return None
    tmp = parent / f".{LATEST}.{secrets.token_hex(4)}.tmp"
    try:
        os.symlink(run_dir.name, tmp)
        os.replace(tmp, link)
    except OSError:  # a file system without symlinks: the run itself is fine
        tmp.unlink(missing_ok=True)
        return None
    return link


def newest_of(paths: list[str], what: str = "run") -> str:
    """One path of several (a shell glob such as `runs/demo-*/`): the most recently written
    run (by its config.json, else the path itself), with a one-line note on stderr."""
    import sys

    if len(paths) == 1:
        return paths[0]

    def mtime(p: str) -> float:
        path = Path(p)
        for f in (path / "metrics.json", path / "config.json", path):
            try:
                return f.stat().st_mtime
            except OSError:
                continue
        return float("-inf")

    unique = [p for p in paths if Path(p).resolve() not in {Path(q).resolve() for q in paths[:paths.index(p)]}]
    chosen = max(unique, key=mtime)
    if len(unique) > 1:
        print(f"note: {len(paths)} paths given; using the newest {what}, {chosen}", file=sys.stderr)
    return chosen


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


def with_refined_poses(scene_json: dict, run_dir: Path) -> dict:
    """scene.json with the run's refined training poses (refined_poses.json) in place of
    the given ones, which stay in `cameras.camtoworlds_given`."""
    path = Path(run_dir) / REFINED_POSES
    if not path.exists():
        return scene_json
    refined = _read_json(path)
    c2w = [list(m) for m in scene_json["cameras"]["camtoworlds"]]
    try:
        for i, m in zip(refined["train_idx"], refined["camtoworlds"], strict=True):
            c2w[int(i)] = m
    except (KeyError, TypeError, ValueError, IndexError):
        raise UserError("refined poses do not match the run's cameras", path) from None
    cams = {**scene_json["cameras"], "camtoworlds": c2w,
            "camtoworlds_given": scene_json["cameras"]["camtoworlds"]}
    return {**scene_json, "cameras": cams}


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
    """A renderer ready to render, whatever it was loaded from."""

    renderer: Any  # a renderers.base.Renderer, in the normalized frame
    method: str
    normalization: Any  # Normalization: normalized = scale * R @ original + t
    kind: str  # "run" | "checkpoint" | "ply"
    path: Path
    run_dir: Optional[Path] = None
    scene_json: Optional[dict] = None  # cameras etc., when loaded from a run
    config: Optional[dict] = None
    step: Optional[int] = None
    preset: Optional[str] = None

    @property
    def model(self):
        """The renderer's underlying model where it has one (a splat run's SplatModel),
        for method-specific exporters; generic code uses `renderer`."""
        return getattr(self.renderer, "model", self.renderer)

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
    """A checkpoint, read with `weights_only=True` (a file can never run code), in the
    current layout (a version-1 splat checkpoint is migrated)."""
    import pickle

    import torch

    path = Path(path)
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise UserError("checkpoint not found", path) from None
    except IsADirectoryError:
        raise UserError("is a folder, not a checkpoint", path) from None
    except pickle.UnpicklingError:
        raise UserError("refused: the checkpoint holds objects other than tensors and plain "
                        "values (it could run code); not loading it", path) from None
    except Exception as e:  # noqa: BLE001 - corrupt / truncated / not a checkpoint
        raise UserError(f"not a readable splatlab checkpoint ({type(e).__name__})", path) from None
    if not isinstance(ck, dict) or not isinstance(ck.get("model"), dict):
        raise UserError("not a splatlab checkpoint (no model in it)", path)
    if "method" not in ck:  # version 1: splat only, strategy state beside the model
        ck["method"] = "splat"
        ck["model"] = {**ck["model"], "strategy_state": ck.pop("strategy_state", None)}
    ck.setdefault("preset", (ck.get("config") or {}).get("preset"))
    return ck


def newest_good_checkpoint(run_dir: Path, device="cpu", warn=None) -> tuple[Path, dict]:
    """The newest checkpoint of a run that loads; corrupt newer ones are skipped with one
    `warn(line)` each. Raises UserError when there is none."""
    import sys

    warn = warn or (lambda line: print(f"warning: {line}", file=sys.stderr))
    ckpts = sorted((Path(run_dir) / CHECKPOINT_DIR).glob("step_*.pt"), reverse=True)
    if not ckpts:
        raise UserError("run folder has no checkpoints yet", Path(run_dir) / CHECKPOINT_DIR)
    first_error = None
    for p in ckpts:
        try:
            ck = load_checkpoint(p, device)
        except UserError as e:
            first_error = first_error or e
            continue
        if p != ckpts[0]:
            warn(f"{ckpts[0]} is unreadable; using {p.name}, the newest good checkpoint")
        return p, ck
    raise first_error


def set_aside_newer(run_dir: Path, resumed: Path) -> None:
    """Rename checkpoints newer than `resumed` (unreadable ones a resume skipped) to
    `*.pt.unreadable`, so the resumed run's own checkpoints are the newest ones (kept, not
    deleted: splatlab never removes what it cannot read)."""
    for p in sorted((Path(run_dir) / CHECKPOINT_DIR).glob("step_*.pt")):
        if p.name > Path(resumed).name:
            p.rename(p.with_name(p.name + ".unreadable"))


def save_checkpoint(run_dir: Path, step: int, ck: dict, keep: int) -> Path:
    """Write `ck` (tensors moved to the CPU) as step `step`, atomically, and keep the
    newest `keep` checkpoints."""
    path = checkpoint_path(run_dir, step)
    atomic_torch_save(path, {"version": CHECKPOINT_VERSION, "step": step, **_to_cpu(ck)})
    old = sorted((Path(run_dir) / CHECKPOINT_DIR).glob("step_*.pt"))
    for p in old[: max(len(old) - max(keep, 1), 0)]:
        p.unlink(missing_ok=True)
    return path


def _to_cpu(obj):
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def prepare_output(run_dir: Path, *, overwrite: bool, dataset: Optional[Path] = None) -> None:
    """Refuse a run folder that would mix runs or write into the dataset: an existing
    non-empty folder is used only with `overwrite`, and only when it is a previous run
    (then only the files splatlab wrote are removed)."""
    run_dir = Path(run_dir)
    if dataset is not None:
        d, r = Path(dataset).resolve(), run_dir.resolve()
        if r == d or d in r.parents:
            raise UserError("is inside the source dataset; choose an --output outside it", run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError("--output is a file, not a folder", run_dir)
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return
    if not is_run_dir(run_dir):
        raise UserError("--output is a non-empty folder that splatlab did not create; "
                        "choose a new folder", run_dir)
    if not overwrite:
        raise UserError("--output already holds a run; continue it with --resume, choose a new "
                        "folder, or pass --overwrite to replace it", run_dir)
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for pattern in ("step_*.pt", "step_*.pt.unreadable"):
        for p in (run_dir / CHECKPOINT_DIR).glob(pattern):
            p.unlink()
    for p in (run_dir / "renders" / "test").glob("*.png"):
        p.unlink()


def _normalization(d):
    from splatlab.scenes.types import Normalization

    return Normalization.from_json(d or {"scale": 1.0, "translation": [0, 0, 0]})


def load_target(path: Path | str, device="cpu") -> Loaded:
    """A run folder, a checkpoint (.pt) or a model file (a 3DGS .ply) -> Loaded; the
    renderer is built by the method recorded in the checkpoint (`RENDERERS[method]`)."""
    from splatlab.renderers import RENDERERS

    path = Path(path)
    if not path.exists():
        raise UserError("no such run folder, checkpoint or PLY", path)
    if path.is_dir():
        if not is_run_dir(path):
            raise UserError("not a splatlab run folder (no config.json)", path)
        ckpt, ck = newest_good_checkpoint(path, device)
        loaded = _from_checkpoint(ckpt, ck, device)
        loaded.kind, loaded.path = "run", path
        return loaded
    if path.suffix == ".pt":
        return _from_checkpoint(path, load_checkpoint(path, device), device)
    for name, cls in RENDERERS.items():
        if path.suffix.lower() in cls.file_suffixes:
            # A model file is in original coordinates: identity normalization.
            return Loaded(renderer=cls.from_file(path, device), method=name,
                          normalization=_normalization(None), kind=path.suffix.lower()[1:], path=path)
    raise UserError("expected a run folder, a .pt checkpoint, a .ply or a .spz file", path)


def run_scene(path: Path | str) -> tuple[Optional[Path], Optional[dict]]:
    """(run folder, its scene.json with the refined poses) of a run folder or of a
    checkpoint inside one; (None, None) for anything else, None for a missing scene.json."""
    path = Path(path)
    if path.is_dir():
        run_dir = path if is_run_dir(path) else None
    else:
        run_dir = path.parent.parent if path.parent.name == CHECKPOINT_DIR else None
    if run_dir is None:
        return None, None
    if not (run_dir / "scene.json").exists():
        return run_dir, None
    return run_dir, with_refined_poses(_read_json(run_dir / "scene.json"), run_dir)


def _from_checkpoint(path: Path, ck: dict, device) -> Loaded:
    from splatlab.renderers import UnknownMethod, get_renderer

    try:
        cls = get_renderer(ck["method"])
    except UnknownMethod as e:
        raise UserError(str(e), path) from None
    try:
        renderer = cls.from_state(ck["model"], device)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise UserError(f"not a readable {ck['method']} checkpoint ({type(e).__name__})", path) from None
    run_dir, scene_json = run_scene(path)
    return Loaded(renderer=renderer, method=ck["method"], normalization=_normalization(ck.get("normalization")),
                  kind="checkpoint", path=path, run_dir=run_dir, scene_json=scene_json,
                  config=ck.get("config"), step=ck.get("step"), preset=ck.get("preset"))
