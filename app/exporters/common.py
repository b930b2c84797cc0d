"""What every exporter shares: the common CLI options, the output check, and the model's
splats in the dataset's original frame (crop applied there)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import tyro

from ..errors import UserError


@dataclass
class ExportArgs:
    run: Annotated[tyro.conf.Positional[Path], tyro.conf.arg(metavar="RUN")]
    """Run folder, checkpoint (.pt) or 3DGS PLY to export."""
    format: str
    """Export format (`splatlab export --help` lists them)."""
    output: Path
    """File to write (replaced atomically: never a half-written file)."""
    crop_min: Optional[tuple[float, float, float]] = None
    """Crop box minimum corner x y z, in the dataset's original coordinates."""
    crop_max: Optional[tuple[float, float, float]] = None
    """Crop box maximum corner x y z, in the dataset's original coordinates."""
    use_viewer_crop: bool = True
    """Without --crop-*: honour the crop box saved by `splatlab view` (<run>/viewer_crop.json)."""


def crop_box(opts: ExportArgs, target=None):
    """A `Box` (original coordinates) from the options, else the viewer's saved crop box of
    `target`'s run when enabled, else None; a half-given or inside-out box is a UserError."""
    from splatlab.scenes.geometry import Box

    if opts.crop_min is None and opts.crop_max is None:
        return viewer_crop(target) if opts.use_viewer_crop and target is not None else None
    if opts.crop_min is None or opts.crop_max is None:
        raise UserError("give both --crop-min and --crop-max")
    if any(lo > hi for lo, hi in zip(opts.crop_min, opts.crop_max)):
        raise UserError(f"crop box is inside out: --crop-min {list(opts.crop_min)} exceeds "
                        f"--crop-max {list(opts.crop_max)} on some axis")
    return Box(opts.crop_min, opts.crop_max)


def viewer_crop(target):
    """The enabled crop box `splatlab view` saved for this run, in original coordinates."""
    import json
    import sys

    from splatlab.scenes.geometry import Box

    saved = None if target.run_dir is None else Path(target.run_dir) / "viewer_crop.json"
    if saved is None or not saved.exists():
        return None
    try:
        d = json.loads(saved.read_text())
        if not d.get("enabled"):
            return None
        box = Box(d["original"]["min"], d["original"]["max"])
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"unreadable crop box ({e}); fix it or pass --no-use-viewer-crop", saved) from None
    print(f"using the crop box saved by the viewer in {saved} (--no-use-viewer-crop ignores it)",
          file=sys.stderr)
    return box


def check_output(path: Path, suffixes: tuple[str, ...] = ()) -> Path:
    """Fail early (before any slow work) when `path` cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise UserError("output is a folder; give a file name", path)
    if suffixes and path.suffix.lower() not in suffixes:
        raise UserError(f"output suffix must be one of {', '.join(suffixes)}", path)
    parent = path.parent if str(path.parent) else Path(".")
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UserError("cannot write here (folder missing or not writable)", path)
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError("output exists and is not writable", path)
    return path


def original_splats(target, crop=None, where=None) -> dict:
    """The target's raw splat params in original coordinates, finite rows only, cropped.
    An empty crop box is a UserError."""
    from splatlab.renderers.splat.io import PlyError, select_splats, to_original_frame

    try:
        splats, _ = select_splats(to_original_frame(target.model, target.normalization), crop, where)
    except PlyError as e:
        raise UserError(e.problem, e.path) from None
    return splats


def write_bytes(path: Path, data: bytes) -> None:
    from splatlab.scenes.files import atomic_write_bytes

    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        raise UserError(f"cannot write ({e.strerror or e})", path) from None
