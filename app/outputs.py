"""Where `export` and `render` may write: never inside the run's source dataset, never over
an existing file or folder unless `--overwrite` was given (issue 13 item 5)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from .errors import UserError


def dataset_root(target) -> Optional[Path]:
    """The dataset folder the target's run was trained on (scene.json's `root`), if known."""
    root = (getattr(target, "scene_json", None) or {}).get("root")
    if not root or root == "demo":
        return None
    root = Path(root)
    return root if root.is_dir() else None


def refuse_dataset(path: Path, target) -> None:
    """A UserError when `path` lies inside the target's source dataset folder."""
    root = dataset_root(target)
    if root is None:
        return
    real_root = os.path.realpath(root)
    # realpath of the parent: a symlinked output folder pointing into the dataset counts too.
    real = os.path.join(os.path.realpath(Path(path).parent), Path(path).name)
    if os.path.commonpath([real_root, real]) == real_root:
        raise UserError(f"is inside the dataset folder {root} this run was trained on; "
                        "splatlab never writes into a dataset (choose another --output)", path)


def refuse_overwrite(path: Path, overwrite: bool) -> None:
    """A UserError when `path` exists and `overwrite` is off."""
    if os.path.lexists(path) and not overwrite:
        raise UserError("already exists; pass --overwrite to replace it", path)


def check_destination(path: Path, target, overwrite: bool) -> None:
    """Both checks for a single output file (a folder there is the caller's own error)."""
    refuse_dataset(path, target)
    if not Path(path).is_dir():
        refuse_overwrite(path, overwrite)


__all__ = ["check_destination", "dataset_root", "refuse_dataset", "refuse_overwrite"]
