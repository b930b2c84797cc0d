"""`--format cameras`: the run's cameras as a nerfstudio-style `transforms.json`.

OpenGL camera axes (+x right, +y up, +z backward) as nerfstudio expects, original dataset
coordinates, per-frame pinhole intrinsics (`fl_x fl_y cx cy w h`) of the images splatlab
trained on (undistorted and possibly downscaled), `file_path` the image name as the
dataset lists it, and split lists `train_filenames` / `test_filenames`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np


from ..errors import UserError
from .common import ExportArgs, check_output, write_bytes

HELP = "train/test cameras as nerfstudio transforms.json (OpenGL axes)"
SUFFIXES = (".json",)


@dataclass
class Options(ExportArgs):
    """Training and test cameras as nerfstudio `transforms.json` (OpenGL axes, original
    coordinates). Needs a run folder or a checkpoint inside one."""


def camtoworlds_original(c2w_norm: np.ndarray, normalization) -> np.ndarray:
    """C 4 4 camera-to-world (normalized frame) -> original frame, axes unchanged."""
    return normalization.invert_c2w(c2w_norm)


def transforms_json(scene_json: dict, normalization) -> dict:
    c = scene_json["cameras"]
    from splatlab.scenes.geometry import OPENCV_TO_OPENGL  # geometry imports torch: not at `export --help`

    c2w = camtoworlds_original(np.asarray(c["camtoworlds"]), normalization) @ OPENCV_TO_OPENGL
    names = scene_json.get("image_names") or [f"frame_{i:05d}" for i in range(len(c2w))]
    frames = [
        {"file_path": names[i], "transform_matrix": c2w[i].tolist(),
         "fl_x": float(c["fx"][i]), "fl_y": float(c["fy"][i]), "cx": float(c["cx"][i]),
         "cy": float(c["cy"][i]), "w": int(c["width"][i]), "h": int(c["height"][i])}
        for i in range(len(c2w))
    ]
    return {
        "camera_model": "OPENCV",  # zero distortion: the intrinsics are already pinhole
        "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0,
        "frames": frames,
        "train_filenames": [names[i] for i in scene_json.get("train_idx", [])],
        "val_filenames": [names[i] for i in scene_json.get("test_idx", [])],
        "test_filenames": [names[i] for i in scene_json.get("test_idx", [])],
        "splatlab": {"scene": scene_json.get("name"), "root": scene_json.get("root"),
                     "frame": "original", "axes": "opengl"},
    }


def export(target, opts: Options) -> str:
    check_output(opts.output, SUFFIXES)
    if opts.crop_min is not None or opts.crop_max is not None:
        raise UserError("--crop-min/--crop-max do not apply to --format cameras")
    if target.scene_json is None:
        raise UserError("has no cameras (a bare PLY or a checkpoint outside a run folder)", target.path)
    data = transforms_json(target.scene_json, target.normalization)
    write_bytes(opts.output, (json.dumps(data, indent=2) + "\n").encode())
    return (f"wrote {len(data['frames'])} cameras ({len(data['train_filenames'])} train, "
            f"{len(data['test_filenames'])} test) to {opts.output}")
