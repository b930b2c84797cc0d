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
    min_alpha: float = 0.5
    """NeRF: keep rendered pixels at least this opaque."""
    pixel_stride: int = 2
    """NeRF: unproject every this-many-th pixel along each image axis."""


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


def depth_points(model, cameras, *, min_alpha: float = 0.5, stride: int = 2):
    """Points unprojected from each camera's rendered expected depth (camera z), where the
    render is at least `min_alpha` opaque, with the rendered colour. Returns (xyz P 3 in
    the cameras' frame, rgb P 3 uint8). `model` is a renderer (the contract's `render`)."""
    import torch

    xyz, rgb = [], []
    for i in range(len(cameras)):
        cam = cameras[i]
        with torch.no_grad():
            out = model.render(cam, with_depth=True)
        h, w = out.rgb.shape[1:3]
        v, u = torch.meshgrid(torch.arange(0, h, stride), torch.arange(0, w, stride), indexing="ij")
        z = out.depth[0, :, :, 0].float().cpu()[v, u]
        keep = (out.alpha[0, :, :, 0].float().cpu()[v, u] >= min_alpha) & torch.isfinite(z) & (z > 0)
        col = out.rgb[0].float().cpu()[v[keep], u[keep]]
        px, py, z = u[keep].double() + 0.5, v[keep].double() + 0.5, z[keep].double()
        p_cam = torch.stack([(px - float(cam.cx[0])) / float(cam.fx[0]) * z,
                             (py - float(cam.cy[0])) / float(cam.fy[0]) * z, z], -1)
        c2w = cam.camtoworlds[0].double().cpu()
        xyz.append((p_cam @ c2w[:3, :3].T + c2w[:3, 3]).numpy())
        rgb.append((col.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy())
    return np.concatenate(xyz), np.concatenate(rgb)


def _export_depth_points(target, opts: Options) -> str:
    if target.scene_json is None:
        raise UserError("points from a NeRF need the run's cameras; this checkpoint is outside a run folder",
                        target.path)
    if not 0.0 <= opts.min_alpha < 1.0 or opts.pixel_stride < 1:
        raise UserError(f"--min-alpha must be in [0, 1) and --pixel-stride at least 1 "
                        f"(got {opts.min_alpha}, {opts.pixel_stride})")
    cams = target.cameras()
    if target.scene_json.get("train_idx"):
        cams = cams[list(target.scene_json["train_idx"])]
    xyz, rgb = depth_points(target.model, cams, min_alpha=opts.min_alpha, stride=opts.pixel_stride)
    xyz = target.normalization.invert_points(xyz)
    crop = crop_box(opts, target)
    if crop is not None:
        keep = np.all((xyz >= np.asarray(crop.lo)) & (xyz <= np.asarray(crop.hi)), axis=-1)
        xyz, rgb = xyz[keep], rgb[keep]
    if len(xyz) == 0:
        raise UserError(f"no rendered pixel is at least {opts.min_alpha} opaque (is the model trained?)")
    write_bytes(opts.output, point_cloud_bytes(xyz.astype(np.float32), rgb))
    return f"wrote {len(xyz)} points from rendered depth of {len(cams)} views to {opts.output}"


def export(target, opts: Options) -> str:
    import torch

    if hasattr(target.model, "density_at"):  # a NeRF: no primitives, points come from depth
        check_output(opts.output, SUFFIXES)
        return _export_depth_points(target, opts)

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
