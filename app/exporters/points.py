"""`--format points`: a coloured point cloud of the Gaussian centres (x y z red green blue)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UserError
from .common import ExportArgs, check_output, crop_box, original_splats, write_bytes

HELP = "coloured point cloud (PLY) of the Gaussian centres"
SUFFIXES = (".ply",)


@dataclass
class Options(ExportArgs):
    """Binary PLY point cloud of Gaussian centres, RGB from the base colour (sh0), in
    original coordinates; faint and oversized Gaussians filtered out."""

    min_opacity: float = 0.1
    """Keep Gaussians at least this opaque (0..1)."""
    max_size_percentile: float = 99.0
    """Drop Gaussians whose largest axis is above this percentile of all (100 keeps all)."""


def point_cloud_bytes(xyz: np.ndarray, rgb: np.ndarray) -> bytes:
    """Binary little-endian PLY (through plyfile): float x y z, uchar red green blue."""
    from splatlab.renderers.splat.io import ply_table_bytes

    rows = np.empty(len(xyz), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                     ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    for i, k in enumerate("xyz"):
        rows[k] = xyz[:, i]
    for i, k in enumerate(("red", "green", "blue")):
        rows[k] = rgb[:, i]
    return ply_table_bytes(rows)


def export(target, opts: Options) -> str:
    import torch

    from splatlab.renderers.splat.model import sh_to_rgb

    check_output(opts.output, SUFFIXES)
    if not 0.0 <= opts.min_opacity <= 1.0:
        raise UserError(f"--min-opacity must be in 0..1, got {opts.min_opacity}")
    if not 0.0 < opts.max_size_percentile <= 100.0:
        raise UserError(f"--max-size-percentile must be in (0, 100], got {opts.max_size_percentile}")
    s = original_splats(target, crop_box(opts, target), where=opts.output)
    size = s["scales"].max(dim=-1).values  # log scale: monotone, the percentile is the same
    keep = torch.sigmoid(s["opacities"]) >= opts.min_opacity
    if opts.max_size_percentile < 100.0:
        keep &= size <= torch.quantile(size.double(), opts.max_size_percentile / 100.0).float()
    if not bool(keep.any()):
        raise UserError(f"no Gaussians pass --min-opacity {opts.min_opacity} and "
                        f"--max-size-percentile {opts.max_size_percentile}")
    xyz = s["means"][keep].numpy()
    rgb = (sh_to_rgb(s["sh0"][keep].reshape(-1, 3)).clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    write_bytes(opts.output, point_cloud_bytes(xyz, rgb))
    return f"wrote {len(xyz)} of {len(keep)} Gaussian centres to {opts.output}"
